"""Run the whole pipeline on this machine with kfp.local.SubprocessRunner(use_venv=False): every component
runs in a subprocess of the current interpreter (no Docker, no PyPI), artifacts under ``<out>/pipeline_root``,
the registry, a milvus-lite file and Feast SQLite stores under ``<out>``."""

import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# small enough for 2 CPU cores: a few hundred images, tiny input, 4 head epochs on cached features + 1 fine-tuning epoch
SMALL_OVERRIDES = ["input.height=64", "input.width=48", "train.stage1.epochs=4", "train.stage2.epochs=1",
                   "train.batch_size=32", "train.eval_batch_size=64", "train.prefix_cache_views=1",
                   "weak_labels.enabled=false", "data.clothing.enabled=false", "export.torchscript=false",
                   "eval.baselines=[imagenet]", "train.num_threads=2"]


def local_arguments(out: Path, *, data_dir: str = "", max_items: int = 300, overrides: list[str] | None = None,
                    backfill_limit: int = 60, backfill_shards: int = 2, **params) -> dict:
    from pipelines.vision.config import load_config

    out = Path(out).resolve()
    args = dict(
        config_path="configs/vision/demo.yaml",
        config_overrides=list(SMALL_OVERRIDES if overrides is None else overrides) + [f"data.cache_dir={out / 'cache'}"],
        data_dir=data_dir or str(load_config().data.resolved_root()),
        max_items_per_dataset=max_items,
        registry_root=str(out / "registry"),
        deploy_mode="dry-run",
        backfill_limit=backfill_limit,
        backfill_shards=backfill_shards,
        milvus_uri=str(out / "milvus.db"),
        feast_config={"online_store": "sqlite", "registry_path": str(out / "feast" / "registry.db"),
                      "sqlite_path": str(out / "feast" / "online_store.db"), "registry_cache_ttl_s": 0},
    )
    args.update(params)
    return args


def _find(root: Path, name: str) -> list[Path]:
    return sorted(root.rglob(name), key=lambda p: p.stat().st_mtime)


def run_local(out: str | Path, **kwargs) -> dict:
    """Run the CPU pipeline locally; -> summary (timings, gate, metrics, collection size). Raises on a failed step."""
    from kfp import local

    from .pipeline import build_pipeline

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = out / "pipeline_root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    args = local_arguments(out, **kwargs)
    t0 = time.time()
    pipeline = build_pipeline(image="adrec/platform:local-python", gpu=False, backfill_parallelism=1)
    try:
        pipeline(**args)
    finally:
        summary = summarize(out, args, time.time() - t0)
        (out / "local_run.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def summarize(out: Path, args: dict, seconds: float) -> dict:
    root = out / "pipeline_root"
    start = time.time() - seconds
    s: dict = {"seconds": round(seconds, 1), "out": str(out)}
    gates = _find(root, "gate.json")
    if gates:
        s["gate"] = json.loads(gates[-1].read_text())
    models = _find(root, "model.pt")
    s["model_pt"] = str(models[-1]) if models else None
    onnx = _find(root, "model.onnx")
    s["model_onnx"] = str(onnx[-1]) if onnx else None
    latest = out / "registry"
    entries = _find(latest, "latest.json") if latest.is_dir() else []
    if entries:
        s["registered"] = {k: v for k, v in json.loads(entries[-1].read_text()).items() if k in ("name", "version", "uri")}
    isvc = _find(root, "inferenceservice.yaml")
    s["inferenceservice"] = str(isvc[-1]) if isvc else None
    plans = _find(root, "plan.json")
    if plans:
        plan = json.loads(plans[-1].read_text())
        s["backfill"] = {"collection": plan["collection"], "planned_rows": plan["rows"], "shards": plan["num_shards"]}
        if Path(args["milvus_uri"]).exists():
            from .ops import milvus_store

            store = milvus_store(args["milvus_uri"], args.get("milvus_alias", "listings"), plan["dim"])
            try:
                names = store.list_collections()
                s["backfill"]["collection_rows"] = store.count(plan["collection"]) if plan["collection"] in names else 0
                s["backfill"]["alias_target"] = store.alias_target(args.get("milvus_alias", "listings"))
            finally:
                store.close()
    s["step_seconds"] = step_seconds(root, start)
    return s


def step_seconds(root: Path, start: float) -> dict:
    """Approximate wall time per task of the latest run: gaps between executor_output.json writes
    (tasks run one after another locally)."""
    runs = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime) if root.is_dir() else []
    if not runs:
        return {}
    run = runs[-1]
    done = sorted(((p.stat().st_mtime, str(p.parent.relative_to(run))) for p in run.rglob("executor_output.json")))
    res, prev = {}, start
    for t, task in done:
        res[task] = round(max(0.0, t - prev), 1)
        prev = t
    return res
