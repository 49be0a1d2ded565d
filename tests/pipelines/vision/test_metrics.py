import numpy as np
import pytest

from pipelines.vision.metrics import (
    average_precision_at_k, count_relevant, rank_gallery, recall_at_k, retrieval_metrics)


def _unit(deg):
    r = np.deg2rad(deg)
    return np.array([np.cos(r), np.sin(r)], np.float32)


def test_hand_computed_ranking_and_metrics():
    # gallery on the unit circle; query q at 0 degrees -> ranking by angle: g0(10) g1(20) g2(30) g3(40)
    gallery = np.stack([_unit(10), _unit(20), _unit(30), _unit(40)])
    g_labels = ["b", "a", "b", "a"]
    queries = np.stack([_unit(0), _unit(45)])  # q1 ranking: g3(5) g2(15) g1(25) g0(35)
    q_labels = ["a", "b"]
    m = retrieval_metrics(queries, q_labels, gallery, g_labels, ks=(1, 2, 3), map_k=3)
    # q0 (a): rel = [0,1,0,1] ; q1 (b): rel = [0,1,0,1]
    assert m["p@1"] == 0.0
    assert m["recall@1"] == 0.0 and m["recall@2"] == 1.0 and m["recall@3"] == 1.0
    # AP@3 = (1/min(3,2)) * (P@2 * 1) = 0.5 * 0.5 = 0.25 for both queries
    assert m["map@3"] == pytest.approx(0.25)


def test_average_precision_hand_cases():
    assert average_precision_at_k(np.array([1, 0, 1, 0]), 4, 2) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision_at_k(np.array([1, 1, 1]), 3, 10) == pytest.approx(1.0)  # min(k, R) normalisation
    assert average_precision_at_k(np.array([0, 0, 1]), 3, 1) == pytest.approx(1 / 3)
    assert average_precision_at_k(np.array([0, 0]), 2, 0) == 0.0


def test_recall_at_k_is_hit_rate():
    rel = np.array([[0, 0, 1], [1, 0, 0], [0, 0, 0]])
    assert recall_at_k(rel, 1) == pytest.approx(1 / 3)
    assert recall_at_k(rel, 3) == pytest.approx(2 / 3)


def test_self_is_excluded_and_counted_out_of_relevant():
    x = np.stack([_unit(0), _unit(1), _unit(90)])
    ids = ["i0", "i1", "i2"]
    ranked = rank_gallery(x, x, 2, ids, ids)
    assert ranked[0, 0] == 1 and ranked[1, 0] == 0 and 2 not in ranked[2, :1]
    assert count_relevant(["a", "a", "b"], ["a", "a", "b"], ids, ids).tolist() == [1, 1, 0]
    m = retrieval_metrics(x, ["a", "a", "b"], x, ["a", "a", "b"], ks=(1,), map_k=1, query_ids=ids, gallery_ids=ids)
    assert m["n_queries"] == 2 and m["n_no_relevant"] == 1 and m["p@1"] == 1.0


def test_perfect_and_worst_embeddings():
    labels = [i % 3 for i in range(30)]
    emb = np.eye(3, dtype=np.float32)[labels] + 0.01 * np.random.default_rng(0).standard_normal((30, 3)).astype(np.float32)
    ids = list(range(30))
    good = retrieval_metrics(emb, labels, emb, labels, ks=(1, 5), map_k=5, query_ids=ids, gallery_ids=ids)
    assert good["p@1"] == 1.0 and good["map@5"] == pytest.approx(1.0)
    shifted = [(lbl + 1) % 3 for lbl in labels]  # every neighbour carries another label
    bad = retrieval_metrics(emb, shifted, emb, labels, ks=(1, 5), map_k=5, query_ids=ids, gallery_ids=ids)
    assert bad["p@1"] == 0.0 and bad["recall@5"] == 0.0


def test_tiny_gallery_never_counts_the_query_itself():
    # 4 items, 2 per label, every item is a query and in the gallery; k (10) > gallery size (4)
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    ids = ["i0", "i1", "i2", "i3"]
    same = retrieval_metrics(x, ["a", "a", "b", "b"], x, ["a", "a", "b", "b"], ks=(1, 10), map_k=10,
                             query_ids=ids, gallery_ids=ids)
    assert same["p@1"] == 1.0 and same["recall@10"] == 1.0 and same["map@10"] == pytest.approx(1.0)
    assert same["_ranked"].shape == (4, 3)
    assert all(i not in row for i, row in enumerate(same["_ranked"]))
    # labels a b a b: rankings (self excluded) give rel q0 [0,0,1], q1 [0,1,0], q2 [0,0,1], q3 [0,1,0]
    mixed = retrieval_metrics(x, ["a", "b", "a", "b"], x, ["a", "b", "a", "b"], ks=(1, 2, 10), map_k=10,
                              query_ids=ids, gallery_ids=ids)
    assert mixed["p@1"] == 0.0 and mixed["recall@2"] == 0.5 and mixed["recall@10"] == 1.0
    assert mixed["map@10"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
