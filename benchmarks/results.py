"""Benchmark results: one JSON + one Markdown table per benchmark, with machine info."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count()}
    try:
        model = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")]
        info["cpu"] = model[0].split(":", 1)[1].strip() if model else platform.processor()
        mem = [ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")]
        info["mem_gib"] = round(int(mem[0].split()[1]) / 2**20, 1) if mem else None
        info["load_avg_at_start"] = os.getloadavg()
    except OSError:
        pass
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                            text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        pass
    return info


def write(name: str, rows: list[dict[str, Any]], columns: list[str], notes: list[str],
          extra: dict[str, Any] | None = None, out_dir: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """rows: one dict per measured configuration; columns: which keys go into the table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "at": datetime.now(UTC).isoformat(timespec="seconds"),
           "machine": machine_info(), "rows": rows, "notes": notes, **(extra or {})}
    jpath = out_dir / f"{name}.json"
    jpath.write_text(json.dumps(doc, indent=2, default=str))
    lines = [f"# {name}", "", f"{doc['at']} · {doc['machine'].get('cpu', '?')} · "
             f"{doc['machine'].get('cpus')} CPUs", "", "| " + " | ".join(columns) + " |",
             "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
    lines += [""] + [f"- {n}" for n in notes]
    mpath = out_dir / f"{name}.md"
    mpath.write_text("\n".join(lines) + "\n")
    return jpath, mpath


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return "" if v is None else str(v)
