"""The item graph: co-interaction edges with weights, catalog relations, and the category/brand tree.

Edge kinds:
- `next`: item b followed item a in a user's history (by time, else sequence position); weight = count.
- `co_interaction`: items shared by the same users, cosine of their user columns (top neighbours per item).
- `also_buy`, `also_view`, ... : the catalog's own relations (Amazon metadata), weight 1, in-catalog targets.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp


def next_item_edges(histories: Iterable[Sequence[str]]) -> Counter[tuple[str, str]]:
    """Directed transitions between consecutive distinct items of each ordered history."""
    edges: Counter[tuple[str, str]] = Counter()
    for seq in histories:
        for a, b in zip(seq, seq[1:]):
            if a != b:
                edges[(a, b)] += 1
    return edges


def co_interaction_edges(users: Sequence[str], items: Sequence[str], top_k: int = 20,
                         min_common: int = 1) -> pd.DataFrame:
    """Item-item cosine over binary user-item incidence; the top_k neighbours of each item."""
    u_codes, u_index = pd.factorize(pd.Series(users))
    i_codes, i_index = pd.factorize(pd.Series(items))
    x = sp.csr_matrix((np.ones(len(u_codes), np.float32), (u_codes, i_codes)),
                      shape=(len(u_index), len(i_index)))
    x.data[:] = 1.0  # the constructor sums repeated (user, item) pairs: back to binary
    common = (x.T @ x).tocsr()
    common.setdiag(0)
    common.eliminate_zeros()
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
    rows, cols, vals = [], [], []
    for i in range(common.shape[0]):
        start, end = common.indptr[i], common.indptr[i + 1]
        idx, cnt = common.indices[start:end], common.data[start:end]
        keep = cnt >= min_common
        idx, cnt = idx[keep], cnt[keep]
        if not len(idx):
            continue
        cos = cnt / (norms[i] * norms[idx])
        order = np.argsort(-cos, kind="stable")[:top_k]
        rows.extend([i] * len(order))
        cols.extend(idx[order])
        vals.extend(cos[order])
    return pd.DataFrame({"src": np.asarray(i_index)[rows] if rows else [], "dst": np.asarray(i_index)[cols] if cols else [],
                         "kind": "co_interaction", "weight": np.asarray(vals, np.float64)})


def relation_edges(related: Mapping[str, Mapping[str, Sequence[str]]], catalog: set[str]) -> pd.DataFrame:
    """Catalog relations (e.g. also_buy) whose target is in the catalog."""
    rows = [(src, dst, kind) for src, rels in related.items() for kind, dsts in rels.items()
            for dst in dict.fromkeys(dsts) if dst in catalog and dst != src]
    return pd.DataFrame(rows, columns=["src", "dst", "kind"]).assign(weight=1.0)


def taxonomy(items: Iterable[tuple[str, Sequence[str], str | None]]) -> pd.DataFrame:
    """Category tree nodes (one per path prefix) and brand nodes, with how many items sit below each."""
    counts: Counter[tuple[str, ...]] = Counter()
    brands: Counter[str] = Counter()
    for _, path, brand in items:
        path = tuple(p for p in path if p)
        for depth in range(1, len(path) + 1):
            counts[path[:depth]] += 1
        if brand:
            brands[brand] += 1
    rows = [{"node_id": "cat:" + " > ".join(p), "parent_id": ("cat:" + " > ".join(p[:-1])) if len(p) > 1 else None,
             "kind": "category", "name": p[-1], "depth": len(p), "item_count": n} for p, n in counts.items()]
    rows += [{"node_id": "brand:" + b, "parent_id": None, "kind": "brand", "name": b, "depth": 1, "item_count": n}
             for b, n in brands.items()]
    return pd.DataFrame(rows, columns=["node_id", "parent_id", "kind", "name", "depth", "item_count"])
