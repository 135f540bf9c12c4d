"""Operations: /health (public, nothing internal), /metrics (Prometheus), /stats (live traffic) and
/stats/online (the online evaluation, read_private)."""


from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from ... import __version__
from ..deps import GUARDED, CtxDep, Principal, Reader, errors, ok, pid_free_stats, require
from ..online_stats import MAX_K

PrivateReader = Annotated[Principal, Depends(require("read_private"))]


def router(exposition: Any) -> APIRouter:
    r = APIRouter(tags=["ops"])

    @r.get("/health", responses=errors(500))
    async def health(ctx: CtxDep) -> Response:
        """Up or not, and in which mode; no paths, process ids or shopper data (an admin gets those from
        /admin/status)."""
        s = ctx.holder.service
        return ok({"status": "ok", "mode": ctx.cfg.mode, "version": __version__, "dataset": s.artifact.dataset,
                   "items": s.n_items, "artifact_created": s.artifact.manifest.get("created")})

    @r.get("/metrics", response_class=Response, responses={**errors(*GUARDED),
                                                            200: {"content": {"text/plain": {}}}})
    async def metrics(ctx: CtxDep, who: Reader) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        s = ctx.holder.service
        ctx.metrics.refresh(s, ctx.trainer.read(s.state_dir, s.log))
        return Response(generate_latest(exposition), media_type=CONTENT_TYPE_LATEST)

    @r.get("/stats", responses=errors(*GUARDED))
    async def stats(ctx: CtxDep, who: Reader) -> Response:
        """Live request rate and latency over the last minute, and the served artifact's evaluation."""
        s = ctx.holder.service
        return ok({**pid_free_stats(s), "mode": ctx.cfg.mode, "live": ctx.metrics.window.summary(),
                   "evaluation": s.artifact.manifest.get("summary", {})})

    @r.get("/stats/online", responses=errors(*GUARDED))
    async def online(ctx: CtxDep, who: PrivateReader,
                     since: Annotated[float | None, Query(ge=0, le=1e11, description=(
                         "Unix seconds: only recommendation lists served since then (bucket resolution)."))] = None,
                     k: Annotated[int, Query(ge=1, le=MAX_K, description="The k of hit rate@k.")] = 10) -> Response:
        """Online evaluation from the logged events: CTR, hit rate@k, conversion and revenue per impression
        with 95 % intervals, overall and per source, artifact version, arm and exploration slot, and over
        time (docs/online.md). Counts only; the same on every worker. Needs scope read_private."""
        return ok(await ctx.on_cpu(ctx.holder.service.online.report, since, k))

    return r
