"""The HTTP API (FastAPI): search, recommendations, items, events, user deletion, health, metrics, reload.

Every input is validated and bounded here, at the edge: ids and strings have length limits, k / page /
size / batch sizes have maxima, request bodies are capped in bytes. Errors are JSON `{"detail": ...}` with
a 4xx status and a clear message; anything unexpected becomes a 500 with a request id and no stack trace
(the trace goes to the server log). Writes (events) need a `write` API key, admin calls (reload, forget a
user) an `admin` key, given as `Authorization: Bearer <key>` or `X-API-Key`; reads are open unless
`serving.open_reads` is false.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from pathlib import Path as FilePath
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Callable, Literal

import numpy as np
from fastapi import Body, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config import ServingSettings
from ..data.schema import EventType
from ..search.catalog import Filters
from .auth import KeyStore
from .eventlog import EventLogError
from . import storefront
from .service import NotFound, Service

log = logging.getLogger("shopmind.serving")
MAX_BODY = 2_000_000  # bytes per request body
SESSION_TYPES = {EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.IMPRESSION,
                 EventType.SEARCH}
STATIC = FilePath(__file__).resolve().parent / "static"
Id = Annotated[str, Path(min_length=1, max_length=256)]


class EventIn(BaseModel):
    """One event as clients post it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    event_id: str | None = Field(None, min_length=1, max_length=128,
                                 description="Client id for idempotent retries (recommended).")
    user_id: str = Field(min_length=1, max_length=256)
    item_id: str | None = Field(None, min_length=1, max_length=256)
    type: EventType
    value: float | None = Field(None, ge=-1e9, le=1e9)
    timestamp: float | None = Field(None, ge=0, le=1e11, description="Unix seconds; default: time of receipt.")
    session_id: str | None = Field(None, max_length=256)
    query: str | None = Field(None, max_length=500)
    rec_id: str | None = Field(None, max_length=64, description="The recommendation this event responds to.")

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not np.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1)


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    artifact: str | None = Field(None, max_length=4096, description="Artifact folder; default: the current one.")


