"""Explanations for recommended items, built only from signals that really produced or support them.

In order of preference:
1. `history`: the history item with the largest item-KNN co-visitation weight to it ("because you viewed
   X"), else the one with the closest LM text vector when that cosine is high ("similar to X");
2. `interests`: its mined keywords that also appear among the keywords of the user's history items;
3. `category`: its popularity rank in its leaf category ("#2 in Microscopes");
4. `popular`: its overall popularity.
Review aspects from the item's knowledge card ("reviewers mention: battery life") are added as evidence when
present. Exploration picks say so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp


@dataclass
class Explainer:
    titles: Sequence[str]
    keywords: Sequence[Sequence[str]]  # per item, mined keywords
    aspects: Sequence[Sequence[str]]  # per item, positive review aspects
    leaf: np.ndarray  # leaf-category index per item (-1 none)
    leaf_names: Sequence[str]
    popularity: np.ndarray
    similarity: sp.csr_matrix | None = None  # item-KNN co-visitation weights (items x items)
    vectors: np.ndarray | None = None  # L2-normalised LM vectors
    text_threshold: float = 0.6

    def __post_init__(self) -> None:
        # Popularity rank of every item inside its leaf category (1 = most popular).
        self.cat_rank = np.zeros(len(self.popularity), np.int64)
        order = np.lexsort((np.arange(len(self.popularity)), -self.popularity))
        seen: Counter[int] = Counter()
        for r in order:
            c = int(self.leaf[r])
            seen[c] += 1
            self.cat_rank[r] = seen[c]

    def user_keywords(self, history: Sequence[int], top: int = 20) -> list[str]:
        counts: Counter[str] = Counter()
        for r in list(history)[-50:]:
            counts.update(self.keywords[r])
        return [k for k, _ in counts.most_common(top)]

    def explain(self, row: int, history: Sequence[int], interests: Sequence[str] = (), explore: bool = False
                ) -> dict[str, Any]:
        return self.explain_all([row], history, interests, [explore])[0]

    def explain_all(self, rows: Sequence[int], history: Sequence[int], interests: Sequence[str] = (),
                    explore: Sequence[bool] | None = None) -> list[dict[str, Any]]:
        """One explanation per row; the history-to-item weights are computed once for the whole list."""
        rows = [int(r) for r in rows]
        explore = list(explore) if explore is not None else [False] * len(rows)
        h = np.asarray(list(history)[-50:], np.int64)
        knn = np.zeros((len(h), len(rows)))
        text = np.zeros((len(h), len(rows)))
        if len(h) and len(rows):
            if self.similarity is not None:
                knn = self.similarity[h][:, rows].toarray()
            if self.vectors is not None and self.vectors.shape[1]:
                text = self.vectors[h] @ self.vectors[rows].T
        wanted = set(interests)
        out = []
        for j, row in enumerate(rows):
            evidence: dict[str, Any] = {}
            if self.aspects[row]:
                evidence["review_aspects"] = list(self.aspects[row][:3])
            if explore[j]:
                out.append({"kind": "explore", "text": "New for you: few shoppers have seen this yet", **evidence})
                continue
            if len(h) and knn[:, j].max() > 0:
                src = int(h[int(np.argmax(knn[:, j]))])
                out.append({"kind": "history", "item_row": src, "weight": round(float(knn[:, j].max()), 4),
                            "text": f"Because you viewed “{self.titles[src]}”", **evidence})
                continue
            if len(h) and text[:, j].max() >= self.text_threshold:
                src = int(h[int(np.argmax(text[:, j]))])
                out.append({"kind": "similar_text", "item_row": src, "weight": round(float(text[:, j].max()), 4),
                            "text": f"Similar to “{self.titles[src]}”", **evidence})
                continue
            shared = [k for k in self.keywords[row] if k in wanted]
            if shared:
                out.append({"kind": "interests", "keywords": shared[:3],
                            "text": "Matches your interests: " + ", ".join(shared[:3]), **evidence})
                continue
            c = int(self.leaf[row])
            if c >= 0 and self.cat_rank[row] <= 20:
                out.append({"kind": "category", "category": self.leaf_names[c], "rank": int(self.cat_rank[row]),
                            "text": f"#{int(self.cat_rank[row])} most popular in {self.leaf_names[c]}", **evidence})
                continue
            out.append({"kind": "popular", "events": int(self.popularity[row]),
                        "text": f"Popular: {int(self.popularity[row]):,} shoppers interacted with it", **evidence})
        return out
