"""Dense retrieval over LM item embeddings with FAISS: exact inner product for small catalogs, HNSW above.

The kind is chosen from the catalog size (`exact_max` items) and reported. The exact index stores the
vectors as float16 (FAISS scalar quantizer): a brute-force scan is bound by memory traffic, so halving it
halves the latency, while cosines move by about 1e-3. One query is searched on one thread: OpenMP
start-up costs more than it saves at this size, and a server runs requests side by side anyway. Filters are applied inside the
search with a FAISS ID selector (a bitmap of allowed rows), so the top-k is the top-k of the allowed items,
not a post-filtered remainder. Vectors are L2-normalised, so inner product is cosine similarity.
"""

from __future__ import annotations

import numpy as np

EXACT_MAX = 200_000


class DenseIndex:
    def __init__(self, exact_max: int = EXACT_MAX, hnsw_m: int = 32, ef_search: int = 128) -> None:
        self.exact_max, self.hnsw_m, self.ef_search = exact_max, hnsw_m, ef_search
        self.kind = "empty"
        self.vectors = np.zeros((0, 0), np.float32)
        self._index = None

    def build(self, vectors: np.ndarray) -> "DenseIndex":
        import faiss

        v = np.ascontiguousarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        self.vectors = v / np.maximum(norms, 1e-12)
        d = self.vectors.shape[1]
        if len(self.vectors) <= self.exact_max:
            self._index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
            self._index.train(self.vectors)
            self.kind = "exact"
        else:
            self._index = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self._index.hnsw.efConstruction = 200
            self.kind = f"hnsw(M={self.hnsw_m}, efSearch={self.ef_search})"
        self._index.add(self.vectors)
        return self

    def search(self, query: np.ndarray, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (rows, cosine) for one query vector among the allowed rows (mask True), best first."""
        import faiss

        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        k = min(k, len(self.vectors) if mask is None else int(mask.sum()))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        params = None
        if mask is not None:
            sel = faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))
            params = (faiss.SearchParametersHNSW(sel=sel, efSearch=max(self.ef_search, k)) if self.kind != "exact"
                      else faiss.SearchParameters(sel=sel))
        elif self.kind != "exact":
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            scores, rows = self._index.search(q, k, params=params)
        finally:
            faiss.omp_set_num_threads(threads)
        keep = rows[0] >= 0
        return rows[0][keep].astype(np.int64), scores[0][keep]

    def similarity(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact cosine of the query with the given rows (for fusing candidates from the other leg)."""
        q = np.asarray(query, np.float32).ravel()
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        return self.vectors[rows] @ q
