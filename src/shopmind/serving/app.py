"""The HTTP API (FastAPI): the app factory, the edge middleware, error handling and metrics; the routes
live in serving/routes/, one router per domain, sharing the dependencies of serving/deps.py.

Every input is validated and bounded at the edge: ids and strings have length limits, k / page / size /
batch sizes have maxima (all in the OpenAPI document), request bodies are capped in bytes and must arrive
within `serving.body_timeout_s`. Every error is JSON of one model (`ErrorOut`: detail, field errors,
request id) with its status declared; anything unexpected becomes a 500 with a request id and no stack
trace (the trace goes to the server log). Who may call what: docs/security.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path as FilePath
from typing import Any, AsyncIterator, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import ServingSettings
from .auth import KeyStore
from .deps import Ctx, Holder, make_limits
from .eventlog import EventLogError
from .routes import admin, events, items, ops, recommend, search, storefront as storefront_routes, users
from .service import NotFound, Service

log = logging.getLogger("shopmind.serving")
MAX_BODY = 2_000_000  # bytes per request body
STATIC = FilePath(__file__).resolve().parent / "static"


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


async def _send_json(send: Callable, status: int, payload: dict[str, Any], close: bool = False) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
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


class Metrics:
    """The Prometheus series of one app, and the live window for the dashboard."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("shopmind_requests_total", "HTTP requests", ["route", "method", "status"], registry=r)
        self.latency = Histogram("shopmind_request_seconds", "Request latency", ["route"], registry=r,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 1.0, 2.5))
        self.events_total = Counter("shopmind_events_total", "Events received", ["result"], registry=r)
        self.log_records = Gauge("shopmind_event_log_records", "Records in the event log", registry=r,
                                 multiprocess_mode="max")
        self.quarantined = Gauge("shopmind_event_log_quarantined", "Corrupt event-log records moved to quarantine",
                                 registry=r, multiprocess_mode="max")
        self.reloads = Counter("shopmind_reloads_total", "Artifact reloads", ["result"], registry=r)
        self.auth_failures = Counter("shopmind_auth_failures_total", "Refused credentials", ["kind"], registry=r)
        self.limited = Counter("shopmind_rate_limited_total", "Requests refused by a rate limit", ["bucket"], registry=r)
        self.window = Window()
        # Online evaluation and the trainer: every worker holds the same numbers (the shared log, the
        # shared status file), so the most recent value of any worker is the value.
        g = {"registry": r, "multiprocess_mode": "mostrecent"}
        self.online_impressions = Gauge("shopmind_online_impressions", "Attributed impressions (deduplicated)", **g)
        self.online_clicks = Gauge("shopmind_online_clicks", "Attributed clicks (deduplicated)", **g)
        self.online_ctr = Gauge("shopmind_online_ctr", "Click-through rate of attributed impressions", ["source"], **g)
        self.trainer = {k: Gauge(f"shopmind_trainer_{k}", f"Trainer: {k.replace('_', ' ')} (trainer.json)", **g)
                        for k in ("runs", "promotions", "failures", "lag_records", "last_finished", "last_promoted")}
        self.trainer_last = Gauge("shopmind_trainer_last_metric", "Trainer: last run's offline metric",
                                  ["model", "metric"], **g)
        self.trainer_state = Gauge("shopmind_trainer_state", "Trainer: 1 for its current state", ["state"], **g)

    def refresh(self, service: Service, trainer: dict[str, Any] | None = None) -> None:
        if service.log is not None:
            self.log_records.set(service.log.records)
            self.quarantined.set(getattr(service.log, "quarantined", 0))
        online = service.online.gauges()
        self.online_impressions.set(online["impressions"])
        self.online_clicks.set(online["clicks"])
        for source, ctr in online["ctr"].items():
            self.online_ctr.labels(source).set(ctr)
        if trainer and trainer.get("readable"):
            from .trainer_status import STATES

            for k, gauge in self.trainer.items():
                last = trainer.get("last") or {}
                v = last.get(k[5:]) if k.startswith("last_") else trainer.get(k)
                if v is not None:
                    gauge.set(float(v))
            for model in ("candidate", "serving"):
                for metric, v in ((trainer.get("last") or {}).get(model) or {}).items():
                    if v is not None:
                        self.trainer_last.labels(model, metric).set(v)
            for state in STATES:
                self.trainer_state.labels(state).set(1.0 if trainer.get("state") == state else 0.0)


