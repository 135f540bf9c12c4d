"""`shopmind search` and `shopmind evaluate-search` end to end on a real catalog (Amazon gift cards), with a
generic judgments CSV built from the catalog itself, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopmind.cli import app
from shopmind.data.store import Store


@pytest.fixture(scope="module")
def store_copy(demo_run: dict, onnx_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("cli-search")
    shutil.copy(demo_run["store_path"], tmp / "s.duckdb")
    env = {"SHOPMIND_CONFIG": "", "SHOPMIND_KNOWLEDGE_ONNX_DIR": str(onnx_dir)}
    return tmp / "s.duckdb", env


def _run(store: Path, env: dict, *args: str):
    return CliRunner().invoke(app, ["--store", str(store), *args], env=env)


def test_search_command(store_copy) -> None:
    store, env = store_copy
    r = _run(store, env, "search", "starbuks gift card", "-d", "amazon2018-giftcards", "--size", "5", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["corrected"] == "starbucks gift card" and res["total"] > 0 and len(res["items"]) == 5
    assert any("starbucks" in i["title"].lower() for i in res["items"])
    assert res["facets"]["brand"] and res["engine"]["dense_index"] == "exact"
    r = _run(store, env, "search", "coffee", "-d", "amazon2018-giftcards", "-f", "price=10..", "-f", "brand=Starbucks",
             "--json")
    assert r.exit_code == 0, r.output
    assert all("starbucks" in i["title"].lower() for i in json.loads(r.stdout)["items"])


@pytest.mark.parametrize("args, message", [
    (["-f", "colour=red"], "unknown key"), (["-f", "price=cheap"], "LO..HI"), (["--mode", "magic"], "unknown mode"),
    (["-d", "nope"], "not in the store")])
def test_search_bad_input_is_one_clear_line(store_copy, args: list[str], message: str) -> None:
    store, env = store_copy
    base = ["search", "coffee"] + ([] if "-d" in args else ["-d", "amazon2018-giftcards"])
    r = _run(store, env, *base, *args)
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.output


def test_evaluate_search_with_a_generic_judgments_file(store_copy, tmp_path: Path) -> None:
    store, env = store_copy
    with Store(store, read_only=True) as s:
        rows = s.con.execute("SELECT item_id, brand FROM items WHERE dataset = 'amazon2018-giftcards' AND brand IS NOT NULL "
                             "ORDER BY item_id").fetchall()
    brands: dict[str, list[str]] = {}
    for item, brand in rows:
        brands.setdefault(brand, []).append(item)
    lines = ["query,item_id,grade"]
    other = rows[0][0]
    for brand, items in sorted(brands.items())[:120]:
        lines += [f"\"{brand} gift card\",{i},3" for i in items[:3]] + [f"\"{brand} gift card\",{other},1"]
    path = tmp_path / "judgments.csv"
    path.write_text("\n".join(lines) + "\n")
    r = _run(store, env, "evaluate-search", "-d", "amazon2018-giftcards", "--judgments", str(path),
             "--out", str(tmp_path / "out"), "--finetune-steps", "3", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert sum(res["queries"].values()) == 120 and set(res["results"]) == {
        "bm25", "dense", "rrf", "hybrid", "ltr-text", "ltr", "dense-ft", "hybrid-ft", "ltr-ft"}
    ft = res["tuned"]["finetuned"]["encoder"]
    assert ft["steps"] == 3 and ft["encoded"] > 1000 and res["final"] == "ltr-ft"
    assert res["results"]["bm25"]["ndcg@10"] > 0.5  # brand names are in the titles
    for f in res["files"].values():
        assert Path(f).is_file()
    assert (Path(res["tuning_saved"]) / "search.json").is_file()
    r = _run(store, env, "search", "amazon", "-d", "amazon2018-giftcards", "--json")
    engine = json.loads(r.stdout)["engine"]
    assert json.loads(r.stdout)["mode"] == "ltr" and engine["tuning"]["ranker"]
    assert engine["encoder"]["model"] == ft["folder"] == engine["tuning"]["encoder"] and engine["encoded"] == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    r = _run(store, env, "evaluate-search", "-d", "amazon2018-giftcards", "--judgments", str(bad))
    assert r.exit_code == 2 and "expected columns" in r.stderr
