"""Admin: swap in a (new) artifact without dropping requests, and the server's internals (paths, pid)."""


import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any, Callable

from fastapi import APIRouter, Body, Depends, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ..deps import BODY, GUARDED, CtxDep, Principal, errors, ok, require

log = logging.getLogger("shopmind.serving")
Admin = Annotated[Principal, Depends(require("admin"))]


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    artifact: str | None = Field(None, min_length=1, max_length=4096, description=(
        "Artifact folder beside the served one (a name or a path); default: the served one, re-read."))


def router(swap_in: Callable[[Any], None]) -> APIRouter:
    """swap_in(service) installs a freshly loaded service (the app owns the swap and its control record)."""
    r = APIRouter(tags=["admin"])

    @r.post("/admin/reload", responses=errors(404, 409, *BODY, *GUARDED))
    def reload(ctx: CtxDep, who: Admin, body: Annotated[ReloadIn | None, Body()] = None) -> Response:
        """Load an artifact and swap it in; requests in flight finish on the old one. With several worker
        processes, the others follow through a control record in the shared event log."""
        holder = ctx.holder
        if holder.loader is None:
            raise HTTPException(409, "this server was started without a reloadable artifact")
        path = body.artifact if body else None
        if path is not None:
            root = Path(holder.service.artifact.folder).resolve().parent
            target = (root / path).resolve()
            if target.parent != root:  # no loading from anywhere on the disk, even for an admin
                raise HTTPException(400, f"the artifact must be a folder beside the served one (in {root})")
            try:
                found = (target / "manifest.json").is_file()
            except OSError:  # e.g. a name longer than the file system allows
                found = False
            if not found:
                raise HTTPException(404, f"no artifact named {path[:100]!r} beside the served one")
            path = str(target)
        if not ctx.reload_lock.acquire(blocking=False):
            raise HTTPException(409, "a reload is already running")
        t0 = time.perf_counter()
        try:
            try:
                fresh = holder.loader(path)
            except Exception as e:  # a bad artifact must not take the running service down
                ctx.metrics.reloads.labels("failed").inc()
                log.exception("reload failed")
                raise HTTPException(400, f"reload failed: {str(e)[:300]}") from None
            swap_in(fresh)
            holder.service.log.control({"kind": "reload", "artifact": path, "at": time.time()})
        finally:
            ctx.reload_lock.release()
        return ok({"reloaded": True, "artifact": str(fresh.artifact.folder),
                   "seconds": round(time.perf_counter() - t0, 2)})

    @r.get("/admin/status", responses=errors(*GUARDED))
    async def status(ctx: CtxDep, who: Admin) -> Response:
        """Everything /health keeps to itself: artifact path, process id, state folder, keys by name."""
        s = ctx.holder.service
        return ok({**s.stats(), "mode": ctx.cfg.mode, "state_dir": str(s.state_dir), "pid": os.getpid(),
                   "events_applied": sum(s.type_counts.values()),  # this worker's, to compare with the log
                   "reloads": ctx.holder.reloads, "keys": ctx.keys.names()})

    return r
