"""python -m pipelines.kfp.cli {compile,submit,local}

  compile  write the GPU and CPU pipeline YAMLs (upload them in the Kubeflow UI)
  submit   create a run on a KFP endpoint: kfp.Client(host=...) with an experiment and run parameters
  local    run the CPU pipeline on this machine (kfp.local.SubprocessRunner, no Docker, no PyPI)
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_OUT = Path("out/pipelines")


def parse_params(items: list[str]) -> dict:
    """``key=value`` (value parsed as JSON when it parses, else a string) -> dict."""
    params = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--param must look like key=value, got {item!r}")
        k, raw = item.split("=", 1)
        try:
            params[k] = json.loads(raw)
        except json.JSONDecodeError:
            params[k] = raw
    return params


def cmd_compile(args) -> int:
    from .pipeline import compile_pipeline

    out = Path(args.out_dir)
    for variant in args.variant or ["gpu", "cpu"]:
        path = compile_pipeline(out / f"vision-pipeline-{variant}.yaml", gpu=variant == "gpu", image=args.image,
                                backfill_parallelism=args.backfill_parallelism)
        print(path)
    return 0


def cmd_submit(args) -> int:
    import kfp

    from .pipeline import compile_pipeline

    package = Path(args.package) if args.package else compile_pipeline(
        Path(args.out_dir) / f"vision-pipeline-{args.variant}.yaml", gpu=args.variant == "gpu", image=args.image)
    client = kfp.Client(host=args.host, namespace=args.namespace or None, existing_token=os.environ.get("KFP_TOKEN"))
    run = client.create_run_from_pipeline_package(
        str(package), arguments=parse_params(args.param), run_name=args.run_name,
        experiment_name=args.experiment, namespace=args.namespace or None, enable_caching=args.enable_caching)
    print(json.dumps({"run_id": run.run_id, "experiment": args.experiment, "package": str(package)}))
    return 0


def cmd_local(args) -> int:
    from .local import run_local

    kw = parse_params(args.param)
    if args.max_items is not None:
        kw["max_items"] = args.max_items
    summary = run_local(args.out, **kw)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_promote(args) -> int:
    from . import ops

    res = ops.promote(args.plan, milvus_uri=args.milvus_uri, alias=args.alias,
                      feast_config=json.loads(args.feast_config) if args.feast_config else None,
                      min_fraction=args.min_fraction)
    print(json.dumps(res, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    from .pipeline import DEFAULT_IMAGE

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(prog="python -m pipelines.kfp.cli", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("compile")
    p.add_argument("--out-dir", default=str(DEFAULT_OUT))
    p.add_argument("--variant", choices=["gpu", "cpu"], action="append")
    p.add_argument("--image", default=DEFAULT_IMAGE, help="components' base image (the project image)")
    p.add_argument("--backfill-parallelism", type=int, default=4)
    p.set_defaults(fn=cmd_compile)
    p = sub.add_parser("submit")
    p.add_argument("--host", required=True, help="KFP endpoint, e.g. http://ml-pipeline-ui.kubeflow:80")
    p.add_argument("--experiment", default="adrec-visual-embedder")
    p.add_argument("--run-name", default=None)
    p.add_argument("--namespace", default="")
    p.add_argument("--variant", choices=["gpu", "cpu"], default="gpu")
    p.add_argument("--package", default=None, help="compiled YAML (default: compile now)")
    p.add_argument("--out-dir", default=str(DEFAULT_OUT))
    p.add_argument("--image", default=DEFAULT_IMAGE)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="run parameter (JSON values)")
    p.add_argument("--enable-caching", action=argparse.BooleanOptionalAction, default=None,
                   help="override the per-step caching options for this run")
    p.set_defaults(fn=cmd_submit)
    p = sub.add_parser("local")
    p.add_argument("--out", default="out/pipeline-local")
    p.add_argument("--max-items", type=int, default=None, help="images per dataset (default 300)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="pipeline parameter or run_local option (JSON values)")
    p.set_defaults(fn=cmd_local)
    p = sub.add_parser("promote", help="switch the serving alias to a run's backfilled collection (after a canary)")
    p.add_argument("--plan", required=True, help="the run's backfill plan artifact (a directory with plan.json)")
    p.add_argument("--milvus-uri", required=True)
    p.add_argument("--alias", default="listings")
    p.add_argument("--feast-config", default="", help="JSON, as the pipeline's feast_config parameter (omit: no Feast)")
    p.add_argument("--min-fraction", type=float, default=0.95, help="share of the catalogue the collection must hold")
    p.set_defaults(fn=cmd_promote)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
