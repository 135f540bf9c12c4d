"""Where the published PopRec numbers on s3rec-beauty come from: popularity counted with or without the test.

The S3-Rec paper reports PopRec HR@10 0.0152 / NDCG@10 0.0068 / HR@20 0.0217 / NDCG@20 0.0084. This script
scores the same S3-Rec leave-one-out test users with popularity counted on (a) train only, (b) train +
valid (what shopmind's `pop` uses for the test), (c) all interactions including the test items (a leak),
each with and without history masking, and writes bench/results/poprec-trace.{json,md}.

    SHOPMIND_DATA_DIR=../shared/data .venv/bin/python bench/trace_poprec_beauty.py
"""

from __future__ import annotations

import sys
import tempfile

import numpy as np

from common import command_line, require_data_dir, scratch_settings, write_results  # same folder
from shopmind.data.api import ingest_source, open_source
from shopmind.data.registry import REGISTRY
from shopmind.data.store import Store
from shopmind.evaluation import metrics as M
from shopmind.evaluation import protocols


def main(argv: list[str] | None = None) -> int:
    data_dir = require_data_dir()
    with tempfile.TemporaryDirectory(prefix="shopmind-trace-") as tmp:
        settings = scratch_settings(tmp, data_dir)
        with Store(settings.store.path) as store:
            ingest_source(store, settings, open_source(settings, "s3rec-beauty"))
            p = protocols.build(store, "s3rec-beauty")
    hist, targets = p.test.histories, p.test.targets
    with_test = p.full.item_popularity().copy()
    np.add.at(with_test, targets, 1)
    variants = {"train only": p.train.item_popularity(), "train + valid (shopmind pop)": p.full.item_popularity(),
                "all, test items included (leak)": with_test}
    rows = []
    for name, pop in variants.items():
        for mask in (True, False):
            ranks = []
            for s in range(0, len(targets), 2048):
                t = targets[s:s + 2048]
                masks = [np.setdiff1d(h, [x]) for h, x in zip(hist[s:s + 2048], t)] if mask else None
                ranks.append(M.target_ranks(np.tile(pop, (len(t), 1)), t, masks)[0])
            acc = M.accuracy(np.concatenate(ranks), (10, 20))
            rows.append({"popularity": name, "history_masked": mask,
                         **{k: round(v, 4) for k, v in acc.items() if k != "mrr"}})
    published = REGISTRY["s3rec-beauty"].published["PopRec"]
    keys = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
    md = ["# PopRec on s3rec-beauty: which popularity reproduces the published numbers", "",
          "| popularity counted on | history masked | HR@10 | NDCG@10 | HR@20 | NDCG@20 | equals published |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        same = all(abs(r[k] - published[k]) < 5e-5 for k in keys)
        md.append(f"| {r['popularity']} | {'yes' if r['history_masked'] else 'no'} | " +
                  " | ".join(f"{r[k]:.4f}" for k in keys) + f" | {'**yes**' if same else 'no'} |")
    md.append("| *published (S3-Rec paper)* | yes | " + " | ".join(f"{published[k]:.4f}" for k in keys) + " | |")
    md += ["", f"Reproduce: `{command_line('trace_poprec_beauty.py', argv)}`"]
    write_results("poprec-trace", {"rows": rows, "published": published}, "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
