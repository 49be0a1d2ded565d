"""Fixtures for the vision pipeline tests: tiny configs and synthetic (random-pixel) datasets.

Random pixels are used only for mechanics (masking, resume, export parity); quality claims use real data.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipelines.vision.config import load_config  # noqa: E402
from pipelines.vision.data import Dataset  # noqa: E402
from pipelines.vision.splits import assign_splits  # noqa: E402

REAL_DATA = load_config().data.resolved_root()


def make_dataset(name: str, n: int, h: int, w: int, seed: int, columns: dict[str, list[str]], titles: bool = False) -> Dataset:
    rng = np.random.default_rng(seed)
    ids = [f"{name[:1]}{i:04d}" for i in range(n)]
    splits = assign_splits(ids)
    attrs = {col: [vals[i % len(vals)] for i in range(n)] for col, vals in columns.items()}
    tt = [f"brand{i % 3} {attrs[next(iter(columns))][i]} item" for i in range(n)] if titles else None
    return Dataset(name, ids, rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8), np.asarray([splits[i] for i in ids]),
                   attrs, tt)


@pytest.fixture
def tiny_cfg(tmp_path):
    """A config small enough for CPU unit tests (random-init backbone, 32x32 input, few epochs)."""
    return load_config(None, [
        "model.weights=none", "model.embedding_dim=16", "input.height=32", "input.width=32",
        "train.batch_size=8", "train.eval_batch_size=16", "train.stage1.epochs=2", "train.stage2.epochs=2",
        "train.stage2.unfreeze_blocks=1", "train.prefix_cache_views=2", "weak_labels.enabled=false",
        f"data.cache_dir={tmp_path / 'cache'}", "train.num_threads=2", "model.dropout=0.2",
    ])


@pytest.fixture
def synthetic_datasets():
    fashion = make_dataset("fashion", 48, 32, 32, 0, {
        "articleType": ["Tshirts", "Shirts", "Watches"], "subCategory": ["Topwear", "Watches"],
        "baseColour": ["Black", "Blue", "Red", "White"], "gender": ["Men", "Women"], "usage": ["Casual", "Sports"]},
        titles=True)
    clothing = make_dataset("clothing", 40, 32, 32, 1, {"clothing_class": ["dress", "hat", "pants", "shoes"]})
    return {"fashion": fashion, "clothing": clothing}
