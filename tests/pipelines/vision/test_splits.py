import random

import pytest

from pipelines.vision.splits import assign_splits, manifest_hash, split_of


def test_split_is_deterministic_and_order_independent():
    ids = [str(i) for i in range(3000)]
    a = assign_splits(ids)
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    assert assign_splits(shuffled) == a
    # adding items never moves existing ones
    b = assign_splits(ids + [f"new{i}" for i in range(500)])
    assert all(b[i] == a[i] for i in ids)


def test_split_fractions_close_to_config():
    s = assign_splits([str(i) for i in range(20000)], train=0.7, val=0.1)
    frac = {k: sum(v == k for v in s.values()) / len(s) for k in ("train", "val", "test")}
    assert abs(frac["train"] - 0.7) < 0.02 and abs(frac["val"] - 0.1) < 0.02 and abs(frac["test"] - 0.2) < 0.02


def test_salt_changes_assignment():
    ids = [str(i) for i in range(1000)]
    assert assign_splits(ids, salt="a") != assign_splits(ids, salt="b")


def test_invalid_fractions():
    with pytest.raises(ValueError):
        split_of("1", train=0.9, val=0.2)


def test_manifest_hash_order_free_and_sensitive():
    m1 = {"fashion": {"1": "train", "2": "test"}, "clothing": {"x": "val"}}
    m2 = {"clothing": {"x": "val"}, "fashion": {"2": "test", "1": "train"}}
    assert manifest_hash(m1) == manifest_hash(m2)
    m3 = {"fashion": {"1": "train", "2": "val"}, "clothing": {"x": "val"}}
    assert manifest_hash(m1) != manifest_hash(m3)
