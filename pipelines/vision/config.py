"""Configuration: defaults in code, YAML files override them, CLI overrides both."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from .preprocessing import PreprocessSpec

REPO_ROOT = Path(__file__).resolve().parents[2]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitConfig(_Strict):
    train: float = 0.7
    val: float = 0.1
    salt: str = "adrec-split-v1"


class FashionConfig(_Strict):
    enabled: bool = True
    heads: list[str] = Field(default_factory=lambda: ["articleType", "subCategory", "baseColour", "gender", "usage"])


class ClothingConfig(_Strict):
    enabled: bool = True
    head: str = "clothing_class"


class DataConfig(_Strict):
    root: str | None = None
    cache_dir: str = ".cache/vision"
    split: SplitConfig = SplitConfig()
    fashion: FashionConfig = FashionConfig()
    clothing: ClothingConfig = ClothingConfig()
    max_items_per_dataset: int | None = None  # tiny subsets for tests / smoke runs

    def resolved_root(self) -> Path:
        if self.root:
            return Path(self.root).expanduser().resolve()
        env = os.environ.get("ADREC_DATA_DIR")
        if env:
            return Path(env).expanduser().resolve()
        return (REPO_ROOT / ".." / "shared" / "data").resolve()

    def resolved_cache_dir(self) -> Path:
        p = Path(self.cache_dir)
        return p if p.is_absolute() else REPO_ROOT / p


class InputConfig(_Strict):
    height: int = 160
    width: int = 128
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize: Literal["letterbox", "stretch"] = "letterbox"
    pad_value: int = 255

    def spec(self) -> PreprocessSpec:
        return PreprocessSpec(height=self.height, width=self.width, mean=tuple(self.mean), std=tuple(self.std),
                              resize=self.resize, pad_value=self.pad_value)


class ModelConfig(_Strict):
    backbone: str = "tf_efficientnet_lite0"
    # "packaged:<name>" | "file:<path>" | "timm" (hub / local HF cache) | "none" (random init)
    weights: str = "packaged:efficientnet_lite0"
    embedding_dim: int | None = 256  # None / 0 -> no projection, embedding = pooled features
    head_type: Literal["cosine", "linear"] = "cosine"
    head_scale: float = 16.0
    dropout: float = 0.1
    drop_path_rate: float = 0.0


class WeakLabelConfig(_Strict):
    enabled: bool = True
    num_clusters: int = 32
    min_df: int = 2
    max_features: int = 4000
    weight: float = 0.5
    seed: int = 0


class StageConfig(_Strict):
    epochs: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    backbone_lr_mult: float = 0.1  # layer-wise LR: trunk gets lr * mult (stage 2)
    layer_decay: float = 1.0  # further multiply per block going down (1.0 = off)
    unfreeze_blocks: int = 2  # stage 2: number of last backbone blocks made trainable (-1 = all)
    warmup_epochs: float = 0.0


class AugmentConfig(_Strict):
    hflip: bool = True
    crop_pad: int = 8
    brightness: float = 0.1
    contrast: float = 0.1


class TrainConfig(_Strict):
    batch_size: int = 64
    eval_batch_size: int = 128
    label_smoothing: float = 0.1
    stage1: StageConfig = StageConfig(epochs=30, lr=3e-3, weight_decay=1e-4)
    stage2: StageConfig = StageConfig(epochs=4, lr=1e-3, weight_decay=0.02, backbone_lr_mult=0.1)
    augment: AugmentConfig = AugmentConfig()
    freeze_bn: bool = True  # keep BatchNorm statistics frozen when fine-tuning (small CPU batches)
    prefix_cache: bool = True  # cache frozen-prefix activations (CPU speed-up; EfficientNet-family only)
    prefix_cache_views: int = 2  # 0: identity, 1: hflip, >=2: random crop/jitter views
    amp: Literal["auto", "on", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    num_threads: int | None = 2
    device: str = "auto"
    checkpoint_every: int = 1


class TaskConfig(_Strict):
    name: str
    query: Literal["fashion", "clothing"]
    gallery: Literal["fashion", "clothing"]
    query_label: str
    gallery_label: str
    # optional map raw gallery label -> query label space (cross-domain tasks)
    gallery_label_map: dict[str, str] | None = None
    query_label_map: dict[str, str] | None = None


class EvalConfig(_Strict):
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10, 20])
    map_k: int = 10
    protocol: Literal["catalogue", "heldout"] = "catalogue"
    baselines: list[str] = Field(default_factory=lambda: ["imagenet", "random"])
    tasks: list[TaskConfig] = Field(default_factory=list)
    grid_queries: int = 6


class GeneratorConfig(_Strict):
    kind: Literal["diffusers", "tiny-random"] = "tiny-random"
    path: str | None = None
    steps: int = 4
    guidance_scale: float = 0.0
    image_size: int = 256
    num_queries: int = 32
    seed: int = 0


class ExportConfig(_Strict):
    opset: int = 18
    torchscript: bool = True
    parity_atol: float = 1e-4


class VisionConfig(_Strict):
    name: str = "adrec-visual-embedder"
    version: str = "0.1.0"
    seed: int = 17
    data: DataConfig = DataConfig()
    input: InputConfig = InputConfig()
    model: ModelConfig = ModelConfig()
    weak_labels: WeakLabelConfig = WeakLabelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    generative: GeneratorConfig = GeneratorConfig()
    export: ExportConfig = ExportConfig()


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(item: str) -> dict:
    """``a.b.c=value`` (value parsed as YAML) -> nested dict."""
    if "=" not in item:
        raise ValueError(f"override must look like key.path=value, got {item!r}")
    key, raw = item.split("=", 1)
    value: Any = yaml.safe_load(raw)
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> VisionConfig:
    data: dict = VisionConfig().model_dump()
    if path:
        with open(path) as fh:
            data = deep_merge(data, yaml.safe_load(fh) or {})
    for item in overrides or []:
        data = deep_merge(data, parse_override(item))
    return VisionConfig.model_validate(data)
