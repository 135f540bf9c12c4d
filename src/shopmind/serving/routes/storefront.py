"""The storefront page, the demo's open shopper sessions, the shopper list and the dashboard."""


from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import Response

from ...config import ServingSettings
from .. import sessions, storefront
from ..deps import GUARDED, CtxDep, Reader, errors, ok
from .events import TEXT

STATIC = Path(__file__).resolve().parent.parent / "static"


def router(cfg: ServingSettings) -> APIRouter:
    r = APIRouter(tags=["storefront"])

    @r.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response((STATIC / "index.html").read_bytes(), media_type="text/html; charset=utf-8")

    @r.get("/storefront/users", responses=errors(*GUARDED))
    async def users(ctx: CtxDep, who: Reader) -> Response:
        """Real shoppers to browse as (longest histories first). Their ids and event counts are private: open
        in demo mode, else for a key with scope read_private."""
        if ctx.cfg.mode != "demo" and "read_private" not in who.scopes:
            raise HTTPException(403, "the shopper list needs scope 'read_private'")
        return ok({"users": await ctx.on_cpu(storefront.shoppers, ctx.holder.service)})

    if cfg.mode == "demo":
        @r.get("/storefront/session", responses=errors(*GUARDED))
        async def session(ctx: CtxDep, who: Reader,
                          user: Annotated[str, Query(min_length=1, max_length=256, pattern=TEXT)]) -> Response:
            """Demo mode only: a session for any shopper, so the demo storefront can pick one. In production
            the shop's backend mints sessions after its own login (POST /sessions)."""
            token, s = sessions.mint(ctx.secret, user, ctx.cfg.session_ttl_s)
            return ok({"user_id": user, "token": token, "expires_in": ctx.cfg.session_ttl_s})

    @r.get("/storefront/dashboard", responses=errors(*GUARDED))
    async def dashboard(ctx: CtxDep, who: Reader) -> Response:
        """The dashboard's data. Its online evaluation (as /stats/online) is there in demo mode or for a key
        with scope read_private, else null."""
        s = ctx.holder.service
        online = ctx.cfg.mode == "demo" or "read_private" in who.scopes
        return ok(await ctx.on_cpu(storefront.dashboard, s, ctx.folders, online, ctx.trainer.read(s.state_dir, s.log)))

    @r.get("/storefront/plots/{source}/{name}", responses={**errors(404, *GUARDED), 200: {"content": {"image/png": {}}}})
    async def plot(ctx: CtxDep, who: Reader, source: Literal["local", "bench"],
                   name: Annotated[str, PathParam(max_length=100, pattern=storefront.PLOT_NAME.pattern)]) -> Response:
        path = storefront.plot_path(ctx.folders, source, name)
        if path is None:
            raise HTTPException(404, "no such plot")
        return Response(path.read_bytes(), media_type="image/png")

    return r
