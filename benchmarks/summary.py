"""`make bench`: every benchmark's figures in one table, each with its reference and ratio.

Reads the per-benchmark results (benchmarks/results/{ingest,api,embedder}.json)
and writes benchmarks/results/summary.{json,md}. Run the benchmarks first (the Makefile does).
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.results import RESULTS_DIR, machine_info, write



def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def rows() -> list[dict]:
    out: list[dict] = []
    ing = _load(RESULTS_DIR / "ingest.json")
    if ing:
        for r in ing["rows"]:
            if r["scenario"] == "paced":
                out.append({"benchmark": "ingest", "figure": "freshness p99 at 1,000 events/s (s)",
                            "value": r["freshness_p99_s"], "reference": "target 1.0 s",
                            "ratio": r["freshness_p99_s"] / 1.0, "met": r["freshness_p99_s"] <= 1.0})
                out.append({"benchmark": "ingest", "figure": "sustained events/s (paced at 1,000)",
                            "value": r["events_per_s"], "reference": "offered 1,000/s",
                            "ratio": r["events_per_s"] / 1000, "met": None})
            elif r["scenario"] == "drain":
                out.append({"benchmark": "ingest", "figure": "max events/s (drain a backlog)",
                            "value": r["events_per_s"], "reference": "-", "ratio": None, "met": None})
            elif r["scenario"] == "embedder":
                out.append({"benchmark": "ingest", "figure": f"freshness p99 via embedder at {r['target_rate']:.0f}/s (s)",
                            "value": r["freshness_p99_s"], "reference": "-", "ratio": None, "met": None})
    api = _load(RESULTS_DIR / "api.json")
    if api:
        for r in api["rows"]:
            if r["path"] == "raw pymilvus":
                continue
            endpoint = r["path"] == "GET /similar"  # else context, no target
            who = "" if endpoint else (" of the floor (FastAPI + search only)" if r["path"].startswith("floor")
                                       else f" of {r['path']}")
            out.append({"benchmark": "api", "figure": f"p50 latency{who}, {r['vectors']:,} vectors (ms)",
                        "value": r["p50_ms"], "reference": "raw pymilvus" + (", target <= 1.3x" if endpoint else ""),
                        "ratio": r["p50_ratio"], "met": r["p50_ratio"] <= 1.3 if endpoint else None})
            out.append({"benchmark": "api", "figure": f"QPS at 8 clients{who}, {r['vectors']:,} vectors",
                        "value": r["qps_c8"], "reference": "raw pymilvus" + (", target >= 0.8x" if endpoint else ""),
                        "ratio": r["qps_ratio"], "met": r["qps_ratio"] >= 0.8 if endpoint else None})
    emb = _load(RESULTS_DIR / "embedder.json")
    if emb:
        for r in emb["rows"]:
            if r.get("raw"):
                at_mean = r.get("raw_at_mean_batch")
                ref = (f"raw ORT, {r['raw'].get('parallel', 1)} forward(s) at once of batch {r['raw']['batch']}"
                       + (f" (or {at_mean['batch']}, the faster)" if at_mean else ""))
                out.append({"benchmark": "embedder",
                            "figure": f"images/s, {r['clients']} clients {r['transport']}",
                            "value": r["images_per_s"], "reference": ref
                            + (", target >= 0.9x" if r["clients"] == 32 else ""),
                            "ratio": r["ratio"], "met": r["ratio"] >= 0.9 if r["clients"] == 32 else None})
            elif "ratio_vs_32_client_raw" in r:
                out.append({"benchmark": "embedder", "figure": f"images/s, {r['clients']} clients {r['transport']}",
                            "value": r["images_per_s"], "reference": "the 32-client row's raw ORT",
                            "ratio": r["ratio_vs_32_client_raw"], "met": None})
            elif r["clients"] == 32:
                out.append({"benchmark": "embedder", "figure": f"images/s, 32 clients {r['transport']}",
                            "value": r["images_per_s"], "reference": "-", "ratio": None, "met": None})
        if emb.get("floor"):
            f = emb["floor"]
            out.append({"benchmark": "embedder", "figure": "floor CPU per request, ms (bare grpc.aio server + load generator); "
                                                           "ratio: the ceiling of server/raw here",
                        "value": round(f["server_cpu_ms_per_request"] + f["loadgen_cpu_ms_per_request"], 3),
                        "reference": f"raw ORT {f['raw_cpu_ms_per_image']:.3f} ms CPU/image",
                        "ratio": f["ceiling"], "met": None})
    return out


def main() -> int:
    table = rows()
    for r in table:
        r["met"] = {True: "yes", False: "NO", None: ""}[r["met"]]
    _, md = write("summary", table, ["benchmark", "figure", "value", "reference", "ratio", "met"],
                  ["each benchmark runs on this one machine; see its own JSON for the run's details"],
                  {"machine_at_summary": machine_info()})
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
