"""The trainer role (Gorse's master): ship the serving log into the store, retrain on a schedule, judge the
candidate against the served artifact on the newest events, and promote it with a hot reload only when it
is not worse. It runs in its own process (`shopmind trainer`), never in a serving worker.

One run:
1. ship the acknowledged events (serving/shipper.py), then copy the dataset's rows into a snapshot store
   (data/snapshot.py) so that training never holds the real store;
2. hold out the newest events the served artifact has not seen (evaluation/holdout.py) and fit a candidate
   on everything before them: **cheap** runs refit only the cheap sources (popularity, item-KNN
   co-occurrence counts) and item statistics in the served item index, keeping the neural sources and the
   ranker; **full** runs retrain every source and the ranker (on at most one run per `full_every_s`);
3. rank the full catalog for every held-out case with both, NDCG@10 and hit rate@10 with a paired
   bootstrap interval of the difference; the gate decides;
4. if promoted: refit on every event, write the artifact beside the served one, check that it loads, swap
   the folders, and log a `reload` control record that every worker following the event log acts on.
A failure at any step leaves the served artifact as it was; the status file says what happened.

Status: `<state_dir>/<dataset>/trainer.json` (read by /metrics and the dashboard), replaced atomically.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import shutil
import tempfile
import threading
import time
import traceback
from datetime import datetime, timezone
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data.interactions import Interactions
from ..data.snapshot import snapshot
from ..data.store import Store, StoreError, open_store
from ..evaluation import metrics as M
from ..evaluation.holdout import choose_slice, events_frame, recent_protocol, remap
from ..evaluation.protocols import Cases
from ..evaluation.timesplit import EXCLUDED_TYPES
from ..knowledge.tables import DDL as KNOWLEDGE_DDL
from ..fsutil import fsync_dir
from ..ranking.pipeline import RankingPipeline
from ..ranking.sources import DEFAULT_SOURCES, Sources
from . import artifact as A

log = logging.getLogger("shopmind.trainer")
StepFn = Callable[[str], None]
GATES = ("point", "noninferior", "off")
HISTORY = 50  # past results kept in the status file
TUNED_KEYS = ("epochs", "sasrec_epochs", "twotower_epochs")  # chosen on validation by a full run


@dataclass
class TrainerConfig:
    every_events: int = 1000  # retrain after this many new events ...
    every_s: float = 600.0  # ... or this long after the last run, when at least one event is new
    full_every_s: float = 3600.0  # the neural sources and the ranker at most this often (0: every run)
    cheap: tuple[str, ...] = ("pop", "itemknn")  # sources a cheap run refits
    sources: dict[str, dict[str, Any]] | None = None  # a full run's sources (default: the served ones)
    gate: str = "point"  # point: candidate >= served - margin; noninferior: interval low >= -margin; off
    margin: float = 0.0  # NDCG@10, absolute
    holdout_share: float = 0.5  # the newest share of the new events judges the candidate
    min_cases: int = 30  # fewer held-out cases than this: wait for more events
    max_cases: int = 5000
    poll_s: float = 5.0  # between shipping passes

    def __post_init__(self) -> None:
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {', '.join(GATES)}, not {self.gate!r}")
        if not 0 < self.holdout_share < 1:
            raise ValueError("holdout_share must be between 0 and 1")


@dataclass
class Status:
    dataset: str
    state: str = "idle"  # idle | shipping | training | evaluating | promoting | failed
    step: str = ""
    updated: float = 0.0
    started: float = field(default_factory=time.time)
    runs: int = 0
    promotions: int = 0
    failures: int = 0
    deferred: int = 0
    lag_records: int = 0
    pending_events: int = 0
    served: dict[str, Any] = field(default_factory=dict)
    last: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _one_line(e: BaseException) -> str:
    """The error in one line, file paths cut to their last part (the status file is shown on the dashboard)."""
    text = str(e).splitlines()[0] if str(e) else ""
    text = re.sub(r"(?:/[^/\s'\"]+)+/([^/\s'\"]+)", r"\1", text)
    return f"{type(e).__name__}: {text[:300]}"


class Trainer:
    def __init__(self, settings: Any, dataset: str, folder: str | Path, config: TrainerConfig | None = None,
                 on_step: StepFn | None = None) -> None:
        """settings: shopmind.config.Settings; folder: the served artifact (trained here when missing)."""
        self.settings, self.dataset = settings, dataset
        self.folder = Path(folder).resolve()
        self.config = config or TrainerConfig()
        self.on_step = on_step
        self.state_dir = Path(settings.state_dir) / dataset
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.status_path = self.state_dir / "trainer.json"
        # One trainer per dataset and state folder: a second one would retrain the same artifact and remove
        # the first one's temporary folders as a killed run's leftovers.
        self._lock = open(self.state_dir / "trainer.lock", "a+b")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise ValueError(f"another trainer is running for {dataset} on this state folder") from None
        self._db_lock = self._cluster_lock(settings, dataset)
        self.status = Status(dataset)
        self._last_run = self._served_time()  # the time schedule counts from when the served model was made
        self._pending_at_last_run = 0
        self._last_full = self._served_full_time()
        self._shipped_at = 0.0
        self._report: dict[str, Any] = {}  # the last full run's training report (results on the held-out cases)
        self._recover()

    def _cluster_lock(self, settings: Any, dataset: str) -> Any:
        """With the serving state in PostgreSQL (API processes on several hosts), one trainer per dataset in the
        whole deployment: a session advisory lock, held by this connection until close (or the process's end)."""
        from .shared import log_url

        url = log_url(settings)
        if not url:
            return None
        from .pglog import connect, ensure_schema

        conn = connect(url)
        ensure_schema(conn)
        if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [f"shopmind-trainer:{dataset}"]).fetchone()[0]:
            conn.close()
            self._lock.close()
            raise ValueError(f"another trainer is running for {dataset} on this database")
        return conn

    def close(self) -> None:
        """Let another trainer take over (also when this process ends)."""
        self._lock.close()
        if self._db_lock is not None:
            self._db_lock.close()

    def _recover(self) -> None:
        """Undo what a killed run left: a swap cut between its two renames (no served folder, the old one
        aside: it is put back) and its temporary folders."""
        parent = self.folder.parent
        if not parent.is_dir():
            return
        old = sorted(parent.glob(f".{self.folder.name}.old-*"))
        if not (self.folder / "manifest.json").is_file() and old and (old[-1] / "manifest.json").is_file():
            if self.folder.exists():
                shutil.rmtree(self.folder)
            old[-1].rename(self.folder)
            log.warning("restored the served artifact from %s (a promotion was cut short)", old[-1].name)
            old = old[:-1]
        for path in [*old, *parent.glob(f".trainer-{self.dataset}-*")]:
            shutil.rmtree(path, ignore_errors=True)

    # -- status --------------------------------------------------------------------------------------------
    def _step(self, state: str, step: str) -> None:
        self.status.state, self.status.step = state, step
        self._write_status()
        if self.on_step:
            self.on_step(f"{state}: {step}" if step else state)

    def _write_status(self) -> None:
        self.status.updated = time.time()
        data = json.dumps(asdict(self.status), default=str, indent=1).encode()
        tmp = self.status_path.with_name(self.status_path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        tmp.replace(self.status_path)
        if self._db_lock is not None:  # API processes on other hosts read it from the database
            try:
                self._db_lock.execute(
                    "INSERT INTO serving_state VALUES (%s, %s, 1) ON CONFLICT (name) DO UPDATE SET "
                    "value = excluded.value, version = serving_state.version + 1", [f"trainer:{self.dataset}",
                                                                                  data.decode()])
            except Exception as e:  # noqa: BLE001 - the status is for display; training goes on
                log.warning("trainer status not written to the database: %s", str(e).strip().splitlines()[0])

    def _manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / "manifest.json").read_text())
        except (OSError, ValueError):
            return None

    def _served_time(self) -> float:
        try:
            return (self.folder / "manifest.json").stat().st_mtime
        except OSError:
            return 0.0

    def _served_full_time(self) -> float:
        m = self._manifest() or {}
        t = (m.get("trainer") or {}).get("full_at")
        return float(t) if t else self._served_time()

    # -- the schedule --------------------------------------------------------------------------------------
    def tick(self) -> dict[str, Any] | None:
        """Ship once, and train when due. Returns the run's result, or None when nothing ran."""
        self._step("shipping", "")
        self._shipped_at = time.time()  # every event acknowledged before this is in the next run's data
        pending = self._ship()
        if pending is None:  # the store is busy: next tick
            self._step("idle", "store busy")
            return None
        due = self._due(pending)
        if not due:
            self._step("idle", f"{pending:,} new events")
            return None
        return self.run_once(due)

    def _ship(self) -> int | None:
        """One shipping pass; returns how many stored events are newer than the served artifact's data."""
        from .shipper import ship

        try:
            report = ship(self.settings, self.dataset)
        except StoreError:
            return None
        self.status.lag_records = int(report.get("lag_records", 0))
        m = self._manifest()
        since = ((m or {}).get("through") or {}).get("newest")
        try:
            with open_store(self.settings) as store:
                sql = ("SELECT count(*) FROM events WHERE dataset = ? AND item_id IS NOT NULL "
                       "AND type <> ALL(?) AND timestamp ")  # what trains: see holdout.events_frame
                args = [self.dataset, list(EXCLUDED_TYPES)]
                if since is None:
                    n = store.con.execute(sql + "IS NOT NULL", args).fetchone()[0]
                else:
                    cut = datetime.fromtimestamp(float(since), timezone.utc).replace(tzinfo=None)
                    n = store.con.execute(sql + "> ?", [*args, cut]).fetchone()[0]
        except StoreError:
            return None
        self.status.pending_events = int(n)
        return int(n) if m is not None else max(int(n), 1)

    def _due(self, pending: int) -> str | None:
        """'full', 'cheap' or None."""
        c = self.config
        last = self.status.last or {}
        if last.get("outcome") == "failed" and time.time() - self._last_run < min(max(c.every_s, c.poll_s), 300):
            return None  # after a failure, wait before the next attempt (at most 5 minutes)
        if self._manifest() is None:
            return "full"
        if pending <= 0:
            return None
        grown = pending - self._pending_at_last_run >= c.every_events
        waited = time.time() - self._last_run >= c.every_s and pending > self._pending_at_last_run
        if not (grown or waited):
            return None
        served = (self._manifest() or {}).get("sources", [])
        if time.time() - self._last_full >= c.full_every_s or not set(c.cheap) & set(served):
            return "full"
        return "cheap"

    def loop(self, stop: threading.Event) -> None:
        """tick() every poll_s seconds until stop is set."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception as e:  # the role keeps running; the status says what went wrong
                log.error("trainer tick failed: %s", _one_line(e))
                self.status.failures += 1
                self._step("failed", _one_line(e))
            stop.wait(self.config.poll_s)
        self._step("stopped", "")

    # -- one run -------------------------------------------------------------------------------------------
    def run_once(self, kind: str = "cheap", ship: bool = False) -> dict[str, Any]:
        """Train, judge and maybe promote (ship first when asked); never raises (a failure is recorded and the
        served artifact kept)."""
        if ship:
            self._shipped_at = time.time()
            if self._ship() is None:
                raise StoreError(f"the store {self.settings.store.path.name} is held by another process")
        t0 = time.time()
        self._last_run = t0
        self._pending_at_last_run = self.status.pending_events
        self.status.runs += 1
        result: dict[str, Any] = {"kind": kind, "started": t0, "data_until": self._shipped_at or t0, "promoted": False}
        work: Path | None = None
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".trainer-{self.dataset}-", dir=self.folder.parent))
            result.update(self._run(kind, work, result))
        except Exception as e:
            log.error("training run failed, the served artifact is unchanged: %s", _one_line(e))
            log.debug("%s", traceback.format_exc())
            result.update(error=_one_line(e), outcome="failed")
            self.status.failures += 1
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
        result["finished"] = time.time()
        result["seconds"] = round(result["finished"] - t0, 1)
        if result.get("outcome") == "deferred":
            self.status.deferred += 1
        self.status.last = result
        self.status.history = (self.status.history + [result])[-HISTORY:]
        m = self._manifest() or {}
        self.status.served = {"created": m.get("created"), "through": m.get("through"), "trainer": m.get("trainer")}
        self._step("failed" if result.get("outcome") == "failed" else "idle", result.get("outcome", ""))
        log.info("trainer run: %s", json.dumps({k: v for k, v in result.items() if k != "started"}, default=str))
        return result

    def _run(self, kind: str, work: Path, result: dict[str, Any]) -> dict[str, Any]:
        s, c = self.settings, self.config
        self._step("training", "snapshot of the store")
        with open_store(s) as store:
            snap_path = snapshot(store, self.dataset, work / "snapshot.duckdb", KNOWLEDGE_DDL)
        served_manifest = self._manifest()
        served = A.load(self.folder) if served_manifest is not None else None
        if served is None:
            kind = result["kind"] = "full"
        with Store(snap_path) as snap:
            from ..data.forget import purge_forgotten
            from ..data.tombstones import Tombstones

            purge_forgotten(snap, Tombstones(s.privacy_dir), self.dataset)
            frame = events_frame(snap, self.dataset)
            if not len(frame):
                raise ValueError(f"{self.dataset} has no events with an item in the store (ingest it, or post "
                                 "events to a server of it, first)")
            since = ((served_manifest or {}).get("through") or {}).get("newest")
            cut = choose_slice(frame, since, c.holdout_share) if served is not None else None
            gated = served is not None and c.gate != "off"
            if gated and cut is None:
                return {"outcome": "deferred", "reason": "no event newer than the served artifact's data"}
            vectors_all = self._vectors(snap, frame)
            proto = recent_protocol(snap, self.dataset, frame, cut, c.max_cases) if cut is not None else None
            if gated and (proto is None or len(proto.test.targets) < c.min_cases):
                n = 0 if proto is None else len(proto.test.targets)
                return {"outcome": "deferred", "reason": f"{n} held-out cases < min_cases {c.min_cases}",
                        "cases": n}
            result["holdout"] = {"start": cut.start, "events": cut.events, "new_events": cut.new_events,
                                 "cases": len(proto.test.targets)} if cut is not None and proto else None
            # 2. the candidate, fitted on everything before the slice
            if kind == "full":
                candidate, report = self._fit_full(snap, proto, vectors_all, served)
                result["train_report"] = {k: report[k] for k in ("seconds", "best_source") if k in report}
                self._report = report
            else:
                candidate = self._fit_cheap(snap, frame[frame["t"] < cut.start] if cut else frame, served)
            # 3. the gate
            if gated:
                self._step("evaluating", f"{len(proto.test.targets):,} held-out cases")
                judged = self._judge(candidate, served, proto.test, proto.full.item_ids)
                result.update(judged)
                if not judged["promote"]:
                    return {"outcome": "rejected"}
            # 4. refit on every event and promote
            self._step("training", "refit on every event")
            if kind == "full":
                final = self._refit_all(snap, frame, candidate, vectors_all)
            else:
                final = self._fit_cheap(snap, frame, served)
            self._step("promoting", "writing the artifact")
            self._promote(snap, final, kind, result, served, work)
        return {"outcome": "promoted", "promoted": True}

    # -- fitting -------------------------------------------------------------------------------------------
    def _vectors(self, store: Store, frame: Any) -> Any:
        from ..knowledge.mine import Miner, item_vectors_for

        knowledge = self.settings.knowledge_dir / self.dataset
        if not (knowledge / "item_vectors.npy").is_file():
            self._step("training", "mining item text (first run)")
            Miner(store, self.settings.knowledge, self.settings.knowledge_dir, onnx_dir=self.settings.onnx_dir
                  ).run(self.dataset)
        return lambda item_ids: item_vectors_for(knowledge, item_ids)

    def _source_config(self, served: A.Artifact | None) -> dict[str, dict[str, Any]]:
        if self.config.sources:
            return self.config.sources
        if served is not None:
            return {n: dict(cfg) for n, cfg in served.pipeline.sources.config.items()}
        return {n: dict(v) for n, v in DEFAULT_SOURCES.items()}

    def _fit_full(self, store: Store, proto: Any, vectors_for: Any, served: A.Artifact | None
                  ) -> tuple[RankingPipeline, dict[str, Any]]:
        from ..evaluation.protocols import build
        from ..ranking.train import train_pipeline

        if proto is None:  # the first artifact, or no gate: the dataset's own protocol
            proto = build(store, self.dataset)
        vectors = vectors_for(proto.full.item_ids)
        # Validation chooses again: the served model's tuned values (epochs) were chosen on older data.
        config = {n: {k: v for k, v in cfg.items() if k not in TUNED_KEYS}
                  for n, cfg in self._source_config(served).items()}
        return train_pipeline(store, self.dataset, proto, vectors, config,
                              on_step=lambda m: self._step("training", m))

    def _refit_all(self, store: Store, frame: Any, candidate: RankingPipeline, vectors_for: Any) -> RankingPipeline:
        from ..ranking.train import item_info

        data = self._interactions(store, frame, None)
        vectors = vectors_for(data.item_ids)
        sources = candidate.sources.refit(data, vectors, on_step=lambda m: self._step("training", m))
        return RankingPipeline(sources, item_info(store, self.dataset, data, frame, vectors), candidate.ranker,
                               per_source=candidate.per_source, depth=candidate.depth, blend=candidate.blend)

    def _interactions(self, store: Store, frame: Any, item_ids: Any) -> Interactions:
        """Interactions of these events: in `item_ids`' index (events of other items dropped), or over the
        whole catalog when None; item groups attached."""
        from ..evaluation.protocols import item_group_labels

        order = ["t", "seq", "event_id"]
        if item_ids is None:
            catalog = [r[0] for r in store.con.execute("SELECT item_id FROM items WHERE dataset = ?",
                                                       [self.dataset]).fetchall()]
            data = Interactions.from_frame(frame, set(catalog) | set(frame["item_id"].astype(str)), order)
        else:
            known = set(map(str, item_ids))
            data = Interactions.from_frame(frame[frame["item_id"].astype(str).isin(known)], known, order)
            if list(map(str, data.item_ids)) != list(map(str, item_ids)):
                raise ValueError("the served artifact's item index is not sorted by id; run a full training")
        return data.with_groups(item_group_labels(store, self.dataset, data.item_ids))

    def _fit_cheap(self, store: Store, frame: Any, served: A.Artifact) -> RankingPipeline:
        """The served pipeline with its cheap sources refitted on these events in the served item index, and
        fresh item statistics (popularity, recency); the other sources and the ranker are kept."""
        from ..models import MODELS
        from ..ranking.train import item_info

        old = served.pipeline
        data = self._interactions(store, frame, old.sources.data.item_ids)
        vectors = old.info.vectors if old.info.vectors.shape[1] else None
        sources = Sources(old.sources.config, old.sources.seed)
        for name, model in old.sources.models.items():
            if name in self.config.cheap:
                self._step("training", f"source {name}: refitting on {sum(map(len, data.sequences)):,} events")
                params = {**old.sources.config[name], **model.tuned}
                sources.models[name] = MODELS[name](**params, seed=old.sources.seed).fit(data, vectors)
            else:
                sources.models[name] = model
        info = item_info(store, self.dataset, data, frame[frame["item_id"].astype(str).isin(set(map(str, data.item_ids)))],
                         vectors)
        if info.vectors.shape != old.info.vectors.shape:
            info.vectors = old.info.vectors
        # The kept ranker learned its splits on raw counts from the older, smaller data (the popularity source's
        # score, the item popularity feature). Counts grow with every event; rescaled to the old total they
        # keep the distribution the ranker was trained on, and still carry the new shares.
        old_total, new_total = float(old.info.popularity.sum()), float(info.popularity.sum())
        if old_total > 0 and new_total > 0:
            scale = old_total / new_total
            info.popularity = info.popularity * scale
            if "pop" in self.config.cheap and "pop" in sources.models:
                pop = sources.models["pop"]
                pop.popularity = pop.popularity * scale  # type: ignore[attr-defined]
        return RankingPipeline(sources, info, old.ranker, per_source=old.per_source, depth=old.depth, blend=old.blend)

    # -- the gate ------------------------------------------------------------------------------------------
    def _judge(self, candidate: RankingPipeline, served: A.Artifact, cases: Cases, item_ids: Any) -> dict[str, Any]:
        """Both models on the same held-out cases (full catalog, history masked); a case whose target a model
        does not know counts as a miss for it."""
        c = self.config
        n = len(cases.targets)
        out = {}
        for name, pipe in (("candidate", candidate), ("served", served.pipeline)):
            mapped, keep = remap(cases, np.asarray(item_ids), pipe.sources.data.item_ids)
            ndcg, hit = np.zeros(n), np.zeros(n)
            if len(keep):
                r = pipe.evaluate(mapped, True, ks=(10,))["ranker" if pipe.ranker is not None else "blend"]["_ranks"]
                ndcg[keep] = M.per_user_ndcg(r)
                hit[keep] = r < 10
            out[name] = (ndcg, hit)
        (cn, ch), (sn, sh) = out["candidate"], out["served"]
        paired = M.paired_bootstrap(cn, sn)
        if c.gate == "noninferior":
            promote = paired["ci_low"] >= -c.margin
        else:
            promote = paired["diff"] >= -c.margin
        return {"candidate": {"ndcg@10": round(float(cn.mean()), 5), "hit@10": round(float(ch.mean()), 5)},
                "serving": {"ndcg@10": round(float(sn.mean()), 5), "hit@10": round(float(sh.mean()), 5)},
                "difference": {k: round(v, 5) for k, v in paired.items()}, "cases": n,
                "gate": {"rule": c.gate, "margin": c.margin}, "promote": bool(promote)}

    # -- promotion -----------------------------------------------------------------------------------------
    def _promote(self, store: Store, pipeline: RankingPipeline, kind: str, result: dict[str, Any],
                 served: A.Artifact | None, work: Path) -> None:
        from ..data.tombstones import Tombstones

        s = self.settings
        now = time.time()
        trainer = {"kind": kind, "at": now, "full_at": now if kind == "full" else self._last_full,
                   "gate": {k: result.get(k) for k in ("candidate", "serving", "cases")}}
        report = {**(self._report if kind == "full" else {}), "trainer": trainer}
        tuning = served.search_tuning if served is not None else None
        if served is None:
            from ..search.build import tuning_dir

            tuned = tuning_dir(s, self.dataset) / "search.json"
            tuning = json.loads(tuned.read_text()) if tuned.is_file() else None
        encoder = {"model": s.knowledge.model, "max_length": s.knowledge.max_length}
        staged = work / "candidate"  # beside the served folder (same file system: the swap is two renames)
        A.save(staged, pipeline, store, self.dataset, report, tuning, encoder, extra={"trainer": trainer,
                                                                                     "encoder": encoder})
        A.load(staged)  # a candidate that does not load is never swapped in
        old = self.folder.with_name(f".{self.folder.name}.old-{int(now)}")
        if self.folder.exists():
            self.folder.rename(old)
        staged.rename(self.folder)
        fsync_dir(self.folder.parent)
        shutil.rmtree(old, ignore_errors=True)
        A.forget_tombstoned(self.folder, Tombstones(s.privacy_dir), self.dataset)  # forgotten meanwhile
        if kind == "full":
            self._last_full = now
        self._pending_at_last_run = 0  # new events now count from the promoted artifact's data
        self.status.promotions += 1
        self._request_reload()

    def _request_reload(self) -> None:
        """A reload control record in the shared event log: every serving worker reloads the folder."""
        from .shared import open_event_log

        elog = open_event_log(self.settings, self.dataset)
        try:
            elog.control({"kind": "reload", "artifact": str(self.folder), "at": time.time(), "by": "trainer"})
        finally:
            elog.close()
