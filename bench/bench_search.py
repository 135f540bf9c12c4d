"""Search benchmark on Home Depot's real queries: index build (cold and warm), quality on unseen queries
(BM25 vs dense vs hybrid vs learned ranking, one run) and end-to-end single-query latency.

Ingests `homedepot` into a fresh temporary store, builds the engine twice (cold: every title encoded;
warm: vectors from the embedding cache), runs `shopmind evaluate-search`'s evaluation (tuning and training
on the training queries only), then times `engine.search()` for every test query one at a time with the
query-vector cache cleared (encoding included, facets included, default mode). Writes
bench/results/search-homedepot.{json,md,png}. Wall times are reported, never asserted.

    OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 SHOPMIND_DATA_DIR=../shared/data .venv/bin/python bench/bench_search.py
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from common import RESULTS, command_line, machine, require_data_dir, scratch_settings  # same folder
from shopmind.data.api import ingest_source, open_source
from shopmind.data.store import Store
from shopmind.evaluation import search_eval
from shopmind.search.build import finetune_encoder, load_engine


def _log(msg: str) -> None:
    print(f"  search: {msg}", file=sys.stderr, flush=True)


def latency(engine, queries: list[str], mode: str | None = None) -> dict[str, float]:
    engine._query_cache.clear()
    engine.search(queries[0], mode=mode)  # first call loads lazily initialised pieces
    engine._query_cache.clear()
    times = []
    for q in queries:
        t0 = time.perf_counter()
        engine.search(q, mode=mode)
        times.append((time.perf_counter() - t0) * 1e3)
    t = np.array(times)
    return {"queries": len(t), "p50_ms": round(float(np.percentile(t, 50)), 2),
            "p95_ms": round(float(np.percentile(t, 95)), 2), "p99_ms": round(float(np.percentile(t, 99)), 2),
            "mean_ms": round(float(t.mean()), 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="homedepot")
    p.add_argument("--finetune-steps", type=int, default=300,
                   help="fine-tune the encoder on the training queries for this many steps (0: skip the *-ft rows)")
    args = p.parse_args(argv)
    data_dir = require_data_dir()
    command = command_line("bench_search.py", argv)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shopmind-bench-") as tmp:
        settings = scratch_settings(tmp, data_dir)
        with Store(settings.store.path) as store:
            ingest_source(store, settings, open_source(settings, args.dataset))
            _log("cold build (every item text encoded)")
            _, cold = load_engine(store, settings, args.dataset)
            _log("warm build (vectors from the embedding cache)")
            engine, warm = load_engine(store, settings, args.dataset)
            finetune = None
            if args.finetune_steps:
                def finetune(eng, train):
                    last = [0.0]

                    def progress(name: str, done: int, total: int) -> None:
                        if total and (done == total or time.perf_counter() - last[0] > 30):
                            last[0] = time.perf_counter()
                            _log(f"{name}: {done:,}/{total:,}")
                    return finetune_encoder(store, settings, args.dataset, eng, train, steps=args.finetune_steps,
                                            on_step=progress)
            result = search_eval.run(store, engine, args.dataset, on_step=_log, finetune=finetune)
            test = sorted(search_eval.split_judgments(store, engine, args.dataset)[1]["test"])
        _log(f"latency over {len(test):,} test queries")
        result["latency"] = {mode or engine.default_mode: latency(engine, test, mode) for mode in ("bm25", "hybrid", None)}
        result["build"] = {"cold": cold, "warm": warm}
        result.update(machine=machine(), command=command, timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      seconds_total=round(time.perf_counter() - t_start, 1))
        files = search_eval.write(result, Path(tmp) / "out")
        if engine.encoder_path:  # the fine-tuned model lived in the temporary store: drop its ONNX export too
            for folder in settings.onnx_dir.glob(f"{Path(engine.encoder_path).name}-*"):
                shutil.rmtree(folder, ignore_errors=True)
        for path in files.values():
            shutil.copy(path, RESULTS / f"search-{args.dataset}{Path(path).suffix}")
    md = (RESULTS / f"search-{args.dataset}.md").read_text()
    lat = result["latency"]
    md += ("\n## Latency (one query at a time, query encoding and facets included)\n\n"
           "| mode | p50 ms | p95 ms | p99 ms | mean ms |\n|---|---|---|---|---|\n" +
           "".join(f"| {m} | {v['p50_ms']} | {v['p95_ms']} | {v['p99_ms']} | {v['mean_ms']} |\n" for m, v in lat.items()) +
           f"\n## Index build\n\ncold (all {cold['items']:,} item texts encoded: {cold['encoded']:,}): "
           f"{cold['seconds']['total']:.1f} s; warm (embedding cache): {warm['seconds']['total']:.1f} s "
           f"({warm['encoded']} encoded). Dense index: {result['dense_index']}; encoder backend "
           f"{cold['encoder'].get('backend')}.\n"
           f"\n{result['timestamp']} on {result['machine']['cpu']} ({result['machine']['cpu_count']} CPUs); "
           f"whole run {result['seconds_total']:.0f} s.\n\nReproduce: `make bench` or `{command}`\n")
    (RESULTS / f"search-{args.dataset}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
