import numpy as np
import pytest

from pipelines.vision.config import TaskConfig, load_config
from pipelines.vision.evaluate import acceptance, evaluate_tasks, task_rows


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
