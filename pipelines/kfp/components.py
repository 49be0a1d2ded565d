"""Component bodies. They are plain functions turned into ``@dsl.component``s by ``pipeline.components(image)``
so the base image (the project image, ``adrec/platform:<version>``) is chosen at compile time. Each body
imports the project's packages (installed in the image; in the local run the current interpreter has them)
and delegates to ``pipelines.kfp.ops``. No ``from __future__ import annotations`` here: KFP reads the
annotations at definition time.
"""

from typing import List, NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output


def prepare_data(config_path: str, config_overrides: List[str], data_dir: str, max_items_per_dataset: int,
                 manifest: Output[Dataset]) -> str:
    """Decode the datasets, assign deterministic splits; manifest.json with the data hash."""
    import logging

    from pipelines.kfp import ops

    logging.basicConfig(level=logging.INFO)
    cfg = ops.vision_config(config_path, config_overrides, data_dir, max_items_per_dataset)
    summary = ops.prepare(cfg, manifest.path)
    manifest.metadata.update({"data_hash": summary["data_hash"], "counts": summary["counts"]})
    return summary["data_hash"]


def train_model(config_path: str, config_overrides: List[str], train_overrides: List[str], data_dir: str,
                max_items_per_dataset: int, manifest: Input[Dataset], model: Output[Model]) -> str:
    """Fine-tune the timm backbone with the multi-task heads (GPU when the pod has one).

    ``train_overrides`` apply to this step only (candidate recipe experiments; the gate's baseline keeps
    the pipeline config)."""
    import logging

    from pipelines.kfp import ops

    logging.basicConfig(level=logging.INFO)
    cfg = ops.vision_config(config_path, list(config_overrides) + list(train_overrides), data_dir,
                            max_items_per_dataset)
    info = ops.train(cfg, model.path, manifest.path)
    model.metadata.update(info)
    model.metadata["framework"] = "pytorch"
    return info["device"]


def evaluate_gate(config_path: str, config_overrides: List[str], data_dir: str, max_items_per_dataset: int,
                  gate_margin: float, deployed_p_at_1: float, registry_root: str, model: Input[Model],
                  evaluation: Output[Artifact], metrics: Output[Metrics]) -> float:
    """kNN evaluation vs the ImageNet baseline; FAILS the run unless the candidate beats it and the deployed model."""
    import json
    import logging
    from pathlib import Path

    from pipelines.kfp import ops

    logging.basicConfig(level=logging.INFO)
    cfg = ops.vision_config(config_path, config_overrides, data_dir, max_items_per_dataset)
    try:
        g = ops.evaluate_and_gate(cfg, model.path, evaluation.path, margin=gate_margin,
                                  deployed_metric=deployed_p_at_1, registry_root=registry_root)
    finally:
        gp = Path(evaluation.path) / "gate.json"
        if gp.is_file():
            g_ = json.loads(gp.read_text())
            metrics.log_metric("candidate_p_at_1", g_["candidate"])
            for k, c in g_["checks"].items():
                if c["value"] is not None:  # None: no ImageNet baseline (the gate failed, reason in gate.json)
                    metrics.log_metric(f"{k}_p_at_1", c["value"])
            metrics.log_metric("gate_passed", float(g_["passed"]))
    return g["candidate"]


def export_model(config_path: str, config_overrides: List[str], model: Input[Model], evaluation: Input[Artifact],
                 onnx_model: Output[Model]) -> int:
    """ONNX + TorchScript + model card (with the evaluation metrics and the gate decision), parity-checked."""
    import logging

    from pipelines.kfp import ops

    logging.basicConfig(level=logging.INFO)
    cfg = ops.vision_config(config_path, config_overrides)
    card = ops.export(cfg, model.path, evaluation.path, onnx_model.path)
    onnx_model.metadata.update({"name": card["name"], "version": card["version"], "embedding_dim": card["embedding_dim"],
                                "parity": card["parity"], "framework": "onnx"})
    return int(card["embedding_dim"])


