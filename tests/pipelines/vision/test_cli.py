"""End-to-end CLI on a tiny real-data subset (mechanics only: 2 epochs, 48x40 input)."""

import json

import pytest

from pipelines.vision.cli import main

from .conftest import REAL_DATA

pytestmark = pytest.mark.skipif(not (REAL_DATA / "clothing").is_dir(), reason="shared data not present")


def test_run_writes_model_export_and_report(tmp_path):
    out = tmp_path / "out"
    rc = main(["run", "--out", str(out), "--set", "data.max_items_per_dataset=80", "--set", "input.height=48",
               "--set", "input.width=40", "--set", "train.stage1.epochs=1", "--set", "train.stage2.epochs=1",
               "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "weak_labels.num_clusters=4",
               "--set", "train.batch_size=16"])
    assert rc == 0
    for f in ("model.pt", "model.onnx", "model.torchscript.pt", "model_card.json", "report.json", "report.md",
              "recall_at_k.png", "query_grid.png", "evaluation.json", "train_metrics.jsonl"):
        assert (out / f).is_file(), f
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["evaluation"]["models"]) == {"finetuned", "imagenet", "random"}
    tasks = rep["evaluation"]["models"]["finetuned"]["catalogue"]
    assert {"fashion_articleType", "fashion_baseColour", "clothing_class"} <= set(tasks)
    card = json.loads((out / "model_card.json").read_text())
    assert card["parity"]["ok"] and card["metrics"]["finetuned"]["clothing_class"]["p@1"] == tasks["clothing_class"]["p@1"]
    assert any(h["name"] == "title_cluster" for h in card["heads_trained"])
    # the stand-alone subcommands work on the same output directory
    assert main(["evaluate", "--out", str(out), "--set", "data.max_items_per_dataset=80",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    small = ["--set", "data.max_items_per_dataset=80", "--set", "input.height=48", "--set", "input.width=40",
             "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "weak_labels.num_clusters=4",
             "--set", "train.stage1.epochs=1", "--set", "train.stage2.epochs=1", "--set", "train.batch_size=16"]
    assert main(["report", "--out", str(out), *small]) == 0
    assert json.loads((out / "report.json").read_text())["run"]["backbone"] == "tf_efficientnet_lite0"  # run info kept
    assert main(["ablate-weak-labels", "--out", str(out), *small]) == 0
    ab = json.loads((out / "weak_label_ablation.json").read_text())
    assert set(ab["per_task"]) == set(tasks) and "verdict" in ab
    assert "Weak-label (title-cluster) head ablation" in (out / "report.md").read_text()
    assert main(["generative-eval", "--out", str(out), "--tiny", *small, "--set", "generative.num_queries=3",
                 "--set", "generative.image_size=32"]) == 0
    gen = json.loads((out / "generative.json").read_text())
    assert gen["num_queries"] == 3 and all(0 <= v <= 1 for v in gen["metrics"].values())


def test_unknown_backbone_exits_with_clear_error(tmp_path, caplog):
    rc = main(["train", "--out", str(tmp_path), "--set", "model.backbone=not_a_real_net", "--set",
               "data.max_items_per_dataset=20", "--set", f"data.cache_dir={tmp_path / 'cache'}"])
    assert rc == 2 and "unknown timm model 'not_a_real_net'" in caplog.text


def test_missing_weight_file_exits_with_clear_error(tmp_path, caplog):
    rc = main(["run", "--out", str(tmp_path), "--set", f"model.weights=file:{tmp_path / 'missing.pth'}"])
    assert rc == 2 and "weight file not found" in caplog.text
