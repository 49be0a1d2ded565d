"""Step logic of the KFP pipeline. Each function takes plain values and directories, so the
components stay thin and every step can be tested without KFP.

Artifacts (directories):
  prepare  -> manifest.json  ({dataset: {id: split}}, counts, data_hash)
  train    -> model.pt, train_metrics.jsonl
  evaluate -> evaluation.json, gate.json            (raises GateFailed when the candidate is worse)
  export   -> model.onnx, model.torchscript.pt, model_card.json
  register -> <registry_root>/<name>/<version>/{model.onnx, model_card.json}, latest.json
  backfill -> catalogue.jsonl (plan), Milvus collection <alias>_v<version>, Feast rows, alias switched
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger("pipelines.kfp")

PRIMARY_TASK = "fashion_articleType"
PRIMARY_METRIC = "p@1"


class GateFailed(RuntimeError):
    """The candidate does not beat the ImageNet baseline / the deployed model: the run must stop."""


# ----------------------------------------------------------------------------- config


def vision_config(config_path: str = "", overrides: list[str] | None = None, data_dir: str = "",
                  max_items_per_dataset: int = 0, cache_dir: str = ""):
    from pipelines.vision.config import REPO_ROOT, load_config

    path = config_path or None
    if path and not Path(path).is_absolute() and not Path(path).exists():
        path = str(REPO_ROOT / path)  # relative to the project (the image's working tree)
    ov = list(overrides or [])
    if data_dir:
        ov.append(f"data.root={data_dir}")
    if max_items_per_dataset and max_items_per_dataset > 0:
        ov.append(f"data.max_items_per_dataset={int(max_items_per_dataset)}")
    if cache_dir:
        ov.append(f"data.cache_dir={cache_dir}")
    return load_config(path, ov)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str))


# ----------------------------------------------------------------------------- prepare / train


def prepare(cfg, out_dir: str | Path) -> dict:
    """Decode (and cache) the datasets, assign splits; write manifest.json. -> summary."""
    from pipelines.vision.data import load_datasets
    from pipelines.vision.splits import manifest_hash

    out = Path(out_dir)
    datasets = load_datasets(cfg)
    manifests = {n: d.manifest() for n, d in datasets.items()}
    counts = {n: {s: int((d.split == s).sum()) for s in ("train", "val", "test")} | {"skipped": dict(d.skipped)}
              for n, d in datasets.items()}
    summary = {"data_root": str(cfg.data.resolved_root()), "data_hash": manifest_hash(manifests), "counts": counts,
               "max_items_per_dataset": cfg.data.max_items_per_dataset}
    _write_json(out / "manifest.json", {**summary, "manifests": manifests})
    return summary


def train(cfg, out_dir: str | Path, manifest_dir: str | Path | None = None) -> dict:
    from pipelines.vision.backbones import check_backbone
    from pipelines.vision.train import configure_threads, train as vision_train

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_backbone(cfg.model.backbone, cfg.model.weights)
    configure_threads(cfg)
    res = vision_train(cfg, out, progress=False)
    data_hash = res.prepared.data_hash
    if manifest_dir is not None:
        expected = json.loads((Path(manifest_dir) / "manifest.json").read_text())["data_hash"]
        if expected != data_hash:
            raise RuntimeError(f"training data differs from the prepared manifest ({data_hash[:12]} != {expected[:12]})")
    return {"train_seconds": round(res.seconds, 1), "device": str(res.device), "data_hash": data_hash}


# ----------------------------------------------------------------------------- evaluate + gate


def evaluate(cfg, model_dir: str | Path, out_dir: str | Path) -> dict:
    """kNN retrieval evaluation of model.pt vs the configured baselines -> evaluation.json (as the vision CLI)."""
    from pipelines.vision.backbones import is_random_init
    from pipelines.vision.cli import _jsonable_eval
    from pipelines.vision.data import load_datasets
    from pipelines.vision.evaluate import acceptance, run_evaluation
    from pipelines.vision.train import PrefixStore, load_model, prepare_data

    model, _, mcfg = load_model(Path(model_dir) / "model.pt")
    cfg_eval = mcfg.model_copy(update={"eval": cfg.eval, "data": cfg.data})
    if cfg.model.backbone == mcfg.model.backbone and not is_random_init(cfg.model.weights):
        # the ImageNet baseline comes from the pipeline's config, whatever the candidate was initialised with;
        # otherwise run_evaluation falls back to the backbone's packaged ImageNet weights (never a random init)
        cfg_eval = cfg_eval.model_copy(update={"model": mcfg.model.model_copy(update={"weights": cfg.model.weights})})
    if "imagenet" not in cfg_eval.eval.baselines:  # the gate needs it
        cfg_eval = cfg_eval.model_copy(update={"eval": cfg_eval.eval.model_copy(
            update={"baselines": ["imagenet", *cfg_eval.eval.baselines]})})
    prepared = prepare_data(cfg_eval, load_datasets(cfg_eval))
    store = PrefixStore(model, cfg_eval, "cpu") if (cfg_eval.train.prefix_cache and model.backbone.has_prefix) else None
    res = run_evaluation(cfg_eval, prepared.datasets, model=model, store=store)
    res["acceptance"] = acceptance(res)
    res["data_hash"] = prepared.data_hash  # the deployed model's card numbers compare only on the same data
    ev = _jsonable_eval(res)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(ev))
    return ev


def metric_of(ev: dict, model: str, task: str = PRIMARY_TASK, metric: str = PRIMARY_METRIC,
              protocol: str | None = None) -> float:
    p = protocol or ev["protocol"]
    return float(ev["models"][model][p][task][metric])


def deployed_metric_from_card(card: dict, task: str = PRIMARY_TASK, metric: str = PRIMARY_METRIC) -> float | None:
    """The fine-tuned metric a model card recorded at export (None if it has none)."""
    try:
        return float(card["metrics"]["finetuned"][task][metric])
    except (KeyError, TypeError, ValueError):
        return None


def card_incomparable(card: dict, ev: dict) -> str:
    """Why the card's metrics cannot be compared with the evaluation ``ev`` ('' when they can): they must be
    measured with the same protocol and, where the card records a data hash, on the same data."""
    metrics = card.get("metrics") if isinstance(card.get("metrics"), dict) else {}
    proto = metrics.get("protocol")
    if proto is None:
        return "its model card records no metrics protocol"
    if proto != ev["protocol"]:
        return f"metrics protocol {proto!r} != candidate's {ev['protocol']!r}"
    card_hash, ev_hash = card.get("data_hash"), ev.get("data_hash")
    if card_hash and card_hash != ev_hash:
        return f"data hash {str(card_hash)[:12]} != candidate's {str(ev_hash)[:12]}"
    return ""


def deployed_card_from_registry(registry_root: str, name: str) -> tuple[dict | None, str | None]:
    """Model card of the model the registry marks as deployed (``<root>/<name>/deployed.json``) and its version."""
    if not registry_root:
        return None, None
    ptr = Path(registry_root) / name / "deployed.json"
    if not ptr.is_file():
        return None, None
    dep = json.loads(ptr.read_text())
    card_path = Path(registry_root) / name / dep["version"] / "model_card.json"
    if not card_path.is_file():
        return None, dep["version"]
    return json.loads(card_path.read_text()), dep["version"]


def gate(ev: dict, *, margin: float = 0.0, deployed_metric: float | None = None, task: str = PRIMARY_TASK,
         metric: str = PRIMARY_METRIC, deployed_source: str = "", deployed_skipped: str = "") -> dict:
    """Candidate must exceed the ImageNet baseline AND the deployed model by ``margin`` (strictly).
    No ImageNet baseline in ``ev`` fails the gate; ``deployed_skipped`` records why no deployed check was made."""
    cand = metric_of(ev, "finetuned", task, metric)
    baseline = (ev.get("baselines") or {}).get("imagenet") or {}
    if "imagenet" in ev["models"]:
        base = metric_of(ev, "imagenet", task, metric)
        checks = {"imagenet": {"value": base, "required": base + margin, "passed": cand > base + margin,
                               "weights": baseline.get("weights")}}
    else:
        checks = {"imagenet": {"value": None, "required": None, "passed": False,
                               "reason": baseline.get("error") or "no ImageNet baseline in the evaluation"}}
    if deployed_metric is not None and deployed_metric >= 0:
        checks["deployed"] = {"value": deployed_metric, "required": deployed_metric + margin,
                              "passed": cand > deployed_metric + margin, "source": deployed_source}
    passed = all(c["passed"] for c in checks.values())
    out = {"task": task, "metric": metric, "protocol": ev["protocol"], "candidate": cand, "margin": margin,
           "checks": checks, "passed": passed}
    if deployed_skipped:
        out["skipped"] = {"deployed": deployed_skipped}
    return out


def gate_message(g: dict) -> str:
    parts = [f"{k}: FAILED ({c['reason']})" if c["value"] is None else
             f"{k} {c['value']:.3f} (+{g['margin']:.3f} -> needs > {c['required']:.3f}): "
             f"{'ok' if c['passed'] else 'NOT beaten'}" for k, c in g["checks"].items()]
    parts += [f"{k} comparison skipped ({why})" for k, why in g.get("skipped", {}).items()]
    return (f"quality gate {'PASSED' if g['passed'] else 'FAILED'}: candidate {g['task']} {g['metric']} "
            f"{g['candidate']:.3f} ({g['protocol']} protocol) vs " + "; ".join(parts))


def evaluate_and_gate(cfg, model_dir, out_dir, *, margin: float = 0.0, deployed_metric: float = -1.0,
                      registry_root: str = "") -> dict:
    ev = evaluate(cfg, model_dir, out_dir)
    source, skipped = ("parameter" if deployed_metric is not None and deployed_metric >= 0 else ""), ""
    if not source:
        card, version = deployed_card_from_registry(registry_root, cfg.name)
        deployed_metric = None
        if version is not None:  # a model is deployed: compare with it only on the same protocol and data
            why = "no model card" if card is None else card_incomparable(card, ev)
            if not why:
                deployed_metric = deployed_metric_from_card(card)
                if deployed_metric is None:
                    why = f"its model card records no {PRIMARY_TASK} {PRIMARY_METRIC}"
            source = f"registry:{version}"
            skipped = f"{source}: {why}" if why else ""
    g = gate(ev, margin=margin, deployed_metric=deployed_metric, deployed_source=source, deployed_skipped=skipped)
    _write_json(Path(out_dir) / "gate.json", g)
    msg = gate_message(g)
    log.info(msg)
    if not g["passed"]:
        raise GateFailed(msg)
    return g


# ----------------------------------------------------------------------------- export / register


def export(cfg, model_dir, eval_dir, out_dir) -> dict:
    from pipelines.vision.cli import _headline_metrics
    from pipelines.vision.export import export_all
    from pipelines.vision.train import load_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, payload, mcfg = load_model(Path(model_dir) / "model.pt")
    ev_path = Path(eval_dir) / "evaluation.json"
    metrics = _headline_metrics(json.loads(ev_path.read_text())) if ev_path.is_file() else {}
    card = export_all(model.embedding_net(), mcfg.model_copy(update={"export": cfg.export}), out, card_kwargs=dict(
        embedding_dim=model.embedding_dim, heads=payload["heads"], metrics=metrics, data_hash=payload["data_hash"],
        weights_info=payload.get("weights_info"), skipped=payload.get("skipped")))
    gate_path = Path(eval_dir) / "gate.json"
    if gate_path.is_file():
        card["gate"] = json.loads(gate_path.read_text())
        _write_json(out / "model_card.json", card)
    return card


_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")


def model_version(card: dict, requested: str = "", now: datetime | None = None) -> str:
    """Requested version, else ``<card version>-<UTC timestamp>`` (unique per run)."""
    v = requested or f"{card['version']}-{(now or datetime.now(UTC)).strftime('%Y%m%d%H%M%S')}"
    if not _VERSION.match(v):
        raise ValueError(f"invalid model version {v!r}")
    return v


def register(export_dir, *, export_uri: str, registry_root: str = "", registry_uri: str = "",
             version: str = "") -> dict:
    """Versioned model URI. With a (mounted) ``registry_root`` the files are copied to
    ``<root>/<name>/<version>/`` and ``registry_uri`` (what KServe's storage initializer reads,
    e.g. gs://bucket/models) names the same place; without one the export artifact's URI is used."""
    card = json.loads((Path(export_dir) / "model_card.json").read_text())
    v = model_version(card, version)
    entry = {"name": card["name"], "version": v, "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
             "embedding_dim": card["embedding_dim"], "metrics": card.get("metrics", {}), "gate": card.get("gate")}
    if registry_root:
        dest = Path(registry_root) / card["name"] / v
        dest.mkdir(parents=True, exist_ok=True)
        for f in ("model.onnx", "model_card.json"):
            shutil.copy2(Path(export_dir) / f, dest / f)
        base = registry_uri.rstrip("/") if registry_uri else str(Path(registry_root).resolve())
        entry["uri"] = f"{base}/{card['name']}/{v}"
        entry["path"] = str(dest)
        _write_json(Path(registry_root) / card["name"] / "latest.json", entry)
    else:
        entry["uri"] = export_uri
    return entry


def mark_deployed(registry_root: str, name: str, version: str, uri: str) -> None:
    if registry_root:
        _write_json(Path(registry_root) / name / "deployed.json",
                    {"version": version, "uri": uri, "deployed_at": datetime.now(UTC).isoformat(timespec="seconds")})


# ----------------------------------------------------------------------------- backfill


def catalogue_rows(datasets: list[str], data_dir: str = "", limit: int = 0) -> list[dict]:
    """Listing rows of the shared catalogue (services.ingest.catalogue), ``limit`` per dataset (0: all)."""
    from services.ingest.catalogue import DATASETS
    from services.ingest.settings import DATA_DIR

    root = Path(data_dir) if data_dir else DATA_DIR
    rows = []
    for name in datasets:
        for i, ev in enumerate(DATASETS[name](root)):
            if limit and i >= limit:
                break
            rows.append({"listing_id": ev.id, "shop_id": ev.shop_id, "title": ev.title, "category": ev.category,
                         "price": float(ev.price), "currency": ev.currency, "active": ev.active,
                         "image_uri": ev.image_uri, "updated_at": int(ev.updated_at.timestamp() * 1000)})
    return rows


def milvus_store(uri: str, alias: str, dim: int = 256):
    from services.common.milvus_store import ListingVectorStore
    from services.common.settings import MilvusConfig

    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    return ListingVectorStore(MilvusConfig(uri=uri, alias=alias, dim=dim, timeout_s=60))


def plan_backfill(export_dir, out_dir, *, version: str, datasets: list[str], data_dir: str = "", limit: int = 0,
                  num_shards: int = 4, milvus_uri: str, alias: str) -> dict:
    """catalogue.jsonl + an empty collection ``<alias>_v<version>`` (rebuilt if it exists). -> plan."""
    card = json.loads((Path(export_dir) / "model_card.json").read_text())
    rows = catalogue_rows(datasets, data_dir, limit)
    if not rows:
        raise RuntimeError(f"no catalogue rows for {datasets} under {data_dir or 'the default data dir'}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "catalogue.jsonl").open("w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    store = milvus_store(milvus_uri, alias, card["embedding_dim"])
    try:
        collection = store.create_collection(store.collection_name(version), card["embedding_dim"], drop_existing=True)
    finally:
        store.close()
    n = max(1, min(int(num_shards), len(rows)))
    plan = {"collection": collection, "rows": len(rows), "num_shards": n, "shards": list(range(n)),
            "version": version, "dim": card["embedding_dim"]}
    _write_json(out / "plan.json", plan)
    return plan


def shard_rows(rows: list[dict], shard: int, num_shards: int) -> list[dict]:
    """Contiguous shard ``shard`` of ``num_shards`` (sizes differ by at most one)."""
    n = len(rows)
    lo, hi = shard * n // num_shards, (shard + 1) * n // num_shards
    return rows[lo:hi]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class OnnxEmbedder:
    """The exported model on onnxruntime with the model card's preprocessing (as the embedder serves it)."""

    def __init__(self, export_dir, threads: int = 0):
        import onnxruntime as ort

        from pipelines.vision.preprocessing import PreprocessSpec

        d = Path(export_dir)
        self.card = json.loads((d / "model_card.json").read_text())
        self.spec = PreprocessSpec.from_dict(self.card["input"])
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(d / "model.onnx"), so, providers=ort.get_available_providers())
        self.input, self.output = self.card["input"]["name"], self.card["output"]["name"]

    def embed_paths(self, paths: list[str]):
        import numpy as np

        from pipelines.vision.preprocessing import ImageDecodeError, preprocess_path

        arrays, ok = [], []
        for i, p in enumerate(paths):
            try:
                arrays.append(preprocess_path(p, self.spec))
                ok.append(i)
            except ImageDecodeError as exc:
                log.warning("skipping %s: %s", p, exc)
        if not arrays:
            return ok, np.zeros((0, self.card["embedding_dim"]), np.float32)
        return ok, self.sess.run([self.output], {self.input: np.stack(arrays)})[0]


def backfill_shard(export_dir, plan_dir, *, shard: int, milvus_uri: str, alias: str, batch_size: int = 64,
                   threads: int = 0) -> dict:
    from services.common.milvus_store import ListingVector

    plan = json.loads((Path(plan_dir) / "plan.json").read_text())
    rows = shard_rows(_read_jsonl(Path(plan_dir) / "catalogue.jsonl"), int(shard), plan["num_shards"])
    emb = OnnxEmbedder(export_dir, threads)
    store = milvus_store(milvus_uri, alias, plan["dim"])
    t0, written, skipped = time.time(), 0, 0
    try:
        for s in range(0, len(rows), batch_size):
            chunk = rows[s:s + batch_size]
            ok, vecs = emb.embed_paths([r["image_uri"] for r in chunk])
            skipped += len(chunk) - len(ok)
            written += store.upsert([ListingVector(embedding=v.tolist(), model_version=plan["version"], **chunk[i])
                                     for i, v in zip(ok, vecs)], collection=plan["collection"])
    finally:
        store.close()
    return {"shard": int(shard), "rows": len(rows), "written": written, "skipped": skipped,
            "seconds": round(time.time() - t0, 2)}


def load_collection(store, collection: str) -> None:
    """Load a collection into memory (a Milvus server or a restarted milvus-lite keeps it released)."""
    store.load(collection)


def feast_client(feast_config: dict):
    from services.common.feature_store import FeatureStoreClient, FeatureStoreConfig

    client = FeatureStoreClient(FeatureStoreConfig(**feast_config))
    client.apply()
    return client


def alias_switch_blocked(deployment: dict) -> str:
    """Why the serving alias must not move yet ('' when it may): the deploy step left the new model
    serving only a canary share, so the old model still embeds the rest of the queries, and an
    alias pointing at the new collection would search those with the wrong model's vectors."""
    if deployment.get("mode") != "apply":
        return ""  # the pipeline did not deploy the embedder (skip / dry-run): nothing is split
    share = int(deployment.get("new_model_traffic_percent", 100))
    if share >= 100:
        return ""
    return (f"the new model serves {share}% of the embedder's traffic (a canary): the alias stays where it is so "
            f"queries embedded by the old model keep meeting the old model's vectors; when the rollout is at 100%, "
            f"run `python -m pipelines.kfp.cli promote --plan <this run's plan artifact> ...`")


def promote(plan_dir, *, milvus_uri: str, alias: str, feast_config: dict | None = None, min_fraction: float = 0.95,
            chunk: int = 500) -> dict:
    """Blue/green switch: check the new collection is complete, publish its vectors to Feast, point the alias."""
    plan = json.loads((Path(plan_dir) / "plan.json").read_text())
    ids = [r["listing_id"] for r in _read_jsonl(Path(plan_dir) / "catalogue.jsonl")]
    meta = {r["listing_id"]: r for r in _read_jsonl(Path(plan_dir) / "catalogue.jsonl")}
    store = milvus_store(milvus_uri, alias, plan["dim"])
    try:
        load_collection(store, plan["collection"])
        count = store.count(plan["collection"])
        if count < min_fraction * len(ids):
            raise RuntimeError(f"{plan['collection']} holds {count} of {len(ids)} listings "
                               f"(< {min_fraction:.0%}); alias {alias!r} left where it was")
        pushed = 0
        if feast_config is not None:
            fs = feast_client(feast_config)
            for s in range(0, len(ids), chunk):
                got = store.get(ids[s:s + chunk], collection=plan["collection"])
                emb_rows = [{"listing_id": g["listing_id"], "embedding": [float(x) for x in g["embedding"]],
                             "model_version": plan["version"], "updated_at": int(g["updated_at"])} for g in got]
                meta_rows = [{k: meta[g["listing_id"]][k] for k in ("listing_id", "shop_id", "title", "category", "price",
                                                                    "currency", "image_uri", "active", "updated_at")}
                             for g in got]
                pushed += fs.push("item_embedding_push", emb_rows)
                fs.push("item_metadata_push", meta_rows)
            fs.close()
        previous = store.alias_target(alias)
        store.point_alias(plan["collection"], alias)
        now = store.alias_target(alias)
    finally:
        store.close()
    return {"collection": plan["collection"], "count": count, "expected": len(ids), "feast_rows": pushed,
            "alias": alias, "previous_collection": previous, "alias_target": now}