class SwapGuard:
    """Shared for event writes (many at once, so they can meet in one fsync), exclusive for swapping the
    service or rewriting the log: no event lands in a service that is being replaced."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._shared = 0
        self._exclusive = False

    def __enter__(self) -> "SwapGuard":
        with self._cv:
            while self._exclusive:
                self._cv.wait()
            self._shared += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cv:
            self._shared -= 1
            self._cv.notify_all()

    class _Exclusive:
        def __init__(self, guard: "SwapGuard") -> None:
            self.guard = guard

        def __enter__(self) -> None:
            g = self.guard
            with g._cv:
                while g._exclusive:
                    g._cv.wait()
                g._exclusive = True  # new writers wait from now on
                while g._shared:
                    g._cv.wait()

        def __exit__(self, *exc: object) -> None:
            with self.guard._cv:
                self.guard._exclusive = False
                self.guard._cv.notify_all()

    def exclusive(self) -> "SwapGuard._Exclusive":
        return SwapGuard._Exclusive(self)


class Holder:
    """The current service; swapped atomically on reload (requests keep the one they started with)."""

    def __init__(self, service: Service, loader: Callable[[str | None], Service] | None) -> None:
        self.service = service
        self.loader = loader
        self.guard = SwapGuard()
        self.reloads = 0


async def _send_json(send: Callable, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Window:
    """Requests of the last `seconds`: rate and latency percentiles for the dashboard."""

    def __init__(self, seconds: int = 60) -> None:
        self.seconds = seconds
        self.samples: deque[tuple[float, float, str]] = deque(maxlen=200_000)
        self._lock = threading.Lock()

    def add(self, route: str, ms: float) -> None:
        now = time.time()
        with self._lock:
            self.samples.append((now, ms, route))
            while self.samples[0][0] < now - self.seconds:  # keep only the window: memory follows the rate
                self.samples.popleft()

    def summary(self) -> dict[str, Any]:
        cut = time.time() - self.seconds
        with self._lock:
            while self.samples and self.samples[0][0] < cut:
                self.samples.popleft()
            rows = list(self.samples)
        out: dict[str, Any] = {"window_s": self.seconds, "requests": len(rows),
                               "rate_per_s": round(len(rows) / self.seconds, 2), "routes": {}}
        by: dict[str, list[float]] = {}
        for _, ms, route in rows:
            by.setdefault(route, []).append(ms)
        for route, ms in sorted(by.items()):
            a = np.array(ms)
            out["routes"][route] = {"requests": len(a), "p50_ms": round(float(np.percentile(a, 50)), 2),
                                    "p99_ms": round(float(np.percentile(a, 99)), 2)}
        return out


def _filters(category: str | None, brand: str | None, price_min: float | None, price_max: float | None,
             attr: list[str] | None) -> Filters | None:
    attrs = {}
    for a in attr or []:
        k, sep, v = a.partition(":")
        if not sep or not k or not v:
            raise HTTPException(422, f"attr filter {a[:80]!r}: expected NAME:VALUE")
        attrs[k.strip()] = v.strip()
    if price_min is not None and price_max is not None and price_min > price_max:
        raise HTTPException(422, "price_min is above price_max")
    f = Filters(category, brand, price_min, price_max, attrs)
    return None if f.is_empty() else f


def create_app(service: Service, keys: KeyStore, settings: ServingSettings | None = None,
               loader: Callable[[str | None], Service] | None = None, secret: bytes | None = None,
               results: dict[str, FilePath | None] | None = None) -> FastAPI:
    """The API over a service. loader(path) builds a new service for POST /admin/reload; secret signs
    storefront sessions (default: a fresh one); results maps storefront.SOURCES to the folders of result
    files shown on the dashboard."""
    cfg = settings or ServingSettings()
    secret = secret or secrets.token_bytes(32)
    folders = {k: (results or {}).get(k) for k in storefront.SOURCES}
    holder = Holder(service, loader)
    registry = CollectorRegistry()
    exposition = registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # several workers: /metrics sums every worker's files
        from prometheus_client import multiprocess

        exposition = CollectorRegistry()
        multiprocess.MultiProcessCollector(exposition)
    requests = Counter("shopmind_requests_total", "HTTP requests", ["route", "method", "status"], registry=registry)
    latency = Histogram("shopmind_request_seconds", "Request latency", ["route"], registry=registry,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 1.0, 2.5))
    events_total = Counter("shopmind_events_total", "Events received", ["result"], registry=registry)
    log_records = Gauge("shopmind_event_log_records", "Records in the event log", registry=registry,
                        multiprocess_mode="max")
    reloads = Counter("shopmind_reloads_total", "Artifact reloads", ["result"], registry=registry)
    window = Window()
    app = FastAPI(title="shopmind", version=str(service.artifact.manifest.get("shopmind", "")),
                  description="E-commerce search and recommendation with language-model knowledge.")
    app.state.holder = holder
    app.state.window = window

    # -- plumbing ----------------------------------------------------------------------------------------
    # CPU-bound work runs on about one thread per core (divided among the worker processes): more would only
    # fight over the GIL and stretch the tail latency. Event writes wait on fsync, not on the CPU, so they get
    # their own larger pool, where concurrent posts meet in one group commit.
    cpu_threads = cfg.cpu_threads or max(1, min(2, (os.cpu_count() or 1) // cfg.workers))
    cpu_pool = ThreadPoolExecutor(max_workers=cpu_threads, thread_name_prefix="shopmind-cpu")
    io_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="shopmind-io")
    app.state.pools = (cpu_pool, io_pool)

    async def on_cpu(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(cpu_pool, lambda: fn(*args))

    async def on_io(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(io_pool, lambda: fn(*args))

    def ok(payload: Any) -> Response:
        """JSON without FastAPI's generic encoder (the payloads are plain dicts already)."""
        return Response(json.dumps(payload, ensure_ascii=False, separators=(",", ":")), media_type="application/json")

    class Edge:
        """Pure ASGI middleware: body-size limits, metrics and the last-resort 500 (no stack trace out)."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
            if scope["type"] != "http":
                await self.inner(scope, receive, send)
                return
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
                await _send_json(send, 413, {"detail": f"request body over {MAX_BODY} bytes"})
                return
            if scope["method"] in ("POST", "PUT", "PATCH") and length is None:
                await _send_json(send, 411, {"detail": "a Content-Length header is required"})
                return
            state = {"status": 500, "started": False}

            async def tracked(message: dict) -> None:
                if message["type"] == "http.response.start":
                    state["status"], state["started"] = message["status"], True
                await send(message)

            t0 = time.perf_counter()
            try:
                await self.inner(scope, receive, tracked)
            except Exception:
                rid = uuid.uuid4().hex[:12]
                log.exception("request %s failed (%s %s)", rid, scope["method"], scope.get("path"))
                if not state["started"]:
                    await _send_json(send, 500, {"detail": "internal error", "request_id": rid})
            route = getattr(scope.get("route"), "path", None) or (  # mounted files carry no route
                "/static/{file}" if scope.get("path", "").startswith("/static/") else "unmatched")
            dt = time.perf_counter() - t0
            requests.labels(route, scope["method"], str(state["status"])).inc()
            latency.labels(route).observe(dt)
            window.add(route, dt * 1e3)

    app.add_middleware(Edge)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg", "")} for e in exc.errors()[:20]]
        return JSONResponse({"detail": "invalid request", "errors": errors}, status_code=422)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)[:500]}, status_code=400)

    @app.exception_handler(EventLogError)
    async def log_failed(request: Request, exc: EventLogError) -> JSONResponse:
        log.error("event log: %s", exc)
        return JSONResponse({"detail": "events not stored; retry later"}, status_code=503)

    def key_of(authorization: str | None, x_api_key: str | None) -> str | None:
        if x_api_key:
            return x_api_key
        if authorization and authorization.lower().startswith("bearer "):
            return authorization[7:].strip()
        return None

    def need(scope: str) -> Callable[..., Any]:
        async def check(authorization: Annotated[str | None, Header(max_length=300)] = None,
                  x_api_key: Annotated[str | None, Header(max_length=300)] = None) -> str:
            name = keys.check(key_of(authorization, x_api_key), scope)
            if name is None:
                raise HTTPException(401, f"a valid API key with scope '{scope}' is required",
                                    headers={"WWW-Authenticate": "Bearer"})
            return name
        return check

    async def reader(authorization: Annotated[str | None, Header(max_length=300)] = None,
               x_api_key: Annotated[str | None, Header(max_length=300)] = None) -> None:
        if not cfg.open_reads and keys.check(key_of(authorization, x_api_key), "write") is None:
            raise HTTPException(401, "reads need an API key on this server", headers={"WWW-Authenticate": "Bearer"})

    Read = Depends(reader)

    # -- reads ---------------------------------------------------------------------------------------------
    @app.get("/health", tags=["ops"])
    async def health() -> Response:
        return ok({"status": "ok", **holder.service.stats(), "reloads": holder.reloads})

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics() -> Response:
        log_records.set(holder.service.log.records)
        return Response(generate_latest(exposition), media_type=CONTENT_TYPE_LATEST)

    @app.get("/stats", tags=["ops"], dependencies=[Read])
    async def stats() -> Response:
        """Live request rate and latency over the last minute, and the served artifact's evaluation."""
        s = holder.service
        return ok({**s.stats(), "live": window.summary(), "evaluation": s.artifact.manifest.get("summary", {})})

    @app.get("/search", tags=["search"], dependencies=[Read])
    async def search(q: Annotated[str, Query(min_length=1, max_length=200, description="The query.")],
               category: Annotated[str | None, Query(max_length=300)] = None,
               brand: Annotated[str | None, Query(max_length=200)] = None,
               price_min: Annotated[float | None, Query(ge=0, le=1e9)] = None,
               price_max: Annotated[float | None, Query(ge=0, le=1e9)] = None,
               attr: Annotated[list[str] | None, Query(max_length=10, description="NAME:VALUE")] = None,
               page: Annotated[int, Query(ge=1)] = 1, size: Annotated[int, Query(ge=1, le=100)] = 10,
               user: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
               mode: Annotated[Literal["bm25", "dense", "rrf", "hybrid", "ltr"] | None, Query()] = None
               ) -> Response:
        if page > cfg.max_page:
            raise HTTPException(422, f"page is limited to {cfg.max_page}")
        f = _filters(category, brand, price_min, price_max, attr)
        return ok(await on_cpu(holder.service.search, q, f, page, size, user, mode))

    @app.get("/recommend/{user_id}", tags=["recommend"], dependencies=[Read])
    async def recommend(user_id: Id, k: Annotated[int, Query(ge=1)] = 10,
                  item: Annotated[str | None, Query(min_length=1, max_length=256, description="Current item.")] = None,
                  cart: Annotated[list[str] | None, Query(max_length=50, description="Items in the cart.")] = None,
                  category: Annotated[str | None, Query(max_length=300)] = None,
                  brand: Annotated[str | None, Query(max_length=200)] = None,
                  price_min: Annotated[float | None, Query(ge=0, le=1e9)] = None,
                  price_max: Annotated[float | None, Query(ge=0, le=1e9)] = None,
                  exclude_seen: bool = True, diversity: Annotated[float | None, Query(ge=0, le=1)] = None,
                  explore: bool | None = None, kind: Annotated[str | None, Query(max_length=50)] = None,
                  ads: Annotated[int, Query(ge=0, le=5)] = 0,
                  query: Annotated[str | None, Query(min_length=1, max_length=200,
                                                     description="Current search; its results join the candidates.")] = None
                  ) -> Response:
        if k > cfg.max_k:
            raise HTTPException(422, f"k is limited to {cfg.max_k}")
        for c in cart or []:
            if not 0 < len(c) <= 256:
                raise HTTPException(422, "cart item ids must be 1 to 256 characters")
        f = _filters(category, brand, price_min, price_max, None)
        return ok(await on_cpu(holder.service.recommend, user_id, k, f, item, cart or [], exclude_seen, diversity,
                               explore, kind, ads, query))

    @app.get("/items/{item_id}", tags=["items"], dependencies=[Read])
    async def item(item_id: Id) -> Response:
        return ok(await on_cpu(holder.service.item, item_id))

    @app.get("/items/{item_id}/similar", tags=["items"], dependencies=[Read])
    async def similar(item_id: Id, k: Annotated[int, Query(ge=1, le=100)] = 10,
                      method: Literal["pipeline", "covisitation", "text"] = "pipeline") -> Response:
        return ok(await on_cpu(holder.service.similar, item_id, k, method))

    # -- writes ----------------------------------------------------------------------------------------------
    async def event_writer(authorization: Annotated[str | None, Header(max_length=300)] = None,
                           x_api_key: Annotated[str | None, Header(max_length=300)] = None,
                           x_session: Annotated[str | None, Header(max_length=1000)] = None) -> str | None:
        """None for an API key with write scope; the shopper's id for a storefront session."""
        if keys.check(key_of(authorization, x_api_key), "write") is not None:
            return None
        user = storefront.session_user(secret, x_session) if cfg.storefront else None
        if user is None:
            raise HTTPException(401, "a valid API key with scope 'write' (or a storefront session) is required",
                                headers={"WWW-Authenticate": "Bearer"})
        return user

    @app.post("/events", tags=["events"])
    async def events(body: Annotated[EventIn | EventBatch, Body()],
                     session_user: str | None = Depends(event_writer)) -> Response:
        """One event or {"events": [...]}. Acknowledged only once durable (fsynced); idempotent by event_id.
        A storefront session may post only its own shopper's interactions, at most 50 at a time."""
        batch = body.events if isinstance(body, EventBatch) else [body]
        if len(batch) > cfg.max_batch:
            raise HTTPException(413, f"at most {cfg.max_batch} events per request")
        if session_user is not None:
            if len(batch) > 50:
                raise HTTPException(413, "at most 50 events per request from a storefront session")
            for e in batch:
                if e.user_id != session_user or e.type not in SESSION_TYPES:
                    raise HTTPException(403, "a storefront session may post only its own shopper's interactions")
        records = []
        for e in batch:
            if e.type is not EventType.SEARCH and e.item_id is None:
                raise HTTPException(422, f"a {e.type.value} event needs an item_id")
            if e.type is EventType.SEARCH and not e.query:
                raise HTTPException(422, "a search event needs a query")
            records.append({k: v for k, v in e.model_dump(mode="json").items() if v is not None})
        def write() -> tuple[Service, list[bool]]:
            with holder.guard:
                service = holder.service
                return service, service.ingest(records)

        service, fresh = await on_io(write)
        new = sum(fresh)
        events_total.labels("accepted").inc(new)
        events_total.labels("duplicate").inc(len(fresh) - new)
        unknown = sum(1 for r in records if r.get("item_id") and r["item_id"] not in service.catalog.index)
        return ok({"accepted": new, "duplicates": len(fresh) - new, "unknown_items": unknown, "durable": True})

    @app.delete("/users/{user_id}", tags=["users"])
    async def forget(user_id: Id, key: str = Depends(need("admin"))) -> Response:
        """Forget a user: their logged events are erased from the log and their history from memory."""
        def forget_now() -> dict[str, Any]:
            with holder.guard.exclusive():
                return holder.service.forget(user_id)

        return ok(await on_io(forget_now))

    def swap_in(fresh: Service) -> None:
        with holder.guard.exclusive():
            old = holder.service
            fresh.attach_log()  # replays the log while writes wait: no acknowledged event is missed
            fresh.on_control = on_control
            holder.service = fresh
            holder.reloads += 1
        threading.Timer(10.0, old.close).start()  # requests still running on the old service finish first
        keys.reload()  # keys created or revoked since start take effect too
        reloads.labels("ok").inc()

    def reload_from(path: str | None) -> None:
        try:
            swap_in(holder.loader(path))
        except Exception:
            reloads.labels("failed").inc()
            log.exception("reload requested by another worker failed")

    def on_control(record: dict[str, Any]) -> None:
        """Control records other workers logged: a reload there means a reload here too."""
        if record.get("kind") == "reload" and holder.loader is not None:
            threading.Thread(target=reload_from, args=(record.get("artifact"),), daemon=True).start()

    service.on_control = on_control

    def follow() -> None:
        """Follow the shared log between requests too, so an idle worker still applies other workers'
        events and reload records within a fraction of a second."""
        while True:
            time.sleep(0.2)
            try:
                holder.service.sync()
            except Exception:  # never let the follower die; the next request syncs anyway
                log.exception("following the event log failed")

    threading.Thread(target=follow, name="shopmind-log-follower", daemon=True).start()

    @app.post("/admin/reload", tags=["ops"])
    def reload(body: Annotated[ReloadIn | None, Body()] = None, key: str = Depends(need("admin"))) -> Response:
        """Load a (new) artifact and swap it in; requests in flight finish on the old one. With several
        worker processes, the others follow through a control record in the shared event log."""
        if holder.loader is None:
            raise HTTPException(409, "this server was started without a reloadable artifact")
        t0 = time.perf_counter()
        path = body.artifact if body else None
        try:
            fresh = holder.loader(path)
        except Exception as e:  # a bad artifact must not take the running service down
            reloads.labels("failed").inc()
            log.exception("reload failed")
            raise HTTPException(400, f"reload failed: {str(e)[:300]}") from None
        swap_in(fresh)
        holder.service.log.control({"kind": "reload", "artifact": path, "at": time.time()})
        return ok({"reloaded": True, "artifact": str(fresh.artifact.folder), "seconds": round(time.perf_counter() - t0, 2)})

    # -- storefront ------------------------------------------------------------------------------------------
    if cfg.storefront:
        from fastapi.staticfiles import StaticFiles

        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> Response:
            return Response((STATIC / "index.html").read_bytes(), media_type="text/html; charset=utf-8")

        @app.get("/storefront/users", tags=["storefront"], dependencies=[Read])
        async def users() -> Response:
            """Real shoppers of the dataset to browse as (longest histories first), and a new shopper."""
            return ok({"users": await on_cpu(storefront.shoppers, holder.service)})

        @app.get("/storefront/session", tags=["storefront"], dependencies=[Read])
        async def session(user: Annotated[str, Query(min_length=1, max_length=256)]) -> Response:
            """A signed token that lets the browser post this shopper's interactions (and nobody else's).
            A real shop issues it after its own login; the demo storefront lets you pick any shopper."""
            return ok({"user_id": user, "token": storefront.session_token(secret, user),
                       "expires_in": storefront.SESSION_TTL})

        @app.get("/storefront/dashboard", tags=["storefront"], dependencies=[Read])
        async def dashboard() -> Response:
            return ok(await on_cpu(storefront.dashboard, holder.service, folders))

        @app.get("/storefront/plots/{source}/{name}", tags=["storefront"], dependencies=[Read])
        async def plot(source: Literal["local", "bench"], name: Annotated[str, Path(max_length=100)]) -> Response:
            path = storefront.plot_path(folders, source, name)
            if path is None:
                raise HTTPException(404, "no such plot")
            return Response(path.read_bytes(), media_type="image/png")

    return app