class Edge:
    """Pure ASGI middleware: body size and arrival-time limits, metrics, the last-resort 500."""

    def __init__(self, inner: Any, metrics: Metrics, body_timeout_s: float) -> None:
        self.inner, self.metrics, self.timeout = inner, metrics, body_timeout_s

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            await _send_json(send, 413, {"detail": f"request body over {MAX_BODY} bytes"}, close=True)
            return
        state: dict[str, Any] = {"status": 500, "started": False, "received": 0, "refuse": None}
        deadline = time.monotonic() + self.timeout

        async def bounded() -> dict:
            """The body as the app reads it: all of it within the deadline, at most MAX_BODY bytes (also when
            sent in chunks without a Content-Length). Past either bound the app is told the client left, and
            whatever it answers is replaced by the refusal (frameworks turn a read error into a 400)."""
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                state["refuse"] = (408, "the request body did not arrive in time")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > MAX_BODY:
                    state["refuse"] = (413, f"request body over {MAX_BODY} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def tracked(message: dict) -> None:
            if state["refuse"] is not None:
                return
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        t0 = time.perf_counter()
        try:
            await self.inner(scope, bounded, tracked)
        except Exception:
            if state["refuse"] is None:
                rid = uuid.uuid4().hex[:12]
                log.exception("request %s failed (%s %s)", rid, scope["method"], scope.get("path"))
                if not state["started"]:
                    await _send_json(send, 500, {"detail": "internal error", "request_id": rid})
        if state["refuse"] is not None and not state["started"]:
            state["status"] = state["refuse"][0]
            await _send_json(send, state["refuse"][0], {"detail": state["refuse"][1]}, close=True)
        route = getattr(scope.get("route"), "path", None) or (  # mounted files carry no route
            "/static/{file}" if scope.get("path", "").startswith("/static/") else "unmatched")
        dt = time.perf_counter() - t0
        m = self.metrics
        m.requests.labels(route, scope["method"], str(state["status"])).inc()
        m.latency.labels(route).observe(dt)
        m.window.add(route, dt * 1e3)


def create_app(service: Service, keys: KeyStore, settings: ServingSettings | None = None,
               loader: Callable[[str | None], Service] | None = None, secret: bytes | None = None,
               results: dict[str, FilePath | None] | None = None,
               forget: Callable[[str, FilePath], dict[str, Any]] | None = None,
               experiment: tuple[Service, float] | None = None) -> FastAPI:
    """The API over a service. loader(path) builds a new service for POST /admin/reload; secret signs
    shopper sessions (default: a fresh one); results maps storefront.SOURCES to the folders of result
    files shown on the dashboard; forget(user, served artifact folder) removes a forgotten shopper from
    what lies beyond the service (store, knowledge, artifacts; serving.forget.forget_everywhere).
    experiment: (a service of another artifact of the same dataset, with its arm, and the share of shoppers
    it recommends to); it follows the same event log, and tokens carry the arm (docs/online.md)."""
    from . import storefront

    cfg = settings or ServingSettings()
    metrics = Metrics()
    exposition = metrics.registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # several workers: /metrics sums every worker's files
        from prometheus_client import multiprocess

        exposition = CollectorRegistry()
        multiprocess.MultiProcessCollector(exposition)
    # CPU-bound work runs on about one thread per core (divided among the worker processes): more would only
    # fight over the GIL and stretch the tail latency. Event writes wait on fsync, not on the CPU, so they get
    # their own larger pool, where concurrent posts meet in one group commit.
    cpu_threads = cfg.cpu_threads or max(1, min(2, (os.cpu_count() or 1) // cfg.workers))
    holder = Holder(service, loader, SwapGuard())
    if experiment is not None:
        if experiment[0].artifact.dataset != service.artifact.dataset:
            raise ValueError("the experiment's artifact must be of the served dataset (they share the event log)")
        holder.experiment, holder.share = experiment[0], min(max(float(experiment[1]), 0.0), 1.0)
    ctx = Ctx(holder, cfg, keys, secret or secrets.token_bytes(32),
              {k: (results or {}).get(k) for k in storefront.SOURCES}, metrics,
              ThreadPoolExecutor(max_workers=cpu_threads, thread_name_prefix="shopmind-cpu"),
              ThreadPoolExecutor(max_workers=16, thread_name_prefix="shopmind-io"), make_limits(cfg), forget=forget)
    app = FastAPI(title="shopmind", version=str(service.artifact.manifest.get("shopmind", "")),
                  description="E-commerce search and recommendation with language-model knowledge. Mode: "
                              f"{cfg.mode}. Authentication and scopes: docs/security.md.")
    app.state.ctx = ctx
    app.state.holder = holder
    app.add_middleware(Edge, metrics=metrics, body_timeout_s=cfg.body_timeout_s)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))[:300]}
                  for e in exc.errors()[:20]]
        return JSONResponse({"detail": "invalid request", "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

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

    def swap_in(fresh: Service) -> None:
        with holder.guard.exclusive():
            old = holder.service
            fresh.attach_log()  # replays the log while writes wait: no acknowledged event is missed
            fresh.on_control = on_control
            holder.service = fresh
            holder.reloads += 1
        threading.Timer(10.0, old.close).start()  # requests still running on the old service finish first
        metrics.reloads.labels("ok").inc()

    def reload_from(path: str | None) -> None:
        try:
            swap_in(holder.loader(path))  # type: ignore[misc]
        except Exception:
            metrics.reloads.labels("failed").inc()
            log.exception("reload requested by another worker failed")

    def on_control(record: dict[str, Any]) -> None:
        """Control records other workers logged: a reload there means a reload here too."""
        if record.get("kind") == "reload" and holder.loader is not None:
            threading.Thread(target=reload_from, args=(record.get("artifact"),), daemon=True).start()

    service.on_control = on_control

    stopping = threading.Event()

    def follow() -> None:
        """Follow the shared log (and the key file) between requests too, so an idle worker still applies
        other workers' events, reload records and key revocations within a fraction of a second. Ends with
        the app (lifespan shutdown)."""
        while not stopping.wait(0.2):
            try:
                holder.service.sync()
                if holder.experiment is not None:
                    holder.experiment.sync()
                keys.watch()
            except Exception:  # never let the follower die; the next request syncs anyway
                if not stopping.is_set():
                    log.exception("following the event log failed")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        stopping.set()
        for pool in (ctx.cpu_pool, ctx.io_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    app.router.lifespan_context = lifespan
    threading.Thread(target=follow, name="shopmind-log-follower", daemon=True).start()

    def openapi_with_examples() -> dict[str, Any]:
        """The OpenAPI document, with a real item id as the example of every item parameter (so the docs'
        "try it out" and API fuzzers reach real items rather than 404s)."""
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            s = holder.service
            example = str(s.catalog.item_ids[int(np.argmax(s.pipeline.info.popularity))]) if s.n_items else None
            for ops_ in schema["paths"].values():
                for op in ops_.values():
                    for p in op.get("parameters", []):
                        if p["name"] in ("item_id", "item") and example is not None:
                            p["example"] = example
        return app.openapi_schema

    app.openapi = openapi_with_examples  # type: ignore[method-assign]
    app.include_router(ops.router(exposition))
    app.include_router(search.router(cfg))
    app.include_router(recommend.router(cfg))
    app.include_router(items.router())
    app.include_router(events.router(cfg))
    app.include_router(users.router(cfg))
    app.include_router(admin.router(swap_in))
    if cfg.storefront:
        from fastapi.staticfiles import StaticFiles

        app.mount("/static", StaticFiles(directory=STATIC), name="static")
        app.include_router(storefront_routes.router(cfg))
    return app
