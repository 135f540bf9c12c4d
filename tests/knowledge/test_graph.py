"""Item graph building blocks on hand-made data."""

from __future__ import annotations

import numpy as np

from shopmind.knowledge.graph import co_interaction_edges, next_item_edges, relation_edges, taxonomy


def test_next_item_edges() -> None:
    edges = next_item_edges([["a", "b", "c"], ["a", "b"], ["c", "c", "a"]])
    assert edges == {("a", "b"): 2, ("b", "c"): 1, ("c", "a"): 1}


def test_co_interaction_cosine() -> None:
    users = ["u1", "u1", "u2", "u2", "u3", "u1"]
    items = ["a", "b", "a", "b", "a", "a"]  # a: u1,u2,u3 ; b: u1,u2 (repeat u1-a ignored)
    df = co_interaction_edges(users, items)
    w = {(r.src, r.dst): r.weight for r in df.itertuples()}
    assert np.isclose(w[("a", "b")], 2 / np.sqrt(3 * 2)) and np.isclose(w[("b", "a")], w[("a", "b")])
    assert set(df["kind"]) == {"co_interaction"}


def test_relations_and_taxonomy() -> None:
    rel = relation_edges({"a": {"also_buy": ["b", "x", "b", "a"]}}, {"a", "b"})
    assert rel[["src", "dst", "kind"]].values.tolist() == [["a", "b", "also_buy"]]
    tax = taxonomy([("a", ["Tools", "Drills"], "Acme"), ("b", ["Tools", "Saws"], "Acme"), ("c", [], None)])
    nodes = {r.node_id: r for r in tax.itertuples()}
    assert nodes["cat:Tools"].item_count == 2 and nodes["cat:Tools > Drills"].parent_id == "cat:Tools"
    assert nodes["brand:Acme"].item_count == 2 and nodes["cat:Tools > Saws"].depth == 2
