"""MovieLens 100K (GroupLens): u.data ratings, u.item movies (latin-1, genre flags), u.user users."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..readers import Meter, Record, Reject, Row, clip, iter_delimited
from .base import Adapter, FormatError

_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
           "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


class MovieLensAdapter(Adapter):
    format = "movielens"
    description = "MovieLens 100K: u.data (user item rating time), u.item, u.user"

    def __init__(self, path: str | Path, **options: object) -> None:
        super().__init__(path, **options)
        folder = self.path if self.path.is_dir() else self.path.parent
        self.data = self.path if self.path.is_file() else folder / "u.data"
        if not self.data.is_file():
            raise FormatError(f"{self.path}: no u.data ratings file (MovieLens 100K format)")
        self.item = folder / "u.item"
        self.user = folder / "u.user"
        self.genre = folder / "u.genre"

    @classmethod
    def detect(cls, path: Path) -> bool:
        folder = path if path.is_dir() else path.parent
        return (folder / "u.data").is_file()

    def files(self) -> list[Path]:
        return [p for p in (self.item, self.user, self.data) if p.is_file()]

    def _genre_names(self) -> list[str]:
        if not self.genre.is_file():
            return _GENRES
        pairs = [line.split("|") for line in self.genre.read_text("latin-1").splitlines() if "|" in line]
        names = [name for name, _ in sorted(pairs, key=lambda p: int(p[1]) if p[1].isdigit() else 0)]
        return names or _GENRES

    def records(self, meter: Meter | None = None) -> Iterator[Record]:
        if self.item.is_file():
            genres = self._genre_names()
            for item in iter_delimited(self.item, "|", "latin-1", meter, min_fields=5):
                if isinstance(item, Reject):
                    yield item
                    continue
                n, p = item
                flags = p[5:]
                if len(flags) != len(genres) or any(f not in ("0", "1") for f in flags):
                    yield Reject(str(self.item), n, f"expected {len(genres)} genre flags (0/1) after the url",
                                 clip("|".join(p)))
                    continue
                names = [g for g, f in zip(genres, flags) if f == "1"]
                attrs = {k: v for k, v in (("genres", "|".join(names)), ("release_date", p[2]),
                                           ("video_release_date", p[3]), ("imdb_url", p[4])) if v}
                yield Row("item", str(self.item), n, {"item_id": p[0], "title": p[1], "attributes": attrs})
        if self.user.is_file():
            for item in iter_delimited(self.user, "|", "latin-1", meter, min_fields=5):
                if isinstance(item, Reject):
                    yield item
                    continue
                n, p = item
                yield Row("user", str(self.user), n, {"user_id": p[0], "attributes": dict(
                    zip(("age", "gender", "occupation", "zip_code"), p[1:5]))})
        for item in iter_delimited(self.data, "\t", "latin-1", meter, min_fields=4):
            if isinstance(item, Reject):
                yield item
                continue
            n, p = item
            if len(p) != 4:
                yield Reject(str(self.data), n, f"expected 4 tab-separated fields, got {len(p)}", clip("\t".join(p)))
                continue
            yield Row("event", str(self.data), n, {"user_id": p[0], "item_id": p[1], "type": "rating",
                                                   "value": p[2], "timestamp": p[3]})
