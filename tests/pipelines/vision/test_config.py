from pathlib import Path

import pytest
import timm
import torch

from pipelines.vision.backbones import create_backbone
from pipelines.vision.config import REPO_ROOT, load_config

CONFIGS = sorted((REPO_ROOT / "configs" / "vision").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert timm.is_model(cfg.model.backbone)
    assert cfg.model.weights.startswith(("packaged:", "file:")) or cfg.model.weights in ("none", "timm")


def test_yaml_and_cli_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  stage2: {epochs: 7}\nmodel: {embedding_dim: 64}\n")
    cfg = load_config(p, ["train.stage2.lr=0.01", "eval.ks=[1,3]"])
    assert cfg.train.stage2.epochs == 7 and cfg.train.stage2.lr == 0.01 and cfg.model.embedding_dim == 64
    assert cfg.train.stage1.epochs == load_config().train.stage1.epochs  # untouched defaults survive
    assert cfg.eval.ks == [1, 3]
    with pytest.raises(Exception):
        load_config(None, ["train.no_such_key=1"])  # typos are rejected, not ignored


def test_data_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("ADREC_DATA_DIR", str(tmp_path))
    assert load_config().data.resolved_root() == tmp_path.resolve()
    monkeypatch.delenv("ADREC_DATA_DIR")
    assert load_config().data.resolved_root() == (REPO_ROOT.parent / "shared" / "data").resolve()


@pytest.mark.parametrize("cfg_name", ["vit_gpu.yaml", "convnext_gpu.yaml"])
def test_gpu_configs_load_weights_from_a_file(cfg_name, tmp_path):
    """The GPU configs' code path: a timm-named state dict (with a classifier) in a file on a volume."""
    cfg = load_config(REPO_ROOT / "configs" / "vision" / cfg_name)
    name = {"vit_gpu.yaml": "vit_tiny_patch16_224", "convnext_gpu.yaml": "convnext_atto"}[cfg_name]  # small siblings
    src = timm.create_model(name, pretrained=False, num_classes=1000)
    f = Path(tmp_path) / "model.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(f))
    model, info = create_backbone(name, f"file:{f}", cfg.model.drop_path_rate)
    assert info["matched"] == "by name" and info["ignored"] == 2  # head.weight / head.bias (or head.fc.*)
    sd = model.state_dict()
    for k, v in sd.items():
        torch.testing.assert_close(v, src.state_dict()[k])
