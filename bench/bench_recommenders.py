"""Recommender benchmark on the published protocols: full ranking, validation selection, one test run.

For each dataset: ingest into a fresh temporary store, mine its item embeddings, build the protocol
(amazon-scientific: UniSRec split, history not masked; s3rec-beauty: S3-Rec leave-one-out, history
masked), run every model's small grid on validation, refit the best on train + valid and test once.
Writes bench/results/recommenders-<dataset>.{json,md,png}; the table lists the published results on the
same files and protocol. Wall times are reported, never asserted.

    OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 SHOPMIND_DATA_DIR=../shared/data \
        .venv/bin/python bench/bench_recommenders.py [--datasets amazon-scientific s3rec-beauty] [--models ...]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from common import RESULTS, command_line, machine, require_data_dir, scratch_settings  # same folder
from shopmind.data.api import ingest_source, open_source
from shopmind.data.registry import REGISTRY
from shopmind.data.store import Store
from shopmind.evaluation import protocols, report, runner
from shopmind.knowledge.mine import Miner, item_vectors_for


def _log(dataset: str):
    return lambda msg: print(f"  {dataset}: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["amazon-scientific", "s3rec-beauty"])
    p.add_argument("--models", nargs="+", default=["pop", "pop-cat", "itemknn", "als", "bpr", "lightgcn",
                                                      "twotower", "twotower-id", "sasrec", "sasrec-id", "hybrid"])
    args = p.parse_args(argv)
    data_dir = require_data_dir()
    command = command_line("bench_recommenders.py", argv)
    for dataset in args.datasets:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="shopmind-bench-") as tmp:
            settings = scratch_settings(tmp, data_dir)
            with Store(settings.store.path) as store:
                ingest_source(store, settings, open_source(settings, dataset))
                proto = protocols.build(store, dataset)
                # LM item embeddings for the text-enhanced models (mined with the default encoder).
                Miner(store, settings.knowledge, settings.knowledge_dir, onnx_dir=settings.onnx_dir).run(dataset)
            vectors = item_vectors_for(settings.knowledge_dir / dataset, proto.full.item_ids)
            result = runner.run(proto, args.models, item_vectors=vectors, on_step=_log(dataset),
                                log_dir=RESULTS / "runs" / dataset)
            spec = REGISTRY[dataset]
            result.update(dataset=dataset, published=spec.published if spec.published_protocol == proto.name else {},
                          seconds=round(time.perf_counter() - t0, 1), machine=machine(), command=command,
                          timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            files = report.write(result, Path(tmp) / "out")
            for path in files.values():
                shutil.copy(path, RESULTS / f"recommenders-{dataset}{Path(path).suffix}")
        md = (RESULTS / f"recommenders-{dataset}.md").read_text()
        md += (f"\n{result['timestamp']} on {result['machine']['cpu']} ({result['machine']['cpu_count']} CPUs); "
               f"whole run {result['seconds']:.0f} s.\n\nReproduce: `make bench` or `{command}`\n")
        (RESULTS / f"recommenders-{dataset}.md").write_text(md)
        print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
