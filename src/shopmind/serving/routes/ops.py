"""Operations: /health (public, nothing internal), /metrics (Prometheus) and /stats (live traffic)."""


from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from ... import __version__
from ..deps import GUARDED, CtxDep, Reader, errors, ok, pid_free_stats


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

        ctx.metrics.refresh(ctx.holder.service)
        return Response(generate_latest(exposition), media_type=CONTENT_TYPE_LATEST)

    @r.get("/stats", responses=errors(*GUARDED))
    async def stats(ctx: CtxDep, who: Reader) -> Response:
        """Live request rate and latency over the last minute, and the served artifact's evaluation."""
        s = ctx.holder.service
        return ok({**pid_free_stats(s), "mode": ctx.cfg.mode, "live": ctx.metrics.window.summary(),
                   "evaluation": s.artifact.manifest.get("summary", {})})

    return r
