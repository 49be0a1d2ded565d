"""`make bench-api`: the similar-listings endpoint vs a raw pymilvus search of the same queries.

For each catalogue size (default 100k and 1M vectors, dim 256) on the embedded real Milvus
2.3.5 (IVF_FLAT), in one run:
- raw: `MilvusClient.search` with the endpoint's own filter and limit (k x overfetch), the
  seed vector already in hand; the ratios are against it;
- raw store.search: the same search through `ListingVectorStore.search`, the direct RPC the API
  issues (services/common/milvus_search.py), for reference;
- api: `GET /v1/listings/{id}/similar` over real HTTP against the recommender (uvicorn,
  $BENCH_API_WORKERS processes, default 2) reading the seed from Feast (SQLite) and re-ranking.
- floor: `benchmarks/api/floor_app.py`, the thinnest FastAPI endpoint over the same search (seed in
  memory, no Feast, A/B, re-rank, impression or metrics), under uvicorn with the same workers: the
  web stack's own cost, so the report shows what the endpoint's work adds on top of it.
Latency p50/p99 at concurrency 1; max throughput (QPS) at concurrency 8, each for a fixed
time, in --rounds rounds that alternate raw, API and direct (the floor runs after, on its own): the
medians are reported, each round's QPS and p50 kept in the JSON. The raw path is measured with pymilvus in this process (its client cost is part of a raw
search); the endpoint is driven by `wrk` (C) so the load generator takes little CPU from it. milvus-lite is measured separately
(--milvus lite) and noted, not used for the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.cpu import tree_cpu_s
from benchmarks.results import write
from services.common.feature_store import FeatureStoreClient, FeatureStoreConfig
from services.common.milvus_store import ListingVectorStore, SearchFilter
from services.common.settings import MilvusConfig
from services.common.events import Topics
from services.common.kafka_client import ensure_topics
from services.common.settings import KafkaConfig
from services.localstack.kafka_broker import KafkaBroker
from services.localstack.milvus_server import EmbeddedMilvus, MilvusLiteServer
from services.localstack.ports import free_port
from services.recommender.retrieval import RENDER_FIELDS

DIM = 256
K, OVERFETCH = 12, 4
N_SEEDS = 500
WORKERS = os.environ.get("BENCH_API_WORKERS", "2")  # uvicorn workers, the API's and the floor's
REPO = Path(__file__).resolve().parents[2]


def populate(uri: str, n: int, index: dict, vecs_fn) -> ListingVectorStore:
    store = ListingVectorStore(MilvusConfig(uri=uri, dim=DIM, **index))
    coll = store.create_collection(store.collection_name(f"bench{n}"), drop_existing=True)
    store.point_alias(coll)
    client = store._client  # noqa: SLF001 - bulk insert: the wrapper's per-row validation is not the point here
    rng = np.random.default_rng(1)
    step = 20_000
    t = time.perf_counter()
    for start in range(0, n, step):
        m = min(step, n - start)
        v = vecs_fn(start, m)
        client.insert(coll, [{"listing_id": f"l-{start + i}", "embedding": v[i].tolist(),
                              "shop_id": f"shop-{(start + i) % 997}", "category": f"c{(start + i) % 50}",
                              "price": float(rng.integers(1, 500)), "active": True, "updated_at": 1,
                              "model_version": "bench", "title": f"listing {start + i}",
                              "image_uri": f"/img/{start + i}.jpg", "currency": "USD"} for i in range(m)])
        print(f"  inserted {start + m}/{n} ({time.perf_counter() - t:.0f}s)", flush=True)
    client.flush(coll)
    settle(client, coll, n)  # else the first path measured searches over half-compacted, half-indexed segments
    client.release_collection(coll)
    client.load_collection(coll)
    print(f"  indexed and loaded {n} in {time.perf_counter() - t:.0f}s", flush=True)
    return store


def settle(client, coll: str, n: int, timeout_s: float = 1800) -> None:
    """Milvus compacts small segments and builds the index of flushed ones in the background, and a
    search meanwhile scans the unindexed rows while the rebuild takes the CPU. Compact now and wait
    for it, then for every row to be indexed, so raw, API and floor see the same settled index."""
    t = time.perf_counter()
    job = client.compact(coll)
    while (state := str(client.get_compaction_state(job))) != "Completed":
        if time.perf_counter() - t > timeout_s:
            raise RuntimeError(f"compaction of {coll} not done after {timeout_s:.0f}s: {state}")
        time.sleep(1)
    print(f"  compacted in {time.perf_counter() - t:.0f}s", flush=True)
    name = (client.list_indexes(coll) or ["embedding"])[0]
    last = 0.0
    while True:
        info = client.describe_index(coll, name) or {}
        indexed, pending = int(info.get("indexed_rows", 0)), int(info.get("pending_index_rows", 0))
        if indexed >= n and pending == 0:
            return
        waited = time.perf_counter() - t
        if waited > timeout_s:
            raise RuntimeError(f"index of {coll} not built after {timeout_s:.0f}s: {info}")
        if waited - last >= 10:
            print(f"  indexing: {indexed}/{n} rows ({waited:.0f}s)", flush=True)
            last = waited
        time.sleep(1)


def vectors_for(start: int, m: int) -> np.ndarray:
    rng = np.random.default_rng(start)
    centers = np.random.default_rng(0).normal(size=(200, DIM)).astype(np.float32)
    v = centers[rng.integers(0, 200, m)] + 0.5 * rng.normal(size=(m, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def percentiles(lat: list[float]) -> tuple[float, float]:
    a = np.asarray(lat) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def run_raw(store: ListingVectorStore, seeds: list[tuple[str, np.ndarray, str]], seconds: float,
            concurrency: int, via_store: bool = False) -> tuple[list[float], float]:
    """`MilvusClient.search`, or with `via_store` the store's own search (the direct RPC the API issues)."""
    lat: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds
    count = [0]

    def loop(offset: int) -> None:
        i = offset
        while time.perf_counter() < stop:
            lid, vec, shop = seeds[i % len(seeds)]
            flt = SearchFilter(exclude_ids=[lid], exclude_shop_ids=[shop])
            t = time.perf_counter()
            if via_store:
                store.search([vec], K * OVERFETCH, flt, output_fields=RENDER_FIELDS)
            else:
                store._client.search(store.cfg.alias, data=[vec.tolist()], limit=K * OVERFETCH,  # noqa: SLF001
                                     filter=flt.expression(), output_fields=RENDER_FIELDS,
                                     search_params={"metric_type": "COSINE", "params": store.cfg.search_params},
                                     consistency_level=store.cfg.search_consistency)
            with lock:
                lat.append(time.perf_counter() - t)
                count[0] += 1
            i += concurrency

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(j,)) for j in range(concurrency)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return lat, count[0] / (time.perf_counter() - start)


