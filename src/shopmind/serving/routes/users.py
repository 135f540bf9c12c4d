"""Shoppers: minting sessions (the shop's backend, scope session) and forgetting a shopper (scope admin)."""


import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ...config import ServingSettings
from .. import sessions
from ..deps import BODY, GUARDED, CtxDep, Id, Principal, errors, ok, require
from .events import TEXT

log = logging.getLogger("shopmind.serving")


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=256, pattern=TEXT, description="The shopper, as the shop knows them.")
    ttl_s: int | None = Field(None, ge=60, description="Lifetime in seconds (default and most: serving.session_ttl_s).")


class SessionOut(BaseModel):
    user_id: str
    token: str = Field(description="Send it as the X-Session header.")
    expires_at: int = Field(description="Unix seconds.")
    expires_in: int


def router(cfg: ServingSettings) -> APIRouter:
    r = APIRouter(tags=["users"])

    @r.post("/sessions", response_model=SessionOut, responses=errors(*BODY, *GUARDED))
    async def mint(ctx: CtxDep, body: SessionIn, who: Annotated[Principal, Depends(require("session"))]) -> Response:
        """A shopper session for the shop's backend to hand to its page after its own login: signed, expiring,
        bound to one user id (reads and writes of that shopper only). Revoking the minting key ends it."""
        ttl = min(body.ttl_s or cfg.session_ttl_s, cfg.session_ttl_s)
        token, s = sessions.mint(ctx.secret, body.user_id, ttl, key=who.name)
        return ok({"user_id": s.user, "token": token, "expires_at": s.expires, "expires_in": ttl})

    @r.delete("/users/{user_id}", responses=errors(503, *GUARDED))
    async def forget(ctx: CtxDep, user_id: Id, who: Annotated[Principal, Depends(require("admin"))]) -> Response:
        """Forget a shopper everywhere this server reaches: the event log (their events erased, a hashed
        tombstone kept, their event ids refused from now on), every in-memory state and cache, the served
        artifact, the knowledge folder and the store (or, while another process holds the store, at its
        next ingest or train). See docs/security.md."""
        holder = ctx.holder

        def forget_now() -> dict[str, Any]:
            with holder.guard.exclusive():
                out = holder.service.forget(user_id)
            if ctx.forget is not None:  # outside the guard: event writes need not wait for the store
                try:
                    beyond = ctx.forget(user_id, holder.service.artifact.folder)
                    out.update(store=beyond["store"], artifacts=sum(beyond["artifacts"].values()),
                               knowledge={d: sum(f.values()) for d, f in beyond["knowledge"].items()})
                except Exception:  # the log and memory are done; the tombstone makes ingest and train finish it
                    log.exception("forgetting beyond the serving state failed")
                    out["store"] = "pending"
            return out

        return ok(await ctx.on_io(forget_now))

    return r
