"""GET /items/{item_id} (the item with its knowledge card) and /items/{item_id}/similar."""


from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from ..deps import GUARDED, CtxDep, Id, Reader, errors, ok


def router() -> APIRouter:
    r = APIRouter(tags=["items"])

    @r.get("/items/{item_id}", responses=errors(404, *GUARDED))
    async def item(ctx: CtxDep, who: Reader, item_id: Id) -> Response:
        return ok(await ctx.on_cpu(ctx.holder.service.item, item_id))

    @r.get("/items/{item_id}/similar", responses=errors(400, 404, *GUARDED))
    async def similar(ctx: CtxDep, who: Reader, item_id: Id, k: Annotated[int, Query(ge=1, le=100)] = 10,
                      method: Literal["pipeline", "covisitation", "text"] = "pipeline") -> Response:
        return ok(await ctx.on_cpu(ctx.holder.service.similar, item_id, k, method))

    return r
