"""Offline kNN retrieval evaluation of the fine-tuned embedding against two baselines.

Protocols (both always computed; ``eval.protocol`` picks the headline one):
  catalogue: queries = TEST split of the query dataset; gallery = ALL items of the gallery
             dataset (train+val+test), the query itself excluded. New items searched against
             the existing catalogue.
  heldout:   queries = TEST split; gallery = TEST split of the gallery dataset (leave-one-out).
             Nothing the fine-tuned model was trained on appears on either side.
Items whose label is missing (or unmapped in a cross-domain task) are left out of the task.
Baselines, measured in the same run with the same protocol and preprocessing:
  imagenet: L2-normalised pooled features of the ImageNet-pretrained backbone (no fine-tuning): the
            configured weights when they are pretrained, else the backbone's packaged ImageNet weights;
            never a random init (no pretrained weights -> no 'imagenet' entry, the reason in ``baselines``);
  random:   the same for a randomly initialised backbone.
The weights each baseline was built with are recorded under ``baselines``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from .backbones import is_random_init, packaged_weights_for
from .data import Dataset
from .embeddings import embed_from_prefix, embed_images, pooled_l2
from .metrics import retrieval_metrics
from .model import build_model

log = logging.getLogger(__name__)

DEFAULT_TASKS = [
    {"name": "fashion_articleType", "query": "fashion", "gallery": "fashion", "query_label": "articleType",
     "gallery_label": "articleType"},
    {"name": "fashion_baseColour", "query": "fashion", "gallery": "fashion", "query_label": "baseColour",
     "gallery_label": "baseColour"},
    {"name": "clothing_class", "query": "clothing", "gallery": "clothing", "query_label": "clothing_class",
     "gallery_label": "clothing_class"},
]


def task_list(cfg) -> list:
    from .config import TaskConfig

    return cfg.eval.tasks or [TaskConfig(**t) for t in DEFAULT_TASKS]


def _labels(d: Dataset, col: str, mapping: dict | None) -> list:
    raw = d.attrs[col]
    return [None if v is None else (mapping.get(v) if mapping is not None else v) for v in raw]


def task_rows(task, datasets: dict[str, Dataset], protocol: str) -> dict:
    qd, gd = datasets[task.query], datasets[task.gallery]
    ql = _labels(qd, task.query_label, task.query_label_map)
    gl = _labels(gd, task.gallery_label, task.gallery_label_map)
    q_rows = np.asarray([i for i in qd.indices("test") if ql[i] is not None], np.int64)
    g_pool = gd.indices("test") if protocol == "heldout" else np.arange(len(gd))
    g_rows = np.asarray([i for i in g_pool if gl[i] is not None], np.int64)
    return {"q_rows": q_rows, "g_rows": g_rows, "q_labels": [ql[i] for i in q_rows], "g_labels": [gl[i] for i in g_rows],
            "q_ids": [f"{task.query}:{qd.ids[i]}" for i in q_rows], "g_ids": [f"{task.gallery}:{gd.ids[i]}" for i in g_rows]}


def evaluate_tasks(embeddings: dict[str, np.ndarray], datasets: dict[str, Dataset], tasks, eval_cfg,
                   protocol: str, keep_rankings: bool = False) -> dict:
    out = {}
    for t in tasks:
        if t.query not in datasets or t.gallery not in datasets:
            continue
        r = task_rows(t, datasets, protocol)
        m = retrieval_metrics(embeddings[t.query][r["q_rows"]], r["q_labels"], embeddings[t.gallery][r["g_rows"]],
                              r["g_labels"], ks=eval_cfg.ks, map_k=eval_cfg.map_k, query_ids=r["q_ids"],
                              gallery_ids=r["g_ids"])
        ranked, qi = m.pop("_ranked"), m.pop("_query_index")
        if keep_rankings:
            m["_rankings"] = {"query_rows": r["q_rows"][qi], "gallery_rows": r["g_rows"][ranked],
                              "query_labels": [r["q_labels"][i] for i in qi],
                              "gallery_labels": np.asarray(r["g_labels"], dtype=object)[ranked]}
        out[t.name] = m
    return out


class NoImageNetBaseline(RuntimeError):
    """No pretrained weights could be loaded for the backbone: an 'imagenet' baseline would be random."""


def build_imagenet_baseline(cfg):
    """Model with real pretrained weights for ``cfg.model.backbone`` (resolved and loaded as training does):
    ``cfg.model.weights`` unless they mean random init, else the packaged ImageNet weights of the backbone.
    -> (model, {"weights": ..., **init info}); raises NoImageNetBaseline when none load."""
    tried = []
    for w in dict.fromkeys([cfg.model.weights, packaged_weights_for(cfg.model.backbone)]):
        if is_random_init(w):
            continue
        try:
            base, info = build_model(cfg, {}, weights=w)
        except (OSError, ValueError, RuntimeError) as exc:  # missing file / package, weights that do not fit
            log.warning("imagenet baseline: weights %s do not load: %s", w, exc)
            tried.append(f"{w}: {exc}")
            continue
        return base, {"weights": w, **info} | ({"not_loaded": tried} if tried else {})
    raise NoImageNetBaseline(f"no ImageNet baseline: no pretrained weights load into {cfg.model.backbone!r} "
                             f"(model.weights={cfg.model.weights!r}" + ("; " + "; ".join(tried) if tried else "") + ")")


def model_embeddings(cfg, datasets: dict[str, Dataset], *, model=None, store=None, kind: str = "finetuned",
                     device: str = "cpu", progress_desc: str | None = None, init: dict | None = None) -> dict[str, np.ndarray]:
    """Embeddings of every item of every dataset for 'finetuned' (``model``), 'imagenet' or 'random'.
    ``init`` (if given) receives the weights a baseline was built with."""
    spec = cfg.input.spec()
    bs = cfg.train.eval_batch_size
    if kind == "finetuned":
        fn_prefix, fn_full, bb = model.embed_prefix, model, model.backbone
    else:
        torch.manual_seed(cfg.seed + 1)
        if kind == "imagenet":
            base, info = build_imagenet_baseline(cfg)
        else:
            base, info = build_model(cfg, {}, weights="none")
            info = {"weights": "none", **info}
        if init is not None:
            init.update(info)
        bb = base.backbone
        bb.set_trainable_blocks(cfg.train.stage2.unfreeze_blocks)
        bb.to(device).eval()
        fn_prefix, fn_full = pooled_l2(bb.trunk), pooled_l2(bb)
    use_store = store is not None and bb.has_prefix and _same_prefix(store, bb)
    out = {}
    for name, d in datasets.items():
        desc = f"{progress_desc or kind} {name}"
        if use_store:
            out[name] = embed_from_prefix(fn_prefix, store.get(d, np.arange(len(d)), 0), batch_size=bs * 2,
                                          device=device, desc=desc)
        else:
            out[name] = embed_images(fn_full, d.images, spec, batch_size=bs, device=device, desc=desc)
    return out


def _same_prefix(store, bb) -> bool:
    from .train import PrefixStore

    if store.model.backbone.split_at != bb.split_at:
        return False
    probe = PrefixStore.__new__(PrefixStore)
    probe.model = type("M", (), {"backbone": bb})()
    return PrefixStore._fingerprint(probe) == store.fingerprint


def run_evaluation(cfg, datasets: dict[str, Dataset], *, model=None, store=None, device: str = "cpu",
                   models: list[str] | None = None) -> dict:
    """Evaluate the fine-tuned model (if given) and the configured baselines on every task and protocol."""
    tasks = task_list(cfg)
    models = models or ((["finetuned"] if model is not None else []) + list(cfg.eval.baselines))
    results: dict = {"protocol": cfg.eval.protocol, "tasks": [t.model_dump() for t in tasks], "models": {}, "timings_s": {},
                     "baselines": {}}
    embs = {}
    for kind in models:
        t0 = time.time()
        init: dict = {}
        try:
            embs[kind] = model_embeddings(cfg, datasets, model=model, store=store, kind=kind, device=device, init=init)
        except NoImageNetBaseline as exc:
            log.error("%s", exc)
            results["baselines"][kind] = {"error": str(exc)}
            continue
        if kind != "finetuned":
            results["baselines"][kind] = init
        results["models"][kind] = {p: evaluate_tasks(embs[kind], datasets, tasks, cfg.eval, p, keep_rankings=(p == cfg.eval.protocol))
                                   for p in ("catalogue", "heldout")}
        results["timings_s"][kind] = round(time.time() - t0, 2)
        for tname, m in results["models"][kind][cfg.eval.protocol].items():
            log.info("%-10s %-22s P@1 %.3f R@5 %.3f mAP@%d %.3f", kind, tname, m["p@1"], m.get("recall@5", float("nan")),
                     cfg.eval.map_k, m[f"map@{cfg.eval.map_k}"])
    results["_embeddings"] = embs
    return results


def strip_private(obj):
    """Drop keys starting with '_' (rankings, embeddings) for JSON output."""
    if isinstance(obj, dict):
        return {k: strip_private(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list):
        return [strip_private(v) for v in obj]
    return obj


def acceptance(results: dict, primary_task: str = "fashion_articleType", margin: float = 0.05) -> dict:
    """Fine-tuned vs ImageNet on every task (headline protocol); P@1 margin on the primary task."""
    p = results["protocol"]
    ft, im = results["models"].get("finetuned", {}).get(p), results["models"].get("imagenet", {}).get(p)
    if not ft or not im:
        return {}
    per_task = {t: {"finetuned_p@1": ft[t]["p@1"], "imagenet_p@1": im[t]["p@1"], "delta": ft[t]["p@1"] - im[t]["p@1"]}
                for t in ft if t in im}
    beats_all = all(v["delta"] > 0 for v in per_task.values())
    prim = per_task.get(primary_task, {}).get("delta")
    return {"per_task": per_task, "beats_imagenet_on_every_task": beats_all,
            "primary_task": primary_task, "primary_margin": prim,
            "primary_margin_ok": prim is not None and prim >= margin,
            "passed": beats_all and prim is not None and prim >= margin}
