"""Multi-task model: backbone -> (projection) -> L2-normalised embedding -> per-dataset heads.

The embedding (layer before the heads) is what retrieval uses; heads are dropped at export.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import SplitBackbone, create_backbone


class CosineHead(nn.Module):
    """Normalised-softmax classifier (Zhai & Wu, 2019): logits = s * cos(embedding, class weight)."""

    def __init__(self, dim: int, num_classes: int, scale: float = 16.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * dim ** -0.5)
        self.scale = scale

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.scale * emb @ F.normalize(self.weight, dim=1).t()


class Neck(nn.Module):
    """Pooled features -> optional linear projection -> L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int | None, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.proj = nn.Linear(in_dim, out_dim) if out_dim else nn.Identity()
        self.out_dim = out_dim or in_dim

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.dropout(f)).float(), dim=-1)


class EmbeddingNet(nn.Module):
    """What gets exported: images (NCHW float32) -> embedding (L2-normalised)."""

    def __init__(self, backbone: SplitBackbone, neck: Neck):
        super().__init__()
        self.backbone = backbone
        self.neck = neck

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(images))


class MultiTaskModel(nn.Module):
    def __init__(self, backbone: SplitBackbone, heads: dict[str, int], embedding_dim: int | None = 256,
                 head_type: str = "cosine", head_scale: float = 16.0, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.neck = Neck(backbone.num_features, embedding_dim, dropout)
        d = self.neck.out_dim
        self.heads = nn.ModuleDict({
            name: (CosineHead(d, n, head_scale) if head_type == "cosine" else nn.Linear(d, n))
            for name, n in heads.items()
        })
        self.head_names = list(heads)

    @property
    def embedding_dim(self) -> int:
        return self.neck.out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(images))

    def embed_prefix(self, h: torch.Tensor) -> torch.Tensor:
        """Embedding from cached frozen-prefix activations."""
        return self.neck(self.backbone.trunk(h))

    def head_logits(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: h(emb) for n, h in self.heads.items()}

    def embedding_net(self) -> EmbeddingNet:
        return EmbeddingNet(self.backbone, self.neck)


def build_model(cfg, heads: dict[str, int], weights: str | None = "config") -> tuple[MultiTaskModel, dict]:
    """Build from a VisionConfig; ``weights`` overrides cfg.model.weights ("none" for random init)."""
    mc = cfg.model
    w = mc.weights if weights == "config" else weights
    net, info = create_backbone(mc.backbone, w, mc.drop_path_rate)
    bb = SplitBackbone(net, trainable_blocks=-1)
    return MultiTaskModel(bb, heads, mc.embedding_dim, mc.head_type, mc.head_scale, mc.dropout), info


def multitask_loss(logits: dict[str, torch.Tensor], labels: torch.Tensor, head_names: list[str],
                   weights: list[float] | None = None, label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Sum over heads of weighted cross-entropy on the rows that carry that head's label.

    ``labels`` is int64 [B, n_heads] with -1 = no label (masked). A head with no labelled
    row in the batch contributes exactly zero (and no gradient).
    """
    total = logits[head_names[0]].new_zeros(())
    stats: dict[str, dict] = {}
    for j, name in enumerate(head_names):
        y = labels[:, j]
        mask = y >= 0
        n = int(mask.sum())
        if n == 0:
            stats[name] = {"n": 0, "loss": 0.0, "correct": 0}
            continue
        lg = logits[name][mask].float()
        loss = F.cross_entropy(lg, y[mask], label_smoothing=label_smoothing)
        w = 1.0 if weights is None else weights[j]
        total = total + w * loss
        stats[name] = {"n": n, "loss": float(loss.detach()), "correct": int((lg.argmax(1) == y[mask]).sum())}
    return total, stats