def run_wrk(base: str, seeds: list[tuple[str, np.ndarray, str]], seconds: float, concurrency: int,
            workdir: Path) -> tuple[float, float, float, int]:
    """wrk (C, from Debian) drives the endpoint so the load generator costs the API little CPU.
    Returns p50 ms, p99 ms, requests/s, non-2xx count."""
    script = workdir / "seeds.lua"
    ids = ", ".join(f'"{lid}"' for lid, _, _ in seeds)
    script.write_text(f"""
local ids = {{{ids}}}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/v1/listings/" .. ids[(i % #ids) + 1] .. "/similar?k={K}")
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %f %f %f %d\\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests / (summary.duration / 1e6), summary.errors.status + summary.errors.connect + summary.errors.timeout))
end
""")
    threads = min(2, concurrency)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{int(seconds)}s", "--timeout", "5s",
                          "-s", str(script), base], capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    _, p50, p99, rps, errors = line.split()
    return float(p50), float(p99), float(rps), int(errors)


def _serve(cmd: list[str], env: dict, what: str, port: int, ready_path: str) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in env.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(f"{base}{ready_path}", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{what} did not become ready")


def start_api(milvus_uri: str, feast: FeatureStoreConfig, index: dict, workdir: Path,
              kafka: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "ADREC_PORT": str(port), "ADREC_MILVUS__URI": milvus_uri, "ADREC_MILVUS__DIM": str(DIM),
           "ADREC_MILVUS__SEARCH_PARAMS": json.dumps(index.get("search_params", {})),
           "ADREC_FEAST__REGISTRY_PATH": feast.registry_path, "ADREC_FEAST__SQLITE_PATH": feast.sqlite_path,
           "ADREC_LOG_LEVEL": "WARNING", "ADREC_KAFKA__BOOTSTRAP_SERVERS": kafka,
           "ADREC_RECOMMEND__OVERFETCH": str(OVERFETCH), "ADREC_RECOMMEND__POPULAR_REFRESH_S": "100000",
           "ADREC_WORKERS": WORKERS, "PYTHONUNBUFFERED": "1"}
    return _serve([sys.executable, "-m", "services.recommender"], env, "recommender", port, "/readyz")


def start_floor(milvus_uri: str, seeds: list[tuple[str, np.ndarray, str]], index: dict, workdir: Path,
                collection: str) -> tuple[subprocess.Popen, str]:
    path = workdir / "floor-seeds.json"
    path.write_text(json.dumps({lid: [v.tolist(), shop] for lid, v, shop in seeds}))
    env = {**os.environ, "FLOOR_SEEDS": str(path), "FLOOR_URI": milvus_uri, "FLOOR_COLLECTION": collection,
           "FLOOR_LIMIT": str(K * OVERFETCH), "FLOOR_K": str(K),
           "FLOOR_SEARCH_PARAMS": json.dumps(index.get("search_params", {}))}
    port = free_port()
    return _serve([sys.executable, "-m", "uvicorn", "benchmarks.api.floor_app:app", "--host", "127.0.0.1",
                   "--port", str(port), "--workers", WORKERS, "--log-level", "warning", "--no-access-log"], env,
                  "floor app", port, "/docs")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class CpuMeter:
    """CPU ms per request of the measured path's own process(es) and of Milvus over one run: the
    path's is this process's CPU for the raw paths (pymilvus in threads here), the server's process
    tree for the HTTP ones."""

    def __init__(self, milvus_pid: int | None) -> None:
        self.milvus_pid = milvus_pid

    def run(self, fn, server_pid: int | None = None):
        """-> (fn's result, the path's CPU seconds, Milvus' CPU seconds) while fn ran."""
        own = (lambda: tree_cpu_s(server_pid)) if server_pid else time.process_time
        milvus = (lambda: tree_cpu_s(self.milvus_pid)) if self.milvus_pid else (lambda: 0.0)
        c0, m0 = own(), milvus()
        result = fn()
        return result, own() - c0, milvus() - m0


def _round(p50: float, p99: float, qps: float, seconds: float, cpu_s: float, milvus_s: float, errors: int) -> dict:
    per = 1000 / max(qps * seconds, 1)  # ms of CPU per request over the window
    return {"p50_ms": p50, "p99_ms": p99, "qps_c8": qps, "cpu_ms_per_req": cpu_s * per,
            "milvus_cpu_ms_per_req": milvus_s * per, "errors": errors}


def measure_raw(store: ListingVectorStore, seeds: list, seconds: float, meter: CpuMeter,
                via_store: bool = False) -> dict:
    """One round of a raw path: latency at 1 client, then QPS and CPU at 8."""
    lat, _ = run_raw(store, seeds, seconds, 1, via_store=via_store)
    (_, qps), cpu_s, milvus_s = meter.run(lambda: run_raw(store, seeds, seconds, 8, via_store=via_store))
    return _round(*percentiles(lat), qps, seconds, cpu_s, milvus_s, 0)


def measure_http(base: str, pid: int, seeds: list, seconds: float, meter: CpuMeter, workdir: Path) -> dict:
    """One round of an HTTP path under wrk: latency at 1 client, then QPS and the server's CPU at 8."""
    p50, p99, _, errors = run_wrk(base, seeds, seconds, 1, workdir)
    (_, _, qps, errors8), cpu_s, milvus_s = meter.run(lambda: run_wrk(base, seeds, seconds, 8, workdir), pid)
    return _round(p50, p99, qps, seconds, cpu_s, milvus_s, errors + errors8)


def bench_size(n: int, uri: str, index: dict, workdir: Path, seconds: float, label: str, kafka: str,
               milvus_pid: int | None = None, rounds: int = 3) -> list[dict]:
    print(f"[{label}] {n} vectors", flush=True)
    seed_idx = np.random.default_rng(2).choice(n, N_SEEDS, replace=False)
    store = populate(uri, n, index, vectors_for)
    rows = store.get([f"l-{i}" for i in seed_idx], with_vectors=True)
    seeds = [(r["listing_id"], np.asarray(r["embedding"], np.float32), r["shop_id"]) for r in rows]
    feast = FeatureStoreConfig(registry_path=str(workdir / f"reg{n}.db"), sqlite_path=str(workdir / f"on{n}.db"))
    fs = FeatureStoreClient(feast)
    fs.apply()
    fs.push("item_embedding_push", [{"listing_id": lid, "embedding": v.tolist(), "model_version": "bench",
                                     "updated_at": 1} for lid, v, _ in seeds])
    fs.push("item_metadata_push", [{"listing_id": lid, "shop_id": shop, "title": "t", "category": "c",
                                    "price": 1.0, "currency": "USD", "image_uri": "/x", "active": True,
                                    "updated_at": 1} for lid, _, shop in seeds])
    meter = CpuMeter(milvus_pid)
    samples: dict[str, list[dict]] = {"raw pymilvus": [], "raw store.search (direct RPC)": [], "GET /similar": [],
                                      "floor: FastAPI + search only": []}
    api, base = start_api(uri, feast, index, workdir, kafka)
    try:
        run_raw(store, seeds, 2, 2)  # warm-up both paths
        run_wrk(base, seeds, 2, 2, workdir)
        for r in range(rounds):  # alternate the paths, so drift over the run hits them alike
            print(f"  round {r + 1}/{rounds}", flush=True)
            samples["raw pymilvus"].append(measure_raw(store, seeds, seconds, meter))
            samples["GET /similar"].append(measure_http(base, api.pid, seeds, seconds, meter, workdir))
            samples["raw store.search (direct RPC)"].append(measure_raw(store, seeds, seconds, meter, via_store=True))
        stop(api)
        floor, fbase = start_floor(uri, seeds, index, workdir, store.alias_target() or store.cfg.alias)
        try:
            run_wrk(fbase, seeds, 2, 2, workdir)
            for _ in range(rounds):
                samples["floor: FastAPI + search only"].append(
                    measure_http(fbase, floor.pid, seeds, seconds, meter, workdir))
        finally:
            stop(floor)
    finally:
        stop(api)
        store.drop_collection(store.alias_target() or f"listings_vbench{n}")
        store.close()
    med = {path: {k: float(np.median([x[k] for x in xs])) for k in xs[0] if k != "errors"}
           for path, xs in samples.items()}
    ref = med["raw pymilvus"]
    out = [{"milvus": label, "vectors": n, "path": path, "p50_ms": m["p50_ms"], "p99_ms": m["p99_ms"],
            "qps_c8": m["qps_c8"], "p50_ratio": m["p50_ms"] / ref["p50_ms"], "qps_ratio": m["qps_c8"] / ref["qps_c8"],
            "cpu_ms_per_req": m["cpu_ms_per_req"], "milvus_cpu_ms_per_req": m["milvus_cpu_ms_per_req"],
            "errors": sum(x["errors"] for x in samples[path]), "rounds": rounds,
            "qps_c8_rounds": [round(x["qps_c8"], 1) for x in samples[path]],
            "p50_ms_rounds": [round(x["p50_ms"], 3) for x in samples[path]]}
           for path, m in med.items()]
    for r in out:
        print(r, flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--seconds", type=float, default=5.0, help="each measurement window")
    p.add_argument("--rounds", type=int, default=3, help="rounds of alternating paths; the medians are reported")
    p.add_argument("--milvus", choices=["server", "lite"], default="server")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        work = Path(tmp)
        if args.milvus == "server":
            server, label = EmbeddedMilvus(work / "milvus"), "Milvus 2.3.5 (IVF_FLAT nlist=1024, nprobe=16)"
            index = {"index_type": "IVF_FLAT", "index_params": {"nlist": 1024}, "search_params": {"nprobe": 16}}
        else:
            server, label = MilvusLiteServer(work / "milvus"), "milvus-lite server"
            index = {}
        server.start()
        # impressions are really logged, as in production, with production's flushing (no fsync per append)
        broker = KafkaBroker(work / "kafka", fsync_each_message=False).start()
        ensure_topics(KafkaConfig(bootstrap_servers=broker.bootstrap_servers), [Topics.USER_EVENTS])
        try:
            for n in sizes:
                rows += bench_size(n, server.uri, index, work, args.seconds, label, broker.bootstrap_servers,
                                   getattr(server, "pid", None), args.rounds)
        finally:
            server.stop()
            broker.stop()
    api_rows = [r for r in rows if r["path"] == "GET /similar"]
    verdict = all(r["p50_ratio"] <= 1.3 and r["qps_ratio"] >= 0.8 for r in api_rows)
    notes = ["one machine (2 cores) runs Milvus, the API, and the load generator: ratios matter more than absolutes",
             f"target: p50 <= 1.3x raw and QPS >= 0.8x raw: {'MET' if verdict else 'NOT MET'} "
             + ", ".join(f"{r['vectors']}: p50 {r['p50_ratio']:.2f}x, qps {r['qps_ratio']:.2f}x" for r in api_rows),
             f"k={K}, over-fetch x{OVERFETCH}; API = Feast (SQLite) seed read + Milvus search + re-rank + JSON + impression to Kafka "
             "(a real broker, flushing like a production one: no fsync per append)",
             "every path runs after Milvus has compacted and indexed all rows (both run in the background after a flush)",
             "raw store.search = the same search through the store's direct RPC (pymilvus' request builder and gRPC "
             "stub without MilvusClient's per-call layers), the call the API makes; listed for reference",
             "cpu_ms_per_req: CPU per request at 8 clients of the path's own processes (this process's pymilvus "
             "threads for the raw rows, the server's process tree for the HTTP rows; the load generator not included); "
             "milvus_cpu_ms_per_req: Milvus' over the same run. Both move far less between runs than QPS, and at "
             "saturation QPS = 2 cores / (all CPU per request)",
             f"floor = benchmarks/api/floor_app.py: FastAPI + uvicorn ({WORKERS} workers, like the API) over the same "
             "search with the seed in memory, nothing else; raw -> floor is the web stack, floor -> API the endpoint's work"]
    name = "api" if args.milvus == "server" else "api-milvus-lite"
    _, m = write(name, rows, ["milvus", "vectors", "path", "p50_ms", "p99_ms", "qps_c8", "p50_ratio", "qps_ratio",
                              "cpu_ms_per_req", "milvus_cpu_ms_per_req",
                              "errors"], notes)
    print(m.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
