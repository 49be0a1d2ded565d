"""CLI: python -m pipelines.vision.cli {train,evaluate,export,report,run,generative-eval} --config X --out DIR

  train            fine-tune; writes DIR/model.pt, DIR/checkpoints/last.pt, DIR/train_metrics.jsonl
  evaluate         kNN retrieval of DIR/model.pt vs ImageNet and random baselines -> DIR/evaluation.json
  export           DIR/model.onnx, DIR/model.torchscript.pt, DIR/model_card.json (+ parity check)
  report           DIR/report.{json,md}, recall_at_k.png, query_grid.png from DIR/evaluation.json
  run              all of the above in one process (shares cached activations), optional weak-label ablation
  ablate-weak-labels  retrain an existing run without the title-cluster head; adds the comparison to the report
  generative-eval  text-to-image retrieval evaluation (diffusers; ``--tiny`` = tiny random pipeline smoke test)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger("pipelines.vision")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML config overriding the defaults")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--data-dir", default=None, help="data root (default: $ADREC_DATA_DIR or <repo>/../shared/data)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.stage2.epochs=2 (repeatable)")


def _config(args):
    from .config import load_config

    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.root={args.data_dir}")
    return load_config(args.config, overrides)


def _jsonable_eval(results: dict) -> dict:
    """Evaluation results with rankings as lists (embeddings dropped) for evaluation.json."""
    import numpy as np

    def conv(o):
        if isinstance(o, dict):
            return {k: conv(v) for k, v in o.items() if k != "_embeddings"}
        if isinstance(o, (list, tuple)):
            return [conv(v) for v in o]
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        return o

    return conv(results)


def _rankings_from_json(results: dict) -> dict:
    import numpy as np

    for m in results["models"].values():
        for prot in m.values():
            for t in prot.values():
                r = t.get("_rankings")
                if r:
                    r["query_rows"] = np.asarray(r["query_rows"])
                    r["gallery_rows"] = np.asarray(r["gallery_rows"])
                    r["gallery_labels"] = np.asarray(r["gallery_labels"], dtype=object)
    return results


# ----------------------------------------------------------------------------- commands


def cmd_train(args) -> int:
    from .train import train

    from .backbones import check_backbone

    cfg = _config(args)
    check_backbone(cfg.model.backbone, cfg.model.weights)
    res = train(cfg, Path(args.out), resume=args.resume)
    log.info("trained in %.1fs -> %s", res.seconds, Path(args.out) / "model.pt")
    return 0


def _evaluate(cfg, datasets, model, store, device="cpu"):
    from .evaluate import acceptance, run_evaluation

    res = run_evaluation(cfg, datasets, model=model, store=store, device=device)
    res["acceptance"] = acceptance(res)
    return res


def cmd_evaluate(args) -> int:
    from .data import load_datasets
    from .train import PrefixStore, load_model, prepare_data

    cfg = _config(args)
    out = Path(args.out)
    model, payload, mcfg = load_model(Path(args.model or out / "model.pt"))
    cfg_eval = mcfg.model_copy(update={"eval": cfg.eval, "data": cfg.data})
    prepared = prepare_data(cfg_eval, load_datasets(cfg_eval))
    store = PrefixStore(model, cfg_eval, "cpu") if (cfg_eval.train.prefix_cache and model.backbone.has_prefix) else None
    res = _evaluate(cfg_eval, prepared.datasets, model, store)
    (out / "evaluation.json").write_text(json.dumps(_jsonable_eval(res)))
    _print_summary(res)
    return 0


def cmd_export(args) -> int:
    from .export import export_all
    from .train import load_model

    cfg = _config(args)
    out = Path(args.out)
    model, payload, mcfg = load_model(Path(args.model or out / "model.pt"))
    metrics = _headline_metrics(json.loads(Path(args.metrics).read_text())) if args.metrics and Path(args.metrics).is_file() else {}
    card = export_all(model.embedding_net(), mcfg.model_copy(update={"export": cfg.export}), out, card_kwargs=dict(
        embedding_dim=model.embedding_dim, heads=payload["heads"], metrics=metrics, data_hash=payload["data_hash"],
        weights_info=payload.get("weights_info"), skipped=payload.get("skipped")))
    log.info("exported: parity %s", card["parity"])
    return 0


def cmd_report(args) -> int:
    from .data import load_datasets
    from .report import write_report

    cfg = _config(args)
    out = Path(args.out)
    ev = _rankings_from_json(json.loads(Path(args.evaluation or out / "evaluation.json").read_text()))
    previous = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
    extra = {k: v for k, v in previous.items() if k != "evaluation"}  # keep run info / history of `run`
    extra.update({"name": cfg.name, "version": cfg.version, "acceptance": ev.pop("acceptance", None)})
    for name in ("weak_label_ablation", "generative"):
        f = out / f"{name}.json"
        if f.is_file():
            extra[name] = json.loads(f.read_text())
    write_report(out, results=ev, datasets=load_datasets(cfg), extra=extra, grid_queries=cfg.eval.grid_queries)
    log.info("report -> %s", out / "report.md")
    return 0


def _headline_metrics(ev: dict) -> dict:
    p = ev["protocol"]
    return {"protocol": p, **{m: {t: {k: v for k, v in mm.items() if not k.startswith("_")} for t, mm in ev["models"][m][p].items()}
                              for m in ev["models"]}}


def _print_summary(res: dict) -> None:
    p = res["protocol"]
    for m, by_p in res["models"].items():
        for t, mm in by_p[p].items():
            print(f"{m:10s} {t:24s} P@1 {mm['p@1']:.3f}  R@5 {mm.get('recall@5', float('nan')):.3f}  "
                  f"mAP {[v for k, v in mm.items() if k.startswith('map@')][0]:.3f}")
    acc = res.get("acceptance") or {}
    if acc:
        print(f"beats ImageNet on every task: {acc['beats_imagenet_on_every_task']}; "
              f"{acc['primary_task']} margin {acc['primary_margin']:+.3f} -> {'PASS' if acc['passed'] else 'FAIL'}")


def weak_label_ablation(cfg, with_results: dict, out: Path, datasets: dict, store=None) -> dict:
    """Retrain the same recipe (same seed, data, splits) without the title-cluster head; compare P@1 per task.

    ``store``: frozen-prefix activations of the main run, reused when the prefix is identical.
    """
    from .evaluate import run_evaluation
    from .train import Trainer, prepare_data

    cfg_off = cfg.model_copy(update={"weak_labels": cfg.weak_labels.model_copy(update={"enabled": False})})
    prepared = prepare_data(cfg_off, datasets)
    tr = Trainer(cfg_off, out / "ablation_no_weak_labels", prepared)
    if store is not None and tr.store is not None and tr.store.fingerprint == store.fingerprint:
        tr.store._cache = store._cache
    res = tr.fit()
    ev = run_evaluation(cfg_off, prepared.datasets, model=res.model, store=tr.store, models=["finetuned"])
    p = cfg.eval.protocol
    per_task = {}
    for t, m in with_results["models"]["finetuned"][p].items():
        w, wo = m["p@1"], ev["models"]["finetuned"][p][t]["p@1"]
        per_task[t] = {"with": w, "without": wo, "delta": w - wo}
    mean_delta = sum(v["delta"] for v in per_task.values()) / max(1, len(per_task))
    n_q = {t: m["n_queries"] for t, m in with_results["models"]["finetuned"][p].items()}
    se = max((0.5 / n ** 0.5 for n in n_q.values()), default=0.0)  # worst-case binomial SE of one P@1
    verdict = (f"mean ΔP@1 {mean_delta:+.3f} across tasks; "
               + ("helps" if mean_delta > se else "hurts" if mean_delta < -se else "no significant effect")
               + f" (one-task binomial SE ≈ {se:.3f})")
    ab = {"protocol": p, "per_task": per_task, "mean_delta": mean_delta, "verdict": verdict,
          "train_seconds": res.seconds, "heldout": {t: {"with": with_results["models"]["finetuned"]["heldout"][t]["p@1"],
                                                         "without": ev["models"]["finetuned"]["heldout"][t]["p@1"]}
                                                     for t in per_task}}
    (out / "weak_label_ablation.json").write_text(json.dumps(ab, indent=2))
    return ab


def cmd_ablate(args) -> int:
    """Weak-label ablation for an existing run directory (model trained with the title-cluster head)."""
    from .train import prepare_data

    cfg = _config(args)
    out = Path(args.out)
    ev = json.loads((out / "evaluation.json").read_text())
    if not cfg.weak_labels.enabled:
        raise ValueError("weak_labels.enabled is false in the config: nothing to ablate")
    t = time.time()
    ab = weak_label_ablation(cfg, ev, out, prepare_data(cfg).datasets)
    log.info("weak-label ablation (%.0fs): %s", time.time() - t, ab["verdict"])
    return cmd_report(args)


def cmd_run(args) -> int:
    """train -> evaluate (fine-tuned + baselines) -> export -> report, in one process."""
    from .export import export_all
    from .report import write_report
    from .train import Trainer, configure_threads, prepare_data, save_model

    from .backbones import check_backbone

    t0 = time.time()
    cfg = _config(args)
    check_backbone(cfg.model.backbone, cfg.model.weights)
    configure_threads(cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    prepared = prepare_data(cfg)
    timings["data_s"] = round(time.time() - t0, 1)
    trainer = Trainer(cfg, out, prepared)
    t = time.time()
    res = trainer.fit(resume=args.resume)
    save_model(res, cfg, out / "model.pt")
    timings["train_s"] = round(time.time() - t, 1)
    t = time.time()
    ev = _evaluate(cfg, prepared.datasets, res.model, trainer.store, str(trainer.device))
    timings["evaluate_s"] = round(time.time() - t, 1)
    (out / "evaluation.json").write_text(json.dumps(_jsonable_eval(ev)))
    t = time.time()
    metrics = _headline_metrics(_jsonable_eval(ev))
    import numpy as np

    from .preprocessing import normalize

    real = [d.images[d.indices("test")[:2]] for d in prepared.datasets.values()]  # parity on real photos
    card = export_all(res.model.embedding_net(), cfg, out, sample=normalize(np.concatenate(real), cfg.input.spec()),
                      card_kwargs=dict(embedding_dim=res.model.embedding_dim, heads=[h.to_dict() for h in prepared.heads],
                                       metrics=metrics, data_hash=prepared.data_hash, weights_info=res.weights_info,
                                       skipped=prepared.skipped()))
    timings["export_s"] = round(time.time() - t, 1)
    ablation = None
    if args.ablate_weak_labels and cfg.weak_labels.enabled:
        t = time.time()
        ablation = weak_label_ablation(cfg, ev, out, prepared.datasets, trainer.store)
        timings["weak_label_ablation_s"] = round(time.time() - t, 1)
    timings["total_s"] = round(time.time() - t0, 1)
    run_info = {"backbone": cfg.model.backbone, "weights": cfg.model.weights, "device": res.device,
                "input": f"{cfg.input.height}x{cfg.input.width} {cfg.input.resize}", "embedding_dim": res.model.embedding_dim,
                "heads": ", ".join(f"{h.name}({len(h.classes)})" for h in prepared.heads),
                "items": ", ".join(f"{n}: {len(d)} (train {len(d.indices('train'))}, val {len(d.indices('val'))}, "
                                   f"test {len(d.indices('test'))}; skipped {d.skipped})" for n, d in prepared.datasets.items()),
                "data_hash": prepared.data_hash[:16], **timings}
    extra = {"name": cfg.name, "version": cfg.version, "run": run_info, "acceptance": ev.get("acceptance"),
             "weak_label_ablation": ablation, "export": {"parity": card["parity"], "opset": card["onnx_opset"]},
             "weak_label_clusters": prepared.weak_terms, "training": {"history": res.history}}
    write_report(out, results={k: v for k, v in ev.items() if k != "acceptance"}, datasets=prepared.datasets,
                 extra=extra, grid_queries=cfg.eval.grid_queries)
    _print_summary(ev)
    if ablation:
        print("weak labels:", ablation["verdict"])
    print(f"timings: {timings}")
    print(f"outputs in {out}: model.pt model.onnx model.torchscript.pt model_card.json report.md report.json "
          f"recall_at_k.png query_grid.png")
    return 0


def cmd_generative(args) -> int:
    from .generative import build_generator, generative_eval
    from .train import load_model, prepare_data
    from .data import load_datasets

    cfg = _config(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, payload, mcfg = load_model(Path(args.model or out / "model.pt"))
    gcfg = cfg.generative
    if args.tiny:
        gcfg = gcfg.model_copy(update={"kind": "tiny-random"})
    if args.generator_path:
        gcfg = gcfg.model_copy(update={"kind": "diffusers", "path": args.generator_path})
    data_cfg = mcfg.model_copy(update={"data": cfg.data})
    datasets = prepare_data(data_cfg, load_datasets(data_cfg)).datasets
    res = generative_eval(model.embedding_net(), datasets["fashion"], build_generator(gcfg), mcfg.input.spec(),
                          num_queries=gcfg.num_queries, ks=tuple(cfg.eval.ks), seed=gcfg.seed)
    (out / "generative.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res["metrics"], indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(prog="python -m pipelines.vision.cli", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train")
    _add_common(p)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.set_defaults(fn=cmd_train)
    p = sub.add_parser("evaluate")
    _add_common(p)
    p.add_argument("--model", default=None, help="model.pt (default OUT/model.pt)")
    p.set_defaults(fn=cmd_evaluate)
    p = sub.add_parser("export")
    _add_common(p)
    p.add_argument("--model", default=None)
    p.add_argument("--metrics", default=None, help="evaluation.json to embed in the model card")
    p.set_defaults(fn=cmd_export)
    p = sub.add_parser("report")
    _add_common(p)
    p.add_argument("--evaluation", default=None)
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("run")
    _add_common(p)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--ablate-weak-labels", action="store_true", help="also train without the title-cluster head")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("ablate-weak-labels", help="retrain without the title-cluster head and add the comparison to the report")
    _add_common(p)
    p.add_argument("--evaluation", default=None)
    p.set_defaults(fn=cmd_ablate)
    p = sub.add_parser("generative-eval")
    _add_common(p)
    p.add_argument("--model", default=None)
    p.add_argument("--tiny", action="store_true", help="tiny randomly initialised diffusers pipeline (smoke test)")
    p.add_argument("--generator-path", default=None, help="local Stable Diffusion pipeline directory")
    p.set_defaults(fn=cmd_generative)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
