"""kNN retrieval metrics (cosine similarity on L2-normalised embeddings).

Definitions, per query q with ranked gallery list r_1, r_2, ... (self excluded):
  rel_i       = 1 if label(r_i) == label(q) else 0,  R_q = number of relevant gallery items
  P@1         = rel_1
  Recall@k    = 1 if any(rel_1..rel_k) else 0      ("hit rate", the usual metric-learning Recall@k)
  AP@k        = (1 / min(k, R_q)) * sum_{i<=k} rel_i * Precision@i
Reported values are means over queries; queries with R_q == 0 are excluded from every metric
(and counted in ``n_no_relevant``).
"""

from __future__ import annotations

import numpy as np


def rank_gallery(queries: np.ndarray, gallery: np.ndarray, k: int, query_ids=None, gallery_ids=None,
                 chunk: int = 1024) -> np.ndarray:
    """Indices [Q, k] of the k most cosine-similar gallery items; an item never retrieves itself
    (same id in ``query_ids`` and ``gallery_ids``), so when queries are in the gallery at most
    ``len(gallery) - 1`` columns are returned."""
    q = _l2(queries)
    g = _l2(gallery)
    gid_pos = None
    if query_ids is not None and gallery_ids is not None:
        gid_pos = {gid: j for j, gid in enumerate(gallery_ids)}
    # a query found in the gallery has only len(g) - 1 candidates: its own (-inf) entry sorts last and must
    # never reach the top-k (it would count as a hit for recall and AP)
    in_gallery = gid_pos is not None and any(qid in gid_pos for qid in query_ids)
    k = max(0, min(k, len(g) - 1 if in_gallery else len(g)))
    out = np.empty((len(q), k), np.int64)
    for s in range(0, len(q), chunk):
        sims = q[s:s + chunk] @ g.T
        if gid_pos is not None:
            for r, qid in enumerate(query_ids[s:s + chunk]):
                j = gid_pos.get(qid)
                if j is not None:
                    sims[r, j] = -np.inf
        # stable tie-break by gallery index: argsort on (-sim) with kind="stable"
        out[s:s + chunk] = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return out


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def relevance(ranked: np.ndarray, query_labels, gallery_labels) -> np.ndarray:
    g = np.asarray(gallery_labels, dtype=object)
    q = np.asarray(query_labels, dtype=object)
    return (g[ranked] == q[:, None]).astype(np.int8)


def precision_at_1(rel: np.ndarray) -> float:
    return float(rel[:, 0].mean()) if len(rel) else float("nan")


def recall_at_k(rel: np.ndarray, k: int) -> float:
    return float(rel[:, :k].any(axis=1).mean()) if len(rel) else float("nan")


def average_precision_at_k(rel_row: np.ndarray, k: int, n_relevant: int) -> float:
    if n_relevant <= 0:
        return 0.0
    r = rel_row[:k].astype(np.float64)
    prec = np.cumsum(r) / np.arange(1, len(r) + 1)
    return float((prec * r).sum() / min(k, n_relevant))


def map_at_k(rel: np.ndarray, k: int, n_relevant: np.ndarray) -> float:
    if not len(rel):
        return float("nan")
    return float(np.mean([average_precision_at_k(rel[i], k, int(n_relevant[i])) for i in range(len(rel))]))


def count_relevant(query_labels, gallery_labels, query_ids=None, gallery_ids=None) -> np.ndarray:
    """Per query: number of gallery items with its label, not counting the query itself."""
    from collections import Counter

    counts = Counter(gallery_labels)
    out = np.asarray([counts.get(lbl, 0) for lbl in query_labels], np.int64)
    if query_ids is not None and gallery_ids is not None:
        gset = {gid: lbl for gid, lbl in zip(gallery_ids, gallery_labels)}
        for i, (qid, lbl) in enumerate(zip(query_ids, query_labels)):
            if qid in gset and gset[qid] == lbl:
                out[i] -= 1
    return out


def retrieval_metrics(queries: np.ndarray, query_labels, gallery: np.ndarray, gallery_labels, *,
                      ks=(1, 5, 10), map_k: int = 10, query_ids=None, gallery_ids=None) -> dict:
    """All retrieval metrics for one task. Queries with no relevant gallery item are excluded."""
    query_labels = list(query_labels)
    gallery_labels = list(gallery_labels)
    n_rel = count_relevant(query_labels, gallery_labels, query_ids, gallery_ids)
    keep = np.flatnonzero(n_rel > 0)
    kmax = max(max(ks), map_k)
    q = np.asarray(queries)[keep]
    qids = None if query_ids is None else [query_ids[i] for i in keep]
    ranked = rank_gallery(q, gallery, kmax, qids, gallery_ids)
    rel = relevance(ranked, [query_labels[i] for i in keep], gallery_labels)
    out = {"n_queries": int(len(keep)), "n_gallery": int(len(gallery_labels)),
           "n_no_relevant": int(len(n_rel) - len(keep)), "p@1": precision_at_1(rel)}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(rel, k)
    out[f"map@{map_k}"] = map_at_k(rel, map_k, n_rel[keep])
    out["_ranked"] = ranked
    out["_query_index"] = keep
    return out
