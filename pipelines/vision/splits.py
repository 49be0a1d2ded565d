"""Deterministic train/val/test splits by item id, and a hash of the split manifests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

SPLITS = ("train", "val", "test")


def split_of(item_id: str, train: float = 0.7, val: float = 0.1, salt: str = "adrec-split-v1") -> str:
    """Assign an id to a split from a salted SHA-1 of the id alone.

    Independent of row order, of the other ids and of the machine, so adding
    items never moves existing ones between splits.
    """
    if not (0 < train < 1 and 0 <= val < 1 and train + val < 1):
        raise ValueError(f"invalid split fractions train={train} val={val}")
    digest = hashlib.sha1(f"{salt}:{item_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < train:
        return "train"
    if u < train + val:
        return "val"
    return "test"


def assign_splits(ids: Iterable[str], train: float = 0.7, val: float = 0.1, salt: str = "adrec-split-v1") -> dict[str, str]:
    return {str(i): split_of(str(i), train, val, salt) for i in ids}


def manifest_hash(manifests: Mapping[str, Mapping[str, str]]) -> str:
    """SHA-256 over {dataset: {id: split}} in a canonical order (the model card's data hash)."""
    canon = {name: dict(sorted(m.items())) for name, m in sorted(manifests.items())}
    return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()
