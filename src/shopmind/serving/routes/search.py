"""GET /search: lexical + dense retrieval with filters, facets, paging; personalised for a shopper on request."""


from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import StringConstraints

from ...config import ServingSettings
from ...search.catalog import Filters
from ..deps import GUARDED, CtxDep, Reader, errors, ok


ATTR = r"^[^:]*[^: \t\n\r\f\v][^:]*:.*[^ \t\n\r\f\v].*$"  # NAME:VALUE, neither blank (ASCII whitespace)
BLANK = " \t\n\r\f\v"
PriceMin = Annotated[float | None, Query(ge=0, le=1e9)]
PriceMax = Annotated[float | None, Query(ge=0, le=1e9, description="Below price_min: nothing matches.")]


def filters(category: str | None, brand: str | None, price_min: float | None, price_max: float | None,
            attr: list[str] | None) -> Filters | None:
    """Catalog filters from query parameters (422 for a malformed attribute or an empty price range)."""
    attrs = {}
    for a in attr or []:
        k, sep, v = a.partition(":")
        if not sep or not k.strip(BLANK) or not v.strip(BLANK):
            raise HTTPException(422, f"attr filter {a[:80]!r}: expected NAME:VALUE")
        attrs[k.strip(BLANK)] = v.strip(BLANK)
    f = Filters(category, brand, price_min, price_max, attrs)  # price_min above price_max: matches nothing
    return None if f.is_empty() else f


def router(cfg: ServingSettings) -> APIRouter:
    r = APIRouter(tags=["search"])

    @r.get("/search", responses=errors(*GUARDED))
    async def search(ctx: CtxDep, who: Reader,
                     q: Annotated[str, Query(min_length=1, max_length=200, description="The query.")],
                     category: Annotated[str | None, Query(max_length=300)] = None,
                     brand: Annotated[str | None, Query(max_length=200)] = None,
                     price_min: PriceMin = None,
                     price_max: PriceMax = None,
                     attr: Annotated[list[Annotated[str, StringConstraints(max_length=300, pattern=ATTR)]] | None,
                                     Query(max_length=10, description="NAME:VALUE filters.")] = None,
                     page: Annotated[int, Query(ge=1, le=cfg.max_page)] = 1,
                     size: Annotated[int, Query(ge=1, le=100)] = 10,
                     user: Annotated[str | None, Query(min_length=1, max_length=256, description=(
                         "Personalise for this shopper: needs their own session or a key with read_private."))] = None,
                     mode: Annotated[Literal["bm25", "dense", "rrf", "hybrid", "ltr"] | None, Query(description=(
                         "Default: ltr when the artifact has a learned search ranker, else hybrid; ltr without "
                         "one falls back to hybrid. The response's mode says which ran."))] = None) -> Response:
        if user is not None and not who.private_for(user):
            raise HTTPException(403, "personalised search needs the shopper's own session or scope 'read_private'")
        f = filters(category, brand, price_min, price_max, attr)
        engine = ctx.holder.service.search_engine
        if mode == "ltr" and engine is not None and engine.ranker is None:
            mode = None  # no learned search ranker in this artifact: the best it has (the response names it)
        return ok(await ctx.on_cpu(ctx.holder.service.search, q, f, page, size, user, mode))

    return r
