"""POST /events: one event or a batch, acknowledged only once durable (fsynced), idempotent by event_id.
A key with scope write may post for any shopper; a shopper session only its own interactions."""


from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...config import ServingSettings
from ...data.schema import EventType
from ..deps import BODY, GUARDED, CtxDep, Who, errors, ok
from ..online import MAX_TOKEN_CHARS
from ..ratelimit import Limited

SESSION_TYPES = {EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.IMPRESSION,
                 EventType.SEARCH}
SESSION_BATCH = 50  # events per request from a shopper session
# Non-empty, no leading or trailing ASCII whitespace (ids must not differ by a space); ASCII classes mean the
# same in every regex engine (pydantic's, Python's, a fuzzer's), where Unicode whitespace does not.
TEXT = r"^[^ \t\n\r\f\v](?:.*[^ \t\n\r\f\v])?$"
# The rule "item_id unless a search, query for a search" as JSON Schema, so clients and fuzzers see it.
_REQUIRED_IF = {"if": {"properties": {"type": {"const": "search"}}, "required": ["type"]},
                "then": {"required": ["query"], "properties": {"query": {"type": "string"}}},
                "else": {"required": ["item_id"], "properties": {"item_id": {"type": "string"}}}}


class EventIn(BaseModel):
    """One event as clients post it. Every type but `search` needs an item_id; `search` needs a query."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": [_REQUIRED_IF]})
    event_id: str | None = Field(None, min_length=1, max_length=128, pattern=TEXT,
                                 description="Client id for idempotent retries (recommended).")
    user_id: str = Field(min_length=1, max_length=256, pattern=TEXT)
    item_id: str | None = Field(None, min_length=1, max_length=256, pattern=TEXT,
                                description="Required unless type is search.")
    type: EventType
    value: float | None = Field(None, ge=-1e9, le=1e9, strict=True)  # strict: true/false are not numbers
    timestamp: float | None = Field(None, ge=0, le=1e11, strict=True, description="Unix seconds; default: now.")
    session_id: str | None = Field(None, max_length=256)
    query: str | None = Field(None, min_length=1, max_length=500, pattern=TEXT, description="Required for search.")
    rec_id: str | None = Field(None, max_length=MAX_TOKEN_CHARS, description=(
        "The recommendation this event responds to (its rec_id, a signed token). One that is not valid is "
        "accepted all the same, just not attributed."))

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not np.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _needs(self) -> "EventIn":
        if self.type is EventType.SEARCH and self.query is None:
            raise ValueError("a search event needs a query")
        if self.type is not EventType.SEARCH and self.item_id is None:
            raise ValueError(f"a {self.type.value} event needs an item_id")
        return self


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1)


class EventsOut(BaseModel):
    accepted: int = Field(description="New events, durable on disk.")
    duplicates: int = Field(description="Event ids already logged (or forgotten); not stored again.")
    unknown_items: int = Field(description="Events whose item is not in the served catalog (kept all the same).")
    durable: bool


def router(cfg: ServingSettings) -> APIRouter:
    r = APIRouter(tags=["events"])

    @r.post("/events", response_model=EventsOut, responses=errors(403, 503, *BODY, *GUARDED), description=(
        f"One event or {{\"events\": [...]}}, at most {cfg.max_batch} per request; a key with scope write may post "
        f"for any shopper, a shopper session only its own shopper's interactions, at most {SESSION_BATCH} at a time. "
        "Acknowledged only once durable (fsynced); idempotent by event_id."))
    async def events(ctx: CtxDep, who: Who, body: Annotated[EventIn | EventBatch, Body()]) -> Response:
        batch = body.events if isinstance(body, EventBatch) else [body]
        if who.kind == "session":
            if len(batch) > SESSION_BATCH:
                raise HTTPException(413, f"at most {SESSION_BATCH} events per request from a shopper session")
            for e in batch:
                if e.user_id != who.user or e.type not in SESSION_TYPES:
                    raise HTTPException(403, "a shopper session may post only its own shopper's interactions")
        elif "write" not in who.scopes:
            if who.kind == "anonymous":
                raise HTTPException(401, "a valid API key with scope 'write' (or a shopper session) is required",
                                    headers={"WWW-Authenticate": "Bearer"})
            raise HTTPException(403, "this key lacks scope 'write'")
        if len(batch) > cfg.max_batch:
            raise HTTPException(413, f"at most {cfg.max_batch} events per request")
        try:
            ctx.limits["session_events" if who.kind == "session" else "key_events"].take(who.client, len(batch))
        except Limited as e:
            ctx.metrics.limited.labels(f"{who.kind}_events").inc()
            raise HTTPException(429, str(e), headers={"Retry-After": str(e.retry_after)}) from None
        records = [{k: v for k, v in e.model_dump(mode="json").items() if v is not None} for e in batch]
        holder = ctx.holder

        def write() -> tuple[Any, list[bool]]:
            with holder.guard:
                service = holder.service
                return service, service.ingest(records)

        service, fresh = await ctx.on_io(write)
        new = sum(fresh)
        ctx.metrics.events_total.labels("accepted").inc(new)
        ctx.metrics.events_total.labels("duplicate").inc(len(fresh) - new)
        unknown = sum(1 for x in records if x.get("item_id") and x["item_id"] not in service.catalog.index)
        return ok({"accepted": new, "duplicates": len(fresh) - new, "unknown_items": unknown, "durable": True})

    return r
