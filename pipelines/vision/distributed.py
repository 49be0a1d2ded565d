"""torchrun / DDP helpers (no-ops in a single process)."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1); returns (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def shard(indices: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Equal-length shards (pads by wrapping) so every rank runs the same number of steps."""
    if world <= 1:
        return indices
    n = int(np.ceil(len(indices) / world)) * world
    padded = np.resize(indices, n)
    return padded[rank::world]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def local_device(requested: str = "auto") -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")
