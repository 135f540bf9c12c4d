"""The data model every layer shares: Item, Event, Judgment, User (typed, validated, stable).

Field names here are the column names in the store and the field names in JSON output; later layers
depend on them, so add fields, never rename them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_ID = 256
MAX_TEXT = 100_000

Id = Field(min_length=1, max_length=MAX_ID)


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    RATING = "rating"
    REVIEW = "review"
    SEARCH = "search"
    IMPRESSION = "impression"


Split = Literal["train", "valid", "test"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, coerce_numbers_to_str=True)


def _blank_to_none(v: Any) -> Any:
    return None if isinstance(v, str) and not v.strip() else v


def _finite_number(v: float | None) -> float | None:
    if v is not None and not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


class Item(_Model):
    """A catalog entry. `categories` is a path from root to leaf; `related` holds links such as
    Amazon's also_buy / also_view (relation name -> item ids); `text_fields` holds any other free text
    (features, release date, ...) that knowledge mining may use."""

    item_id: str = Id
    title: str | None = Field(None, max_length=MAX_TEXT)
    description: str | None = Field(None, max_length=MAX_TEXT)
    brand: str | None = Field(None, max_length=1_000)
    categories: list[str] = Field(default_factory=list, max_length=64)
    price: float | None = Field(None, ge=0)
    attributes: dict[str, str] = Field(default_factory=dict)
    image_url: str | None = Field(None, max_length=4_000)
    text_fields: dict[str, str] = Field(default_factory=dict)
    related: dict[str, list[str]] = Field(default_factory=dict)

    _blank = field_validator("title", "description", "brand", "image_url", mode="before")(_blank_to_none)

    _finite = field_validator("price")(_finite_number)

    @field_validator("categories")
    @classmethod
    def _no_empty_categories(cls, v: list[str]) -> list[str]:
        return [c.strip() for c in v if c and c.strip()]


class Event(_Model):
    """One user action. `value` is the rating or quantity; `seq` orders a user's events when the
    source gives an order but no time (sequence datasets); `split` is a split given by the source."""

    event_id: str | None = Field(None, min_length=1, max_length=MAX_ID)
    user_id: str = Id
    item_id: str | None = Field(None, min_length=1, max_length=MAX_ID)
    type: EventType
    value: float | None = None
    timestamp: datetime | None = None
    seq: int | None = Field(None, ge=0)
    session_id: str | None = Field(None, max_length=MAX_ID)
    query: str | None = Field(None, max_length=2_000)
    review_text: str | None = Field(None, max_length=MAX_TEXT)
    summary: str | None = Field(None, max_length=10_000)
    split: Split | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    _blank = field_validator("event_id", "item_id", "session_id", "query", "review_text", "summary",
                             mode="before")(_blank_to_none)

    _finite = field_validator("value")(_finite_number)

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        # Stored as naive UTC; aware inputs are converted.
        if v is not None and v.tzinfo is not None:
            v = v.astimezone(timezone.utc).replace(tzinfo=None)
        return v

    @model_validator(mode="after")
    def _needs_item_or_query(self) -> "Event":
        if self.type is EventType.SEARCH:
            if not self.query:
                raise ValueError("a search event needs a query")
        elif self.item_id is None:
            raise ValueError(f"a {self.type.value} event needs an item_id")
        return self


class Judgment(_Model):
    """A graded relevance label for (query, item), for search evaluation."""

    judgment_id: str | None = Field(None, min_length=1, max_length=MAX_ID)
    query: str = Field(min_length=1, max_length=2_000)
    item_id: str = Id
    grade: float

    _finite = field_validator("grade")(_finite_number)


class User(_Model):
    """A user, with optional attributes (age band, country, ...)."""

    user_id: str = Id
    attributes: dict[str, str] = Field(default_factory=dict)


RECORD_MODELS: dict[str, type[_Model]] = {"item": Item, "event": Event, "judgment": Judgment, "user": User}


def stable_hash(*parts: object, size: int = 12) -> str:
    """A deterministic hex digest of the parts (used for derived ids and content hashes)."""
    # One update over the joined reprs: the per-part update loop was a third of ingest time.
    payload = "\x1f".join(p.decode("utf-8", "backslashreplace") if isinstance(p, bytes) else repr(p) for p in parts)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=size).hexdigest()


def content_hash(record: BaseModel, exclude: set[str] | None = None) -> str:
    payload = json.dumps(record.model_dump(mode="json", exclude=exclude), sort_keys=True, ensure_ascii=False)
    return stable_hash(payload.encode("utf-8"), size=16)


def hash_user_id(user_id: str, salt: str) -> str:
    """Keyed, irreversible pseudonym of a user id (HMAC-SHA256, 128 bits)."""
    return hmac.new(salt.encode("utf-8"), user_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
