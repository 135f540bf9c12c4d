"""What every router shares: the app context, the error model, who is calling (key, session, anonymous),
scope checks and rate limits. Routers get these through FastAPI dependencies (the "bigger applications"
layout), so each route states its access rule in its signature.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from fastapi import Depends, HTTPException, Path as PathParam, Request
from fastapi.responses import Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from ..config import ServingSettings
from . import sessions
from .auth import KeyStore
from .online import in_share
from .ratelimit import Limited, RateLimiter
from .service import Service
from .trainer_status import TrainerStatus

# No slash (it would leave the path segment), no outer ASCII whitespace.
ID_PATTERN = r"^[^/ \t\n\r\f\v](?:[^/]*[^/ \t\n\r\f\v])?$"
Id = Annotated[str, PathParam(min_length=1, max_length=256, pattern=ID_PATTERN)]


class FieldError(BaseModel):
    loc: list[str]
    msg: str


class ErrorOut(BaseModel):
    """Every error, whatever its status: a one-line `detail`, field errors for invalid requests, and a
    request id for internal errors (the trace stays in the server log)."""

    detail: str = Field(description="What went wrong, in one line.")
    errors: list[FieldError] | None = Field(None, description="Each invalid field (422 only).")
    request_id: str | None = Field(None, description="Quote it when reporting an internal error (500 only).")


_TEXT = {400: "Bad request (e.g. an artifact that cannot be loaded)", 401: "No valid API key or session",
         403: "The key or session may not do this", 404: "Unknown item or resource",
         408: "The request body did not arrive in time", 409: "Conflict with the server's state",
         413: "Request body or batch too large", 422: "Invalid parameters or body",
         429: "Rate limit exceeded (see Retry-After)", 500: "Internal error (no details leave the server)",
         503: "Not stored; retry later"}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the one error model."""
    out: dict[int | str, dict[str, Any]] = {}
    for c in codes:
        out[c] = {"model": ErrorOut, "description": _TEXT[c]}
        if c == 429:
            out[c]["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}
    return out


# Statuses any route behind credentials can answer, and those of a route that takes a body.
GUARDED = (401, 403, 422, 429, 500)
BODY = (400, 408, 413)  # 400: a body that cannot be parsed at all


@dataclass
class Holder:
    """The current service; swapped atomically on reload (requests keep the one they started with)."""

    service: Service
    loader: Callable[[str | None], Service] | None
    guard: Any
    reloads: int = 0
    experiment: Service | None = None  # `serve --experiment`: a second artifact, for a share of the shoppers
    share: float = 0.0

    def for_user(self, user: str) -> Service:
        """The service whose recommendations this shopper gets: the experiment's for its share of shoppers
        (a hash of the id salted with the experiment's version; the same on every worker), else the main."""
        exp = self.experiment
        if exp is not None and in_share(user, self.share, exp.artifact_version):
            return exp
        return self.service


@dataclass
class Ctx:
    """Everything the routers need, built once per app."""

    holder: Holder
    cfg: ServingSettings
    keys: KeyStore
    secret: bytes
    folders: dict[str, Path | None]
    metrics: Any
    cpu_pool: ThreadPoolExecutor
    io_pool: ThreadPoolExecutor
    limits: dict[str, RateLimiter] = field(default_factory=dict)
    forget: Callable[[str, Path], dict[str, Any]] | None = None  # beyond the service: store, knowledge, artifacts
    reload_lock: threading.Lock = field(default_factory=threading.Lock)
    trainer: TrainerStatus = field(default_factory=TrainerStatus)  # the trainer's status file, cached

    async def on_cpu(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.cpu_pool, lambda: fn(*args))

    async def on_io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.io_pool, lambda: fn(*args))


def make_limits(cfg: ServingSettings) -> dict[str, RateLimiter]:
    """Buckets per kind of client; the configured rates are for the whole server, shared by its workers."""
    n = max(cfg.workers, 1)

    def bucket(rate: float, what: str) -> RateLimiter:
        return RateLimiter(rate / n, rate / n * cfg.burst_s, what)

    return {"key": bucket(cfg.key_requests_per_s, "requests"), "key_events": bucket(cfg.key_events_per_s, "events"),
            "session": bucket(cfg.session_requests_per_s, "requests"),
            "session_events": bucket(cfg.session_events_per_s, "events"),
            "anonymous": bucket(cfg.anonymous_requests_per_s, "requests")}


