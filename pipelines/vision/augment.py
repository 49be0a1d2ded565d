"""Training-time augmentations on uint8 NHWC batches (numpy only; run before preprocessing.normalize).

No hue/saturation jitter: colour is a label (baseColour)."""

from __future__ import annotations

import numpy as np


def hflip(batch: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(batch[:, :, ::-1])


def augment_batch(batch: np.ndarray, rng: np.random.Generator, *, flip: bool = True, crop_pad: int = 8,
                  brightness: float = 0.1, contrast: float = 0.1, pad_value: int = 255) -> np.ndarray:
    """Random horizontal flip, random translation (pad + crop back to size), brightness/contrast jitter."""
    n, h, w, _ = batch.shape
    out = batch.copy()
    if flip:
        m = rng.random(n) < 0.5
        out[m] = out[m][:, :, ::-1]
    if crop_pad > 0:
        padded = np.pad(out, ((0, 0), (crop_pad, crop_pad), (crop_pad, crop_pad), (0, 0)), constant_values=pad_value)
        dy = rng.integers(0, 2 * crop_pad + 1, n)
        dx = rng.integers(0, 2 * crop_pad + 1, n)
        out = np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if brightness > 0 or contrast > 0:
        x = out.astype(np.float32)
        b = 1.0 + rng.uniform(-brightness, brightness, (n, 1, 1, 1)).astype(np.float32)
        c = 1.0 + rng.uniform(-contrast, contrast, (n, 1, 1, 1)).astype(np.float32)
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        x = (x - mean) * c + mean * b
        out = np.clip(x, 0, 255).astype(np.uint8)
    return out


def make_view(batch: np.ndarray, view: int, seed: int, aug_cfg, pad_value: int = 255) -> np.ndarray:
    """Deterministic view ``view`` of a batch: 0 = identity, 1 = hflip, >=2 = seeded random augmentation."""
    if view == 0:
        return batch
    if view == 1:
        return hflip(batch)
    rng = np.random.default_rng([seed, view])
    return augment_batch(batch, rng, flip=aug_cfg.hflip, crop_pad=aug_cfg.crop_pad, brightness=aug_cfg.brightness,
                         contrast=aug_cfg.contrast, pad_value=pad_value)