def register_model(onnx_model: Input[Model], registry_root: str, registry_uri: str, model_version: str
                   ) -> NamedTuple("Registered", [("model_uri", str), ("model_version", str), ("model_name", str)]):
    """Versioned model URI (copied to the registry when one is mounted)."""
    import logging
    from collections import namedtuple

    from pipelines.kfp import ops

    logging.basicConfig(level=logging.INFO)
    entry = ops.register(onnx_model.path, export_uri=onnx_model.uri, registry_root=registry_root,
                         registry_uri=registry_uri, version=model_version)
    logging.info("registered %s %s at %s", entry["name"], entry["version"], entry["uri"])
    return namedtuple("Registered", ["model_uri", "model_version", "model_name"])(entry["uri"], entry["version"],
                                                                                  entry["name"])


def deploy_model(model_uri: str, model_version: str, model_name: str, deploy_mode: str, isvc_variant: str,
                 isvc_name: str, namespace: str, canary_traffic_percent: int, kserve_deployment_mode: str,
                 ready_timeout_s: int, registry_root: str, manifest: Output[Artifact]) -> str:
    """Create/patch the KServe InferenceService (new revision, canary %), wait for Ready, roll back on failure."""
    import logging

    from pipelines.kfp.deploy import run_deploy

    logging.basicConfig(level=logging.INFO)
    res = run_deploy(model_uri=model_uri, model_version=model_version, out_dir=manifest.path, mode=deploy_mode,
                     variant=isvc_variant, name=isvc_name, namespace=namespace,
                     canary_traffic_percent=canary_traffic_percent, deployment_mode=kserve_deployment_mode,
                     timeout_s=ready_timeout_s, registry_root=registry_root, model_name=model_name)
    manifest.metadata.update({k: v for k, v in res.items() if isinstance(v, (str, int, float, bool))})
    return res.get("action", res["mode"])


def plan_backfill(onnx_model: Input[Model], model_version: str, datasets: List[str], data_dir: str, limit: int,
                  num_shards: int, milvus_uri: str, milvus_alias: str, plan: Output[Artifact]) -> List[int]:
    """Catalogue listing rows + an empty versioned collection <alias>_v<version>; -> shard indices."""
    import logging

    from pipelines.kfp import ops

    logging.basicConfig(level=logging.INFO)
    p = ops.plan_backfill(onnx_model.path, plan.path, version=model_version, datasets=datasets, data_dir=data_dir,
                          limit=limit, num_shards=num_shards, milvus_uri=milvus_uri, alias=milvus_alias)
    plan.metadata.update({"collection": p["collection"], "rows": p["rows"], "num_shards": p["num_shards"]})
    return p["shards"]


def backfill_shard(onnx_model: Input[Model], plan: Input[Artifact], shard: int, milvus_uri: str,
                   milvus_alias: str) -> int:
    """Embed one shard of the catalogue with the exported ONNX model; upsert into the new collection."""
    import logging

    from pipelines.kfp import ops

    logging.basicConfig(level=logging.INFO)
    res = ops.backfill_shard(onnx_model.path, plan.path, shard=shard, milvus_uri=milvus_uri, alias=milvus_alias)
    logging.info("shard %s", res)
    return res["written"]


def switch_alias(plan: Input[Artifact], deployment: Input[Artifact], milvus_uri: str, milvus_alias: str,
                 feast_enabled: bool, feast_config: dict, min_fraction: float, metrics: Output[Metrics]) -> str:
    """Blue/green: verify the new collection, push its vectors to Feast, point the serving alias at it;
    refused while the deploy step left the new model on a canary share of the traffic."""
    import logging

    from pipelines.kfp import ops

    logging.basicConfig(level=logging.INFO)
    blocked = ops.alias_switch_blocked(dict(deployment.metadata))
    if blocked:
        raise RuntimeError(f"alias not switched: {blocked}")
    res = ops.promote(plan.path, milvus_uri=milvus_uri, alias=milvus_alias,
                      feast_config=feast_config if feast_enabled else None, min_fraction=min_fraction)
    logging.info("promoted %s", res)
    metrics.log_metric("collection_rows", res["count"])
    metrics.log_metric("expected_rows", res["expected"])
    metrics.log_metric("feast_rows", res["feast_rows"])
    return res["collection"]


ALL = [prepare_data, train_model, evaluate_gate, export_model, register_model, deploy_model, plan_backfill,
       backfill_shard, switch_alias]
