"""Training mechanics on synthetic data: stages, exact checkpoint-resume equivalence, seeding."""

import json
from dataclasses import replace

import pytest
import torch
from timm.layers import DropPath
from torch import nn

from pipelines.vision.model import build_model
from pipelines.vision.train import Prepared, Trainer, _set_train_mode, load_model, prepare_data, save_model


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"tensor {k} differs")


def test_resume_equals_uninterrupted_run(tiny_cfg, synthetic_datasets, tmp_path):
    prep = prepare_data(tiny_cfg, synthetic_datasets)
    full = Trainer(tiny_cfg, tmp_path / "full", prep, progress=False).fit()
    ref = _state(full.model)
    # interrupted mid stage 1 and again mid stage 2, each time resumed by a fresh process-like Trainer
    out = tmp_path / "interrupted"
    Trainer(tiny_cfg, out, prep, progress=False).fit(stop_after=(1, 1))
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert (ck["stage"], ck["epoch"]) == (1, 1)
    Trainer(tiny_cfg, out, prep, progress=False).fit(resume=True, stop_after=(2, 1))
    resumed = Trainer(tiny_cfg, out, prep, progress=False).fit(resume=True)
    _assert_same(ref, _state(resumed.model))
    assert [(h["stage"], h["epoch"]) for h in resumed.history] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]


def test_resume_refuses_a_checkpoint_of_relabelled_heads_or_other_data(tiny_cfg, synthetic_datasets, tmp_path):
    prep = prepare_data(tiny_cfg, synthetic_datasets)
    Trainer(tiny_cfg, tmp_path, prep, progress=False).fit(stop_after=(1, 1))
    # the same heads with the same number of classes, one renumbered (as KMeans may renumber title clusters)
    relabelled = Prepared(prep.datasets, [replace(h, classes=h.classes[::-1]) if h.name == "baseColour" else h
                                          for h in prep.heads])
    with pytest.raises(ValueError, match="other classes for head.s. baseColour"):
        Trainer(tiny_cfg, tmp_path, relabelled, progress=False).fit(resume=True)
    fashion = prep.datasets["fashion"]
    renamed = replace(fashion, ids=["x" + i for i in fashion.ids])
    other_data = Prepared({**prep.datasets, "fashion": renamed}, prep.heads)
    with pytest.raises(ValueError, match="trained on other data"):
        Trainer(tiny_cfg, tmp_path, other_data, progress=False).fit(resume=True)
    resumed = Trainer(tiny_cfg, tmp_path, prep, progress=False).fit(resume=True, stop_after=(1, 2))  # same: resumes
    assert [(h["stage"], h["epoch"]) for h in resumed.history] == [(1, 1), (1, 2)]


def test_stage2_changes_only_unfrozen_blocks_and_logs_metrics(tiny_cfg, synthetic_datasets, tmp_path):
    prep = prepare_data(tiny_cfg, synthetic_datasets)
    tr = Trainer(tiny_cfg, tmp_path, prep, progress=False)
    before = _state(tr.model)
    res = tr.fit()
    after = _state(res.model)
    bb = res.model.backbone
    n_blocks = len(bb.blocks)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith(f"backbone.model.blocks.{n_blocks - 1}.") for k in changed)
    assert not any(k.startswith(("backbone.model.conv_stem", "backbone.model.bn1", "backbone.model.blocks.0.")) for k in changed)
    assert any(k.startswith("heads.") for k in changed) and any(k.startswith("neck.") for k in changed)
    # frozen BN statistics stay frozen (freeze_bn default)
    assert torch.equal(before["backbone.model.bn2.running_mean"], after["backbone.model.bn2.running_mean"])
    lines = [json.loads(x) for x in (tmp_path / "train_metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and all("val_acc" in x and "train_loss" in x for x in lines)


def test_same_seed_same_model_and_saved_model_reloads(tiny_cfg, synthetic_datasets, tmp_path):
    prep = prepare_data(tiny_cfg, synthetic_datasets)
    cfg = tiny_cfg.model_copy(update={"train": tiny_cfg.train.model_copy(update={
        "stage1": tiny_cfg.train.stage1.model_copy(update={"epochs": 1}),
        "stage2": tiny_cfg.train.stage2.model_copy(update={"epochs": 1})})})
    a = Trainer(cfg, tmp_path / "a", prep, progress=False).fit()
    b = Trainer(cfg, tmp_path / "b", prep, progress=False).fit()
    _assert_same(_state(a.model), _state(b.model))
    save_model(a, cfg, tmp_path / "m.pt")
    model, payload, _ = load_model(tmp_path / "m.pt")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), a.model.eval()(x))
    assert payload["data_hash"] == prep.data_hash and len(payload["heads"]) == 6


def test_no_prefix_cache_path_trains(tiny_cfg, synthetic_datasets, tmp_path):
    cfg = tiny_cfg.model_copy(update={"train": tiny_cfg.train.model_copy(update={
        "prefix_cache": False, "stage1": tiny_cfg.train.stage1.model_copy(update={"epochs": 1}),
        "stage2": tiny_cfg.train.stage2.model_copy(update={"epochs": 1})})})
    prep = prepare_data(cfg, synthetic_datasets)
    tr = Trainer(cfg, tmp_path, prep, progress=False)
    assert tr.store is None
    res = tr.fit()
    assert len(res.history) == 2 and all(h["train_loss"] > 0 for h in res.history)


def test_freeze_bn_freezes_only_batchnorm_in_stage2(tiny_cfg):
    cfg = tiny_cfg.model_copy(update={"model": tiny_cfg.model.model_copy(update={"drop_path_rate": 0.2})})
    model, _ = build_model(cfg, {"a": 3})
    model.backbone.set_trainable_blocks(1)
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    drops = [m for m in model.backbone.modules() if isinstance(m, DropPath)]
    assert bns and drops
    _set_train_mode(model, 2, freeze_bn=True)
    assert not any(m.training for m in bns)  # statistics frozen ...
    assert all(m.training for m in drops) and model.backbone.model.blocks[-1].training  # ... DropPath still active
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    model.backbone(torch.randn(4, 3, 32, 32))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    _set_train_mode(model, 1, freeze_bn=True)  # stage 1: the whole backbone is a fixed feature extractor
    assert not any(m.training for m in model.backbone.modules())
