"""Evaluation report: report.json, report.md, recall_at_k.png, query_grid.png."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .evaluate import strip_private

MODEL_ORDER = ("finetuned", "imagenet", "random")


def _models(results: dict) -> list[str]:
    ms = list(results["models"])
    return [m for m in MODEL_ORDER if m in ms] + [m for m in ms if m not in MODEL_ORDER]


def _fmt(x) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def markdown(report: dict) -> str:
    res = report["evaluation"]
    p = res["protocol"]
    lines = [f"# Visual embedding report: {report.get('name', '')} {report.get('version', '')}", ""]
    info = report.get("run", {})
    if info:
        lines += ["| run | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in info.items()] + [""]
    for prot in (p, *[x for x in ("catalogue", "heldout") if x != p]):
        head = "headline" if prot == p else "secondary"
        lines += [f"## Retrieval, protocol `{prot}` ({head})", ""]
        tasks = list(next(iter(res["models"].values()))[prot])
        for t in tasks:
            any_m = res["models"][_models(res)[0]][prot][t]
            metric_keys = [k for k in any_m if k.startswith(("p@", "recall@", "map@"))]
            lines += [f"### {t}  (queries {any_m['n_queries']}, gallery {any_m['n_gallery']})", "",
                      "| model | " + " | ".join(metric_keys) + " |", "|---|" + "---|" * len(metric_keys)]
            for m in _models(res):
                mm = res["models"][m][prot][t]
                lines.append(f"| {m} | " + " | ".join(_fmt(mm[k]) for k in metric_keys) + " |")
            lines.append("")
    acc = report.get("acceptance")
    if acc:
        lines += ["## Fine-tuned vs ImageNet (headline protocol, P@1)", "", "| task | fine-tuned | ImageNet | Δ |", "|---|---|---|---|"]
        for t, v in acc["per_task"].items():
            lines.append(f"| {t} | {_fmt(v['finetuned_p@1'])} | {_fmt(v['imagenet_p@1'])} | {v['delta']:+.3f} |")
        lines += ["", f"- beats ImageNet on every task: **{acc['beats_imagenet_on_every_task']}**",
                  f"- {acc['primary_task']} P@1 margin: **{acc['primary_margin']:+.3f}** (target ≥ +0.050): "
                  f"**{'PASS' if acc['primary_margin_ok'] else 'FAIL'}**", ""]
    ab = report.get("weak_label_ablation")
    if ab:
        lines += ["## Weak-label (title-cluster) head ablation", "",
                  f"P@1, protocol `{ab['protocol']}`; same recipe, seed and data with and without the extra head.", "",
                  "| task | with title clusters | without | Δ |", "|---|---|---|---|"]
        for t, v in ab["per_task"].items():
            lines.append(f"| {t} | {_fmt(v['with'])} | {_fmt(v['without'])} | {v['delta']:+.3f} |")
        lines += ["", f"Verdict: {ab['verdict']}", ""]
    gen = report.get("generative")
    if gen:
        lines += ["## Generative text-to-image evaluation", "", f"generator: `{gen.get('generator')}`", "",
                  "| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in gen["metrics"].items()] + [""]
    hist = report.get("training", {}).get("history", [])
    if hist:
        lines += ["## Training (per epoch)", "", "| stage | epoch | loss | seconds | val acc (per head) |", "|---|---|---|---|---|"]
        for h in hist:
            va = ", ".join(f"{k} {v:.2f}" for k, v in h.get("val_acc", {}).items())
            lines.append(f"| {h['stage']} | {h['epoch']} | {h['train_loss']:.3f} | {h['seconds']} | {va} |")
        lines.append("")
    lines += ["## Protocol", "",
              "- embedding = L2-normalised layer before the heads (fine-tuned) / pooled backbone features (baselines);",
              "- cosine kNN; `catalogue`: test-split queries vs. every item of the gallery dataset except the query;",
              "  `heldout`: test-split queries vs. test split only (leave-one-out);",
              "- P@1 = top hit has the query's label; Recall@k = any of the top k does; mAP@k = mean AP truncated at k",
              "  normalised by min(k, #relevant); queries without any relevant gallery item are excluded.",
              "", "Plots: `recall_at_k.png`, `query_grid.png`.", ""]
    return "\n".join(lines)


def plot_recall_at_k(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = results["protocol"]
    models = _models(results)
    tasks = list(results["models"][models[0]][p])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        for m in models:
            mm = results["models"][m][p][t]
            ks = sorted(int(k.split("@")[1]) for k in mm if k.startswith("recall@"))
            ax.plot(ks, [mm[f"recall@{k}"] for k in ks], marker="o", label=m)
        ax.set_title(t, fontsize=10)
        ax.set_xlabel("k")
        ax.set_ylabel("Recall@k")
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Recall@k (protocol: {p})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_query_grid(results: dict, datasets: dict, path: Path, n_queries: int = 6, top: int = 5,
                    models: tuple[str, ...] = ("finetuned", "imagenet"), seed: int = 0) -> None:
    """Rows: query image then its top-5 for each model; green frame = same label, red = different."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = results["protocol"]
    models = tuple(m for m in models if m in results["models"])
    tasks = results["tasks"]
    rows = []
    rng = np.random.default_rng(seed)
    for t in tasks:
        name = t["name"]
        r0 = results["models"][models[0]][p].get(name, {}).get("_rankings")
        if r0 is None:
            continue
        pick = rng.choice(len(r0["query_rows"]), size=min(max(1, n_queries // max(1, len(tasks))), len(r0["query_rows"])),
                          replace=False)
        for qi in pick:
            for m in models:
                r = results["models"][m][p][name]["_rankings"]
                rows.append((name, m, t["query"], t["gallery"], r["query_rows"][qi], r["query_labels"][qi],
                             r["gallery_rows"][qi][:top], r["gallery_labels"][qi][:top]))
    if not rows:
        return
    fig, axes = plt.subplots(len(rows), top + 1, figsize=(1.5 * (top + 1), 1.9 * len(rows)), squeeze=False)
    for i, (task, m, qd, gd, qrow, qlab, grows, glabs) in enumerate(rows):
        ax = axes[i][0]
        ax.imshow(datasets[qd].images[qrow])
        ax.set_title(f"{m}\n{task}\nQ: {qlab}"[:60], fontsize=6)
        for j, (g, gl) in enumerate(zip(grows, glabs)):
            ax = axes[i][j + 1]
            ax.imshow(datasets[gd].images[g])
            ok = gl == qlab
            for s in ax.spines.values():
                s.set_edgecolor("green" if ok else "red")
                s.set_linewidth(3)
            ax.set_title(str(gl)[:18], fontsize=6, color="green" if ok else "red")
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(out_dir: Path, *, results: dict, datasets: dict | None = None, extra: dict | None = None,
                 grid_queries: int = 6) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = dict(extra or {})
    report["evaluation"] = strip_private(results)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_json_default))
    (out / "report.md").write_text(markdown(report))
    plot_recall_at_k(report["evaluation"], out / "recall_at_k.png")
    if datasets is not None:
        plot_query_grid(results, datasets, out / "query_grid.png", n_queries=grid_queries)
    return report


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
