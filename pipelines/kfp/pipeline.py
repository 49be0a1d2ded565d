"""The pipeline graph: prepare -> train (GPU pool) -> evaluate + gate -> export -> register -> backfill (sharded,
new versioned collection) -> deploy (KServe revision, canary, rollback) -> switch the Milvus alias (blue/green).

Two variants are compiled from the same graph: ``gpu`` (the train step gets an accelerator type and limit,
a nodeSelector and tolerations, all run parameters) and ``cpu`` (no accelerator: small runs, local runs).
The backfill is written to a new collection and only becomes visible (alias switch) after the new model's
InferenceService is Ready and serves all the traffic, so queries embedded by one model never meet vectors of
the other. With a canary share (canary_traffic_percent < 100 outside RawDeployment mode) the switch step
refuses; once the rollout is at 100%, `python -m pipelines.kfp.cli promote` switches the alias.
"""


import os
from pathlib import Path

from kfp import compiler, dsl, kubernetes

from . import components as C

DEFAULT_IMAGE = os.environ.get("ADREC_PIPELINE_IMAGE", "adrec/platform:0.1.0")
PIPELINE_NAME = "adrec-visual-embedder"
DATA_MOUNT, MODELS_MOUNT = "/data", "/models"
GPU_NODE_SELECTOR = {"cloud.google.com/gke-accelerator": "nvidia-l4"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
# caching per step: deterministic, expensive steps are cached; steps that read or change outside state are not
CACHING = {"prepare-data": True, "train-model": True, "evaluate-gate": False, "export-model": True,
           "register-model": False, "plan-backfill": False, "backfill-shard": False, "deploy-model": False,
           "switch-alias": False}


def components(image: str = DEFAULT_IMAGE) -> dict:
    return {f.__name__: dsl.component(f, base_image=image, install_kfp_package=False) for f in C.ALL}


def build_pipeline(image: str = DEFAULT_IMAGE, gpu: bool = True, backfill_parallelism: int = 4,
                   train_cpu: str = "4", train_memory: str = "16G"):
    """-> the @dsl.pipeline function (``gpu``: accelerator + node pool settings on the train step)."""
    c = components(image)
    name = f"{PIPELINE_NAME}-{'gpu' if gpu else 'cpu'}"

    @dsl.pipeline(name=name, description=(
        "Fine-tune the visual embedder on the " + ("GPU node pool" if gpu else "CPU (small runs)")
        + ", gate it against ImageNet and the deployed model, export ONNX, register, backfill Milvus + Feast "
          "into a new collection, deploy a KServe canary revision, switch the alias."))
    def vision_pipeline(
            config_path: str = "configs/vision/demo.yaml",
            config_overrides: list = [],  # noqa: B006 - KFP default, e.g. ["train.stage2.epochs=2"]
            train_overrides: list = [],  # noqa: B006 - train step only, e.g. ["model.weights=none"]
            data_dir: str = "/data",
            data_pvc: str = "adrec-data",
            models_pvc: str = "adrec-models",
            max_items_per_dataset: int = 0,
            gate_margin: float = 0.0,
            deployed_p_at_1: float = -1.0,
            registry_root: str = "/models/registry",
            registry_uri: str = "",
            model_version: str = "",
            accelerator_type: str = "nvidia.com/gpu",
            accelerator_limit: int = 1,
            node_selector: dict = GPU_NODE_SELECTOR,
            tolerations: list = GPU_TOLERATIONS,
            deploy_mode: str = "apply",
            isvc_variant: str = "cpu",
            isvc_name: str = "adrec-embedder",
            namespace: str = "adrec",
            canary_traffic_percent: int = 10,
            kserve_deployment_mode: str = "",
            ready_timeout_s: int = 900,
            backfill_datasets: list = ["fashion-products"],  # noqa: B006
            backfill_limit: int = 0,
            backfill_shards: int = 8,
            milvus_uri: str = "http://milvus.adrec.svc:19530",
            milvus_alias: str = "listings",
            feast_enabled: bool = True,
            feast_config: dict = {"online_store": "redis", "registry_path": "/models/feast/registry.db",  # noqa: B006
                                  "redis": {"host": "redis.adrec.svc", "port": 6379}},
            min_backfill_fraction: float = 0.95,
    ):
        common = dict(config_path=config_path, config_overrides=config_overrides, data_dir=data_dir,
                      max_items_per_dataset=max_items_per_dataset)
        prep = c["prepare_data"](**common).set_display_name("prepare data")
        train = c["train_model"](manifest=prep.outputs["manifest"], train_overrides=train_overrides, **common).set_display_name("train")
        train.set_cpu_request(train_cpu).set_memory_request(train_memory)
        if gpu:
            train.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_limit)
            kubernetes.add_node_selector_json(train, node_selector)
            kubernetes.add_toleration_json(train, tolerations)
        ev = c["evaluate_gate"](model=train.outputs["model"], gate_margin=gate_margin, deployed_p_at_1=deployed_p_at_1,
                                registry_root=registry_root, **common).set_display_name("evaluate + quality gate")
        exp = c["export_model"](config_path=config_path, config_overrides=config_overrides,
                                model=train.outputs["model"], evaluation=ev.outputs["evaluation"]
                                ).set_display_name("export ONNX + model card")
        reg = c["register_model"](onnx_model=exp.outputs["onnx_model"], registry_root=registry_root,
                                  registry_uri=registry_uri, model_version=model_version).set_display_name("register")
        plan = c["plan_backfill"](onnx_model=exp.outputs["onnx_model"], model_version=reg.outputs["model_version"],
                                  datasets=backfill_datasets, data_dir=data_dir, limit=backfill_limit,
                                  num_shards=backfill_shards, milvus_uri=milvus_uri, milvus_alias=milvus_alias
                                  ).set_display_name("backfill: plan shards + new collection")
        with dsl.ParallelFor(items=plan.outputs["Output"], parallelism=backfill_parallelism) as shard:
            emb = c["backfill_shard"](onnx_model=exp.outputs["onnx_model"], plan=plan.outputs["plan"], shard=shard,
                                      milvus_uri=milvus_uri, milvus_alias=milvus_alias
                                      ).set_display_name("backfill: embed shard")
        dep = c["deploy_model"](model_uri=reg.outputs["model_uri"], model_version=reg.outputs["model_version"],
                                model_name=reg.outputs["model_name"], deploy_mode=deploy_mode,
                                isvc_variant=isvc_variant, isvc_name=isvc_name, namespace=namespace,
                                canary_traffic_percent=canary_traffic_percent,
                                kserve_deployment_mode=kserve_deployment_mode, ready_timeout_s=ready_timeout_s,
                                registry_root=registry_root).set_display_name("deploy KServe revision")
        dep.after(emb)
        sw = c["switch_alias"](plan=plan.outputs["plan"], deployment=dep.outputs["manifest"],
                               milvus_uri=milvus_uri, milvus_alias=milvus_alias,
                               feast_enabled=feast_enabled, feast_config=feast_config,
                               min_fraction=min_backfill_fraction).set_display_name("backfill: switch alias")
        sw.after(dep)
        # shared data (images, catalogue) at /data; the model registry and Feast's file registry at /models
        for t in (prep, train, ev, plan, emb):
            kubernetes.mount_pvc(t, pvc_name=data_pvc, mount_path=DATA_MOUNT)
        for t in (ev, reg, dep, sw):
            kubernetes.mount_pvc(t, pvc_name=models_pvc, mount_path=MODELS_MOUNT)
        for t in (prep, train, ev, exp, reg, plan, emb, dep, sw):
            t.set_caching_options(CACHING[t.component_spec.name.replace("_", "-")])
        for t in (plan, emb, sw):
            t.set_retry(num_retries=2, backoff_duration="30s")

    return vision_pipeline


def compile_pipeline(out, *, gpu: bool = True, image: str = DEFAULT_IMAGE,
                     backfill_parallelism: int = 4) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(image, gpu, backfill_parallelism), str(out))
    return out
