"""Batched forward passes over cached uint8 images: frozen-prefix activations and embeddings."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .augment import make_view
from .preprocessing import PreprocessSpec, normalize


def to_input(batch_uint8: np.ndarray, spec: PreprocessSpec, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    x = torch.from_numpy(normalize(batch_uint8, spec)).to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _chunks(n: int, bs: int):
    for s in range(0, n, bs):
        yield s, min(n, s + bs)


@torch.no_grad()
def compute_prefix(backbone, images: np.ndarray, spec: PreprocessSpec, *, batch_size: int = 128, view: int = 0,
                   seed: int = 0, aug_cfg=None, device: torch.device | str = "cpu", desc: str = "prefix",
                   channels_last: bool = False) -> torch.Tensor:
    """Frozen-prefix activations (float32, on CPU) for one deterministic view of every image."""
    device = torch.device(device)
    was = backbone.training
    backbone.eval()
    outs = []
    for s, e in tqdm(list(_chunks(len(images), batch_size)), desc=desc, unit="batch", leave=False):
        batch = make_view(images[s:e], view, seed + s, aug_cfg, spec.pad_value) if view else images[s:e]
        outs.append(backbone.prefix(to_input(batch, spec, device, channels_last)).float().cpu())
    backbone.train(was)
    if not outs:
        return torch.zeros(0)
    return torch.cat(outs)


@torch.no_grad()
def embed_from_prefix(fn, prefix: torch.Tensor, *, batch_size: int = 256, device: torch.device | str = "cpu",
                      desc: str = "embed") -> np.ndarray:
    """Apply ``fn`` (prefix activations -> embedding) in batches; returns float32 numpy."""
    outs = []
    for s, e in tqdm(list(_chunks(len(prefix), batch_size)), desc=desc, unit="batch", leave=False):
        outs.append(fn(prefix[s:e].to(device)).float().cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)


@torch.no_grad()
def embed_images(fn, images: np.ndarray, spec: PreprocessSpec, *, batch_size: int = 128,
                 device: torch.device | str = "cpu", desc: str = "embed", channels_last: bool = False) -> np.ndarray:
    """Apply ``fn`` (normalised NCHW -> embedding) to uint8 NHWC images in batches."""
    device = torch.device(device)
    outs = []
    for s, e in tqdm(list(_chunks(len(images), batch_size)), desc=desc, unit="batch", leave=False):
        outs.append(fn(to_input(images[s:e], spec, device, channels_last)).float().cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)


def pooled_l2(backbone_trunk):
    """Baseline embedding: L2-normalised pooled backbone features (no projection)."""
    return lambda h: F.normalize(backbone_trunk(h).float(), dim=-1)
