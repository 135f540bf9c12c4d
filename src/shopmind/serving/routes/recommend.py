"""GET /recommend/{user_id}: the ranked, diversified recommendations; what reveals the shopper's history
(explanations, known_user, history and event counts) only for their own session or a read_private key."""


from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import StringConstraints

from ...config import ServingSettings
from ..deps import GUARDED, CtxDep, Id, Reader, errors, ok
from .search import PriceMax, PriceMin, filters

PRIVATE = ("known_user", "history_size", "events_seen")


def public_part(rec: dict[str, Any]) -> dict[str, Any]:
    """The recommendation without what reveals the shopper's history."""
    out = {k: v for k, v in rec.items() if k not in PRIVATE}
    out["items"] = [{k: v for k, v in i.items() if k != "explanation"} for i in rec["items"]]
    out["private"] = False
    return out


def router(cfg: ServingSettings) -> APIRouter:
    r = APIRouter(tags=["recommend"])

    @r.get("/recommend/{user_id}", responses=errors(404, *GUARDED))
    async def recommend(ctx: CtxDep, who: Reader, user_id: Id,
                        k: Annotated[int, Query(ge=1, le=cfg.max_k)] = 10,
                        item: Annotated[str | None, Query(min_length=1, max_length=256, description="Current item.")] = None,
                        cart: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] | None,
                                        Query(max_length=50, description="Items in the cart.")] = None,
                        category: Annotated[str | None, Query(max_length=300)] = None,
                        brand: Annotated[str | None, Query(max_length=200)] = None,
                        price_min: PriceMin = None,
                        price_max: PriceMax = None,
                        exclude_seen: bool = True, diversity: Annotated[float | None, Query(ge=0, le=1)] = None,
                        explore: bool | None = None, kind: Annotated[str | None, Query(max_length=50)] = None,
                        ads: Annotated[int, Query(ge=0, le=5)] = 0,
                        query: Annotated[str | None, Query(min_length=1, max_length=200, description=(
                            "Current search; its results join the candidates."))] = None) -> Response:
        """Explanations, known_user, history_size and events_seen are returned only to the shopper's own
        session or a key with scope read_private; others get `private: false` and the items alone."""
        if who.kind == "session" and who.user != user_id:
            raise HTTPException(403, "a shopper session may read its own recommendations only")
        f = filters(category, brand, price_min, price_max, None)
        rec = await ctx.on_cpu(ctx.holder.for_user(user_id).recommend, user_id, k, f, item, cart or [], exclude_seen, diversity,
                               explore, kind, ads, query)
        return ok({**rec, "private": True} if who.private_for(user_id) else public_part(rec))

    return r
