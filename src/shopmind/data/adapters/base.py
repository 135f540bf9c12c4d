"""The adapter interface: a source format turned into a stream of Rows (items/events/...) and Rejects."""

from __future__ import annotations

import html
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Iterator

from ...errors import ShopmindError
from ..readers import Meter, Record


class FormatError(ValueError):
    """The path does not hold files of the expected format (raised before anything is written)."""


class MissingColumnError(FormatError, ShopmindError):
    """A file lacks a column every record needs (raised by `Adapter.check`, before anything is written)."""


class EmptyInputError(FormatError, ShopmindError):
    """An ingest read no record at all (empty files, only a header or blank lines) and --allow-empty is off."""


class Adapter(ABC):
    """Reads one dataset folder (or file) of a given format.

    Subclasses declare `format` and a one-line `description`, list the files they will read in
    `files()` (validated up front, so a wrong path fails before any write) and stream records.
    """

    format: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, path: str | Path, **options: Any) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FormatError(f"{self.path}: no such file or folder")
        self.options = options

    @abstractmethod
    def files(self) -> list[Path]:
        """The files this adapter reads, in order."""

    @abstractmethod
    def records(self, meter: Meter | None = None) -> Iterator[Record]:
        """Rows and rejects, streamed."""

    def check(self) -> None:
        """Fail (FormatError) on problems that concern whole files, e.g. a missing column; called by the
        ingest before its run starts, so nothing is written. The default checks nothing."""
        return None

    @classmethod
    def detect(cls, path: Path) -> bool:
        """Whether `path` looks like this format (used when no --format is given)."""
        return False

    def _glob(self, *patterns: str) -> list[Path]:
        folder = self.path if self.path.is_dir() else self.path.parent
        found: list[Path] = []
        for pat in patterns:
            found.extend(sorted(p for p in folder.glob(pat) if p.is_file() and p not in found))
        return found


_TAG = re.compile(r"<[^>]*(?:>|$)")
_TAG_TAIL = re.compile(r"^[^<>]*?\"\s*/>")
_WS = re.compile(r"\s+")


def clean_html(text: str | None) -> str | None:
    """Plain text from a field that may hold HTML, entities or cut-off tags (Amazon metadata).

    Handles complete tags, a tag cut off at the end ('<span class="a-size-medium"') and the tail of a
    tag cut off at the start ('Magazines" />'). Returns None when nothing readable is left.
    """
    if text is None:
        return None
    text = _TAG.sub(" ", text)
    text = _TAG_TAIL.sub(" ", text)
    text = html.unescape(text)
    text = _WS.sub(" ", text).strip()
    if not text or not any(c.isalnum() for c in text):
        return None
    # CSS or script text that leaked into a field is not product text.
    if text.count("{") >= 2 and text.count("}") >= 2 and ":" in text:
        return None
    return text
