"""The HTML dashboard of one experiment: tables, warnings and two inline PNG plots (matplotlib, Agg):
CTR per day per variant with its interval, and the cumulative relative lift with its interval."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no global state, safe in request threads


def _figure():
    fig = Figure(figsize=(7, 3.4))
    return fig, fig.subplots()


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _days(*series: list[dict[str, Any]]) -> list[str]:
    """The x axis shared by every variant: the sorted union of the days in the series."""
    return sorted({p["day"] for rows in series for p in rows})


def _day_axis(ax, days: list[str]) -> None:
    ax.set_xticks(range(len(days)), [d[5:] for d in days], rotation=45, fontsize=8)


def ctr_plot(report: dict[str, Any]) -> str:
    fig, ax = _figure()
    days = _days(report["daily"])
    index = {d: i for i, d in enumerate(days)}
    for v in [r["variant"] for r in report["variants"]]:
        pts = [d for d in report["daily"] if d["variant"] == v and d["ctr"] is not None]
        if not pts:
            continue
        x = [index[p["day"]] for p in pts]  # a variant without data on a day skips that day
        y = [p["ctr"] for p in pts]
        ax.plot(x, y, marker="o", label=v)
        lo = [p["ctr_ci"][0] if p["ctr_ci"][0] is not None else p["ctr"] for p in pts]
        hi = [p["ctr_ci"][1] if p["ctr_ci"][1] is not None else p["ctr"] for p in pts]
        ax.fill_between(x, lo, hi, alpha=0.2)
    _day_axis(ax, days)
    ax.set_title(f"CTR per day ({100 * (1 - report['alpha']):.0f}% intervals)")
    ax.set_ylabel("CTR")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def lift_plot(report: dict[str, Any]) -> str:
    fig, ax = _figure()
    days = _days(report["daily"], report["cumulative"])
    index = {d: i for i, d in enumerate(days)}
    for comp in report["comparisons"]:
        pts = [c for c in report["cumulative"] if c["variant"] == comp["variant"] and c["lift"] is not None]
        if not pts:
            continue
        x = [index[p["day"]] for p in pts]
        ax.plot(x, [100 * p["lift"] for p in pts], marker="o", label=f"{comp['variant']} vs {comp['vs']}")
        lo = [100 * (p["lift_ci"][0] if p["lift_ci"][0] is not None else p["lift"]) for p in pts]
        hi = [100 * (p["lift_ci"][1] if p["lift_ci"][1] is not None else p["lift"]) for p in pts]
        ax.fill_between(x, lo, hi, alpha=0.2)
    _day_axis(ax, days)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_title("cumulative relative lift of CTR (%)")
    ax.set_ylabel("lift %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def _num(x: float | None, fmt: str = ".4f") -> str:
    return "–" if x is None else format(x, fmt)


def _ci_pct(ci: list) -> str:
    return "–" if ci[0] is None else f"[{100 * ci[0]:.2f}%, {100 * ci[1]:.2f}%]"


def render(report: dict[str, Any]) -> str:
    e = html.escape
    warn = "".join(f'<div class="warn">⚠ {e(w)}</div>' for w in report["warnings"])
    vrows = "".join(
        f"<tr><td>{e(r['variant'])}{' (control)' if r['is_control'] else ''}</td><td>{_num(r['weight'], 'g')}</td>"
        f"<td>{r['users']}</td><td>{r['requests']}</td><td>{r['impressions']}</td><td>{r['clicks']}</td>"
        f"<td>{_pct(r['ctr'])}</td><td>{_ci_pct(r['ctr_ci'])}</td><td>{_num(r['clicks_per_user'])}</td></tr>"
        for r in report["variants"])
    crows = "".join(
        f"<tr><td>{e(c['variant'])} vs {e(c['vs'])}</td><td>{_pct(c['ctr_diff'], 3)}</td>"
        f"<td>{_ci_pct(c['ctr_diff_ci'])}</td><td>{_pct(c['relative_lift'])}</td>"
        f"<td>{_ci_pct(c['relative_lift_ci'])}</td><td>{_num(c['delta_method']['p_value'], '.2e')}</td>"
        f"<td>{_num(c['two_proportion']['p_value'], '.2e')}</td><td>{_num(c['sequential']['p_value'], '.2e')}"
        f"{' ✔' if c['sequential']['significant'] else ''}</td></tr>"
        for c in report["comparisons"])
    srm = report["srm"]
    plots = ""
    if report["daily"]:
        plots = f'<img alt="CTR per day" src="{ctr_plot(report)}"><img alt="cumulative lift" src="{lift_plot(report)}">'
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>experiment {e(report['experiment_id'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
.warn{{background:#fff3cd;border:1px solid #e0b000;padding:8px;margin:6px 0}}img{{max-width:49%}}</style></head>
<body><h1>Experiment <code>{e(report['experiment_id'])}</code></h1>
<p>generated {e(report['generated_at'])} · α = {report['alpha']} · control: {e(report['control'])} ·
<a href="/v1/experiments/{e(report['experiment_id'])}/report">JSON</a></p>
{warn}
<h2>Variants</h2><table><tr><th>variant</th><th>weight</th><th>users</th><th>requests</th><th>impressions</th>
<th>clicks</th><th>CTR</th><th>CTR interval</th><th>clicks/user</th></tr>{vrows}</table>
<h2>Comparisons</h2><table><tr><th>comparison</th><th>CTR diff</th><th>interval</th><th>lift</th><th>interval</th>
<th>p (delta)</th><th>p (two-prop.)</th><th>p (always valid)</th></tr>{crows}</table>
<p>Sample ratio check: χ² = {_num(srm['chi2'], '.2f')}, p = {_num(srm['p_value'], '.3g')}
(warning below {srm['alpha']}): {'<b>MISMATCH</b>' if srm['warning'] else 'ok'}</p>
<h2>Over time</h2>{plots or '<p>no data yet</p>'}
</body></html>"""
