"""The synthetic-shop generator of the cost-growth benchmark (bench/scale_data.py) on a tiny size: deterministic,
distinct ids, fitted on the real data, ingestible with no rejects, and with the popularity skew it was fitted to."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import scale_data  # noqa: E402  (bench/ is not a package)

from shopmind.data.adapters.generic import GenericAdapter, Mapping  # noqa: E402
from shopmind.data.ingest import Ingestor  # noqa: E402
from shopmind.data.store import open_store  # noqa: E402

ITEMS, EVENTS = 2_000, 40_000


@pytest.fixture(scope="module")
def fitted(data_dir: Path) -> tuple[dict, scale_data.Pool]:
    return scale_data.fit_real(data_dir), scale_data.load_pool(data_dir)


@pytest.fixture(scope="module")
def shop(fitted, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    fit, pool = fitted
    out = tmp_path_factory.mktemp("shop")
    summary = scale_data.generate(out, ITEMS, EVENTS, seed=3, data_dir=data_dir, part_events=15_000, fit=fit, pool=pool,
                                  progress=False)
    return out, summary


def test_fit_is_sane(fitted) -> None:
    fit, pool = fitted
    z = fit["zipf_by_dataset"]
    # The target is the mean of the two e-commerce sequence sets and close to each of them (same kind of data).
    assert 0.3 < fit["zipf_target"] < 1.2
    for name in fit["zipf_target_from"]:
        assert abs(z[name] - fit["zipf_target"]) < 0.1, z
    assert 0.0 < fit["same_leaf"]["p_same"] < fit["same_leaf"]["observed"] < 1.0
    assert 1.0 < fit["length_lognormal"]["mu"] < 3.5 and fit["length_lognormal"]["sigma"] > 0
    assert abs(sum(fit["stars"].values()) - 1.0) < 1e-3
    assert len(pool) > 50_000 and len(pool.paths) > 1_000  # every real catalog is in the pool
    assert scale_data.head_noun("Leviton 3 ft. Cat 5e Patch Cord - Yellow") == "Cord"


def test_deterministic(shop, fitted, data_dir: Path, tmp_path: Path) -> None:
    out, summary = shop
    fit, pool = fitted
    again = scale_data.generate(tmp_path, ITEMS, EVENTS, seed=3, data_dir=data_dir, part_events=15_000, fit=fit,
                                pool=pool, progress=False)
    assert {k: v for k, v in again.items() if not k.startswith("seconds")} == \
        {k: v for k, v in summary.items() if not k.startswith("seconds")}
    assert pq.read_table(tmp_path / "items.parquet").equals(pq.read_table(out / "items.parquet"))
    parts = sorted((out / "events").glob("*.parquet"))
    assert len(parts) == summary["parts"] >= 2
    for p in parts:
        assert pq.read_table(tmp_path / "events" / p.name).equals(pq.read_table(p))
    other = scale_data.generate(tmp_path / "other", ITEMS, 1_000, seed=4, data_dir=data_dir, fit=fit, pool=pool,
                                progress=False)
    assert other["events"] == 1_000
    assert not pq.read_table(tmp_path / "other" / "items.parquet").equals(pq.read_table(out / "items.parquet"))


def test_ids_counts_and_times(shop) -> None:
    out, summary = shop
    items = pq.read_table(out / "items.parquet").to_pandas()
    events = pq.read_table(out / "events").to_pandas()
    assert len(items) == ITEMS and items["item_id"].is_unique
    assert items["title"].str.len().min() > 0 and items["categories"].map(len).min() >= 1
    assert len(events) == summary["events"] == EVENTS
    assert set(events["item_id"]) <= set(items["item_id"])
    assert events.groupby("user_id").size().min() >= 1
    # Per user: positions 0..n-1 in order and strictly increasing times.
    ev = events.sort_values(["user_id", "seq"])
    assert (ev.groupby("user_id")["timestamp"].diff().dropna() > np.timedelta64(0, "s")).all()
    assert not events.duplicated(["user_id", "seq"]).any()


def test_ingests_without_rejects(shop, tmp_path: Path) -> None:
    out, _ = shop
    with open_store(tmp_path / "s.duckdb") as store:
        for kind, path in (("items", out / "items.parquet"), ("events", out / "events")):
            rep = Ingestor(store, "shop").run(GenericAdapter(path, Mapping.from_toml(out / f"{kind}.mapping.toml")))
            assert rep.rejected == 0 and rep.status == "completed", rep
        stats = store.stats("shop")
    assert stats["items"] == ITEMS and stats["events"] == EVENTS and stats["items_without_metadata"] == 0
    assert stats["event_types"] == {"rating": EVENTS}


def test_popularity_and_sequences_match_the_fit(shop) -> None:
    out, summary = shop
    fit = summary["fit"]
    got = summary["output"]
    assert abs(got["zipf"] - fit["zipf_target"]) < 0.1, (got, fit["zipf_target"])
    counts = pq.read_table(out / "events", columns=["item_id"]).to_pandas()["item_id"].value_counts().to_numpy()
    assert abs(scale_data.zipf_exponent(counts) - got["zipf"]) < 1e-3  # the summary measures what was written
    # Co-visitation: at least the fitted within-leaf share, well above popularity alone.
    assert fit["same_leaf"]["p_same"] - 0.03 < got["same_leaf_share"] < fit["same_leaf"]["p_same"] + 0.2
    length = fit["length_lognormal"]
    assert abs(got["mean_events_per_user"] - np.exp(length["mu"] + length["sigma"] ** 2 / 2)) < 1.5