def ok(payload: Any) -> Response:
    """JSON without FastAPI's generic encoder (the payloads are plain dicts already)."""
    return Response(json.dumps(payload, ensure_ascii=False, separators=(",", ":")), media_type="application/json")


async def ctx_of(request: Request) -> Ctx:
    """async on purpose: FastAPI runs a plain `def` dependency on its thread pool, a thread hop per request
    that doubled the tail latency under load."""
    return request.app.state.ctx


CtxDep = Annotated[Ctx, Depends(ctx_of)]


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key (by name), a shopper session (by user id) or nobody."""

    kind: Literal["key", "session", "anonymous"]
    name: str
    scopes: frozenset[str]
    user: str | None = None  # the session's shopper

    @property
    def client(self) -> str:
        return f"{self.kind}:{self.name}"

    def private_for(self, user: str) -> bool:
        """May this caller see what reveals `user`'s history?"""
        return "read_private" in self.scopes or (self.kind == "session" and self.user == user)


_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey",
                           description="An API key (shopmind keys create); or send it as a Bearer token.")
_bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="An API key as a Bearer token.")
_session_header = APIKeyHeader(name="X-Session", auto_error=False, scheme_name="session",
                               description="A shopper session token (POST /sessions).")
SESSION_SCOPES = frozenset({"read"})  # plus, for its own shopper only: private reads and event writes


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _refuse(request: Request, ctx: Ctx, kind: str, detail: str) -> HTTPException:
    """A refused credential, charged to the caller's address like an anonymous request, so that guessing
    keys or sessions is rate-limited too (429 once the address's bucket is empty)."""
    ctx.metrics.auth_failures.labels(kind).inc()
    host = request.client.host if request.client else "unknown"
    try:
        ctx.limits["anonymous"].take(f"anonymous:{host}")
    except Limited as e:
        ctx.metrics.limited.labels("anonymous").inc()
        return HTTPException(429, str(e), headers={"Retry-After": str(e.retry_after)})
    return _unauthorized(detail)


async def principal(request: Request, ctx: CtxDep, key: Annotated[str | None, Depends(_key_header)] = None,
                    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
                    session: Annotated[str | None, Depends(_session_header)] = None) -> Principal:
    """Resolve the caller and charge one request to its bucket. A credential that is present but not valid
    is refused (401), never treated as no credential."""
    given = key or (bearer.credentials if bearer is not None else None)
    raw = request.headers.get("authorization")
    if raw and bearer is None:  # an Authorization header that is not "Bearer <key>", whatever else came along
        raise _refuse(request, ctx, "key", "the Authorization header must be 'Bearer <API key>'")
    if given is not None:
        who = ctx.keys.identify(given)
        if who is None:
            raise _refuse(request, ctx, "key", "invalid or revoked API key")
        p = Principal("key", who[0], who[1])
        bucket = "key"
    elif session is not None:
        s = sessions.verify(ctx.secret, session)
        if s is None or (s.key is not None and not ctx.keys.exists(s.key)) or (s.key is None and ctx.cfg.mode != "demo"):
            raise _refuse(request, ctx, "session", "invalid, expired or revoked session")
        p = Principal("session", s.user, SESSION_SCOPES, s.user)
        bucket = "session"
    else:
        host = request.client.host if request.client else "unknown"
        p = Principal("anonymous", host, frozenset({"read"}) if ctx.cfg.mode == "demo" else frozenset())
        bucket = "anonymous"
    try:
        ctx.limits[bucket].take(p.client)
    except Limited as e:
        ctx.metrics.limited.labels(bucket).inc()
        raise HTTPException(429, str(e), headers={"Retry-After": str(e.retry_after)}) from None
    return p


Who = Annotated[Principal, Depends(principal)]


def require(scope: str) -> Callable[..., Any]:
    """A dependency: the caller must hold `scope` (401 without credentials, 403 with too few)."""

    async def check(p: Who) -> Principal:
        if scope not in p.scopes:
            if p.kind == "anonymous":
                raise _unauthorized(f"an API key with scope '{scope}' or a shopper session is required"
                                    if scope == "read" else f"an API key with scope '{scope}' is required")
            raise HTTPException(403, f"this {'session' if p.kind == 'session' else 'key'} lacks scope '{scope}'")
        return p

    return check


Reader = Annotated[Principal, Depends(require("read"))]


def pid_free_stats(service: Service) -> dict[str, Any]:
    """The service's statistics without internal paths or process ids (those are for admins only)."""
    return {k: v for k, v in service.stats().items() if k not in ("artifact", "pid")}

