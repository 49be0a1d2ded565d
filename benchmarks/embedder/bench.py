"""Embedder benchmark: images/s and p50/p99 latency at 1, 8, 32 concurrent clients, side by side
with a raw ONNX Runtime forward pass at the same batch size, in the same run.

Each client sends ONE preprocessed image (FP32 [1, 3, H, W]) per request over gRPC
(a ModelInferRequest with raw_input_contents, as kserve's InferenceGRPCClient sends it) and waits
for the answer before sending the next; the server batches concurrent requests (up to 32). The
clients are benchmarks/grpcload, a small Go closed-loop generator (the gRPC counterpart of wrk):
the clients share the machine's cores with the server, and a Python client spends more CPU per
call than the server does, which would measure the client. The raw baseline runs the same model
file with the same session options directly at batch 1, 8 and 32, measured right before each
server repetition (alternating, median of --reps) so both see the same machine load. Extra rows
at 32 clients: encoded JPEGs over gRPC (the server decodes), kserve's own Python gRPC client
(its client-side CPU included), and the REST v2 binary extension (Python client); and 4 clients
sending 8 images per request (the same 32 images in flight, an eighth of the requests).

CPU per image of the server's process tree and of the load generator is measured for the grpcload
rows. A floor (floor_server.py: a bare grpc.aio server with a canned answer) under the same 32
clients gives the CPU any Python gRPC server and the generator spend per request, hence the
ceiling of server/raw on this machine at one image per request.

    python -m benchmarks.embedder.bench [--model-dir DIR] [--seconds 8] [--out out/bench/embedder]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from services.common.settings import DATA_DIR as DATA  # noqa: E402
from services.localstack.ports import free_port  # noqa: E402
from services.localstack.process import ManagedProcess  # noqa: E402

CONCURRENCY = (1, 8, 32)
BATCHED = 8  # images per request in the batched row (4 clients: the same 32 images in flight)


# -- the model -----------------------------------------------------------------------------

def demo_model(out: Path) -> Path:
    """out/vision-demo if trained, else the demo config's architecture + packaged ImageNet weights."""
    trained = REPO / "out" / "vision-demo"
    if (trained / "model_card.json").is_file() and (trained / "model.onnx").is_file():
        return trained
    if (out / "model_card.json").is_file():
        return out
    import torch

    from pipelines.vision.config import load_config
    from pipelines.vision.export import export_all
    from pipelines.vision.model import build_model

    print(f"no trained model in {trained}; exporting the demo architecture with ImageNet weights to {out}", flush=True)
    cfg = load_config(REPO / "configs" / "vision" / "demo.yaml", ["version=0.0.0-bench", "export.torchscript=false"])
    torch.manual_seed(0)
    model, _ = build_model(cfg, {"category": 10})
    model.eval()
    export_all(model.embedding_net(), cfg, out, card_kwargs=dict(
        embedding_dim=model.embedding_dim, heads=[{"name": "category", "num_classes": 10}], metrics={},
        data_hash="bench (untrained heads, ImageNet backbone)"))
    return out


def real_inputs(spec, n: int = 64) -> tuple[np.ndarray, list[bytes]]:
    from pipelines.vision.preprocessing import preprocess_bytes

    paths = sorted((DATA / "fashion-products" / "images").glob("*.jpg"))[: n // 2] + \
        sorted((DATA / "clothing" / "test").glob("*/*.jpg"))[: n // 2]
    if not paths:
        raise SystemExit(f"no images under {DATA}")
    jpegs = [p.read_bytes() for p in paths]
    return np.stack([preprocess_bytes(b, spec) for b in jpegs]), jpegs


def write_requests(path: Path, model: str, x: np.ndarray | None = None, jpegs: list[bytes] | None = None,
                   per_request: int = 1) -> Path:
    """Length-prefixed serialized ModelInferRequests for grpcload: one image each, or `per_request`
    preprocessed images each (FP32 only)."""
    import struct

    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    with path.open("wb") as f:
        for i in range(len(x) if x is not None else len(jpegs)):
            r = pb.ModelInferRequest(model_name=model)
            if x is not None:
                rows = np.take(x, range(i, i + per_request), axis=0, mode="wrap")
                r.inputs.add(name="images", datatype="FP32", shape=[per_request, *x.shape[1:]])
                r.raw_input_contents.append(np.ascontiguousarray(rows, dtype="<f4").tobytes())
            else:  # the v2 BYTES tensor layout: 4-byte little-endian length, then the bytes
                r.inputs.add(name="image_bytes", datatype="BYTES", shape=[1])
                r.raw_input_contents.append(struct.pack("<I", len(jpegs[i])) + jpegs[i])
            b = r.SerializeToString()
            f.write(struct.pack(">I", len(b)) + b)
    return path


def grpcload() -> Path:
    subprocess.run([str(REPO / "scripts" / "build_grpcload.sh")], check=True)
    return REPO / ".cache" / "bin" / "grpcload"


def _children_cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def bench_grpcload(binary: Path, url: str, data: Path, clients: int, seconds: float, *,
                   server_pid: int | None = None, per_request: int = 1) -> dict:
    """One closed-loop run; with `server_pid`, also the CPU per image of the server's process tree
    and of the load generator (both over the whole run, warm-up included)."""
    from benchmarks.cpu import tree_cpu_s

    gen0, srv0 = _children_cpu_s(), tree_cpu_s(server_pid) if server_pid else 0.0
    out = subprocess.run([str(binary), "-addr", url, "-data", str(data), "-concurrency", str(clients),
                          "-connections", str(min(clients, 4)), "-duration", f"{seconds}s", "-warmup", "1s"],
                         check=True, capture_output=True, text=True, timeout=seconds + 120)
    srv1, gen1 = tree_cpu_s(server_pid) if server_pid else 0.0, _children_cpu_s()
    r = json.loads(out.stdout)
    if r["errors"]:
        raise RuntimeError(f"grpcload: {r['errors']} errors, first: {r.get('first_error')}")
    res = {"clients": clients, "images_per_request": per_request, "images_per_s": r["requests_per_s"] * per_request,
           "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "requests": r["requests"], "errors": r["errors"]}
    images = r["completed"] * per_request
    if server_pid and images:
        res["server_cpu_ms_per_image"] = (srv1 - srv0) * 1e3 / images
        res["loadgen_cpu_ms_per_image"] = (gen1 - gen0) * 1e3 / images
    return res


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# -- raw ONNX Runtime ------------------------------------------------------------------------

def bench_raw(session, x: np.ndarray, batch: int, seconds: float, parallel: int = 1) -> dict:
    """Forward passes of `batch` images back to back, from `parallel` threads on one session (the
    server's layout when it runs that many batches at once)."""
    import threading

    xb = np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))
    for _ in range(3):
        session.run(None, {"images": xb})
    lat: list[float] = []
    lock = threading.Lock()
    t0 = time.perf_counter()

    def loop() -> None:
        mine = []
        while time.perf_counter() - t0 < seconds:
            t = time.perf_counter()
            session.run(None, {"images": xb})
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=loop) for _ in range(parallel)]
    cpu0 = _own_cpu_s()
    [t.start() for t in threads]
    [t.join() for t in threads]
    elapsed, cpu = time.perf_counter() - t0, _own_cpu_s() - cpu0
    return {"batch": batch, "parallel": parallel, "images_per_s": len(lat) * batch / elapsed,
            "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3, "forwards": len(lat),
            "cpu_ms_per_image": cpu * 1e3 / max(1, len(lat) * batch)}


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


# -- the server ------------------------------------------------------------------------------

def start_server(model_dir: Path, log_dir: Path, threads: int, max_batch: int, max_wait_ms: float,
                 concurrent_batches: int = 1) -> tuple:
    http, grpc_port = free_port(), free_port()
    env = {**os.environ, "ADREC_EMBEDDER__MODEL_DIR": str(model_dir), "ADREC_EMBEDDER__HOST": "127.0.0.1",
           "ADREC_EMBEDDER__HTTP_PORT": str(http), "ADREC_EMBEDDER__GRPC_PORT": str(grpc_port),
           "ADREC_EMBEDDER__INTRA_OP_THREADS": str(threads), "ADREC_EMBEDDER__MAX_BATCH_SIZE": str(max_batch),
           "ADREC_EMBEDDER__MAX_WAIT_MS": str(max_wait_ms), "ADREC_EMBEDDER__DECODE_THREADS": str(threads),
           "ADREC_EMBEDDER__MAX_CONCURRENT_BATCHES": str(concurrent_batches),
           "ADREC_LOG_LEVEL": "WARNING"}
    proc = ManagedProcess("embedder-bench", [sys.executable, "-m", "services.embedder"], env=env, cwd=REPO,
                          log_path=log_dir / "embedder.log")
    proc.start()
    url = f"http://127.0.0.1:{http}/v2/health/ready"
    proc.wait_ready(lambda: urllib.request.urlopen(url, timeout=2).status == 200, timeout=180, interval=0.5)
    return proc, http, grpc_port


async def _load(make_call, clients: int, seconds: float, warmup_s: float = 1.0) -> dict:
    lat: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + warmup_s + seconds
    measure_from = time.perf_counter() + warmup_s

    async def client(i: int) -> None:
        nonlocal errors
        call = make_call(i)
        k = 0
        while True:
            t = time.perf_counter()
            if t >= stop_at:
                return
            try:
                await call(k)
            except Exception:  # noqa: BLE001 - counted, the run goes on
                errors += 1
            done = time.perf_counter()
            if t >= measure_from and done <= stop_at:
                lat.append(done - t)
            k += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"clients": clients, "images_per_s": len(lat) / seconds, "p50_ms": pct(lat, 50) * 1e3,
            "p99_ms": pct(lat, 99) * 1e3, "requests": len(lat), "errors": errors}


async def bench_grpc_tensor(url: str, model: str, x: np.ndarray, clients: int, seconds: float) -> dict:
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    grpc_clients = [InferenceGRPCClient(url, retries=0, timeout=60) for _ in range(min(clients, 8))]

    def make_call(i: int):
        client = grpc_clients[i % len(grpc_clients)]

        async def call(k: int) -> None:
            inp = InferInput("images", [1, *x.shape[1:]], "FP32")
            inp.set_data_from_numpy(x[(i * 7 + k) % len(x)][None], binary_data=True)
            res = await client.infer(InferRequest(model_name=model, infer_inputs=[inp]))
            assert res.outputs[0].shape[0] == 1
        return call

    try:
        return await _load(make_call, clients, seconds)
    finally:
        for c in grpc_clients:
            await c.close()


async def bench_rest_tensor(base_url: str, model: str, x: np.ndarray, clients: int, seconds: float) -> dict:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))

    def make_call(i: int):
        async def call(k: int) -> None:
            inp = InferInput("images", [1, *x.shape[1:]], "FP32")
            inp.set_data_from_numpy(x[(i * 7 + k) % len(x)][None], binary_data=True)
            await rest.infer(base_url, InferRequest(model_name=model, infer_inputs=[inp],
                                                    parameters={"binary_data_output": True}), model_name=model)
        return call

    try:
        return await _load(make_call, clients, seconds)
    finally:
        await rest.close()


def scrape_batches(http: int) -> tuple[float, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5).read().decode()
    vals = {}
    for line in text.splitlines():
        for key in ("adrec_embedder_batch_size_sum", "adrec_embedder_batch_size_count"):
            if line.startswith(key + " "):
                vals[key] = float(line.split()[1])
    return vals.get("adrec_embedder_batch_size_sum", 0.0), vals.get("adrec_embedder_batch_size_count", 0.0)


def median_run(runs: list[dict]) -> dict:
    """The repetition with the median throughput."""
    return dict(sorted(runs, key=lambda r: r["images_per_s"])[(len(runs) - 1) // 2]) if len(runs) > 1 else dict(runs[0])


# -- report --------------------------------------------------------------------------------

def _accepts(port: int) -> bool:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def bench_floor(load: Path, data: Path, dim: int, log_dir: Path, seconds: float, reps: int, r32: dict) -> dict:
    """The bare grpc.aio server (floor_server.py) under the 32-client row's load: the CPU any Python
    gRPC server and the load generator spend per request, hence the ceiling of server/raw here."""
    port = free_port()
    floor = ManagedProcess("embedder-floor", [sys.executable, "-m", "benchmarks.embedder.floor_server",
                                              "--port", str(port), "--dim", str(dim)],
                           cwd=REPO, log_path=log_dir / "floor.log")
    floor.start()
    try:
        floor.wait_ready(lambda: _accepts(port), timeout=60, interval=0.2)
        runs = [bench_grpcload(load, f"127.0.0.1:{port}", data, 32, seconds, server_pid=floor.pid)
                for _ in range(reps)]
    finally:
        floor.stop()
    raw = max((r32["raw"], r32["raw_at_mean_batch"]), key=lambda r: r["images_per_s"])  # the ratio's reference
    srv = float(np.median([r["server_cpu_ms_per_image"] for r in runs]))
    gen = float(np.median([r["loadgen_cpu_ms_per_image"] for r in runs]))
    raw_cpu = raw["cpu_ms_per_image"]
    return {"server": "benchmarks/embedder/floor_server.py",
            "clients": 32, "requests_per_s": [round(r["images_per_s"], 1) for r in runs],
            "server_cpu_ms_per_request": srv, "loadgen_cpu_ms_per_request": gen,
            "raw_reference": {"batch": raw["batch"], "parallel": raw["parallel"],
                              "images_per_s": raw["images_per_s"]},
            "raw_cpu_ms_per_image": raw_cpu, "ceiling": raw_cpu / (raw_cpu + srv + gen)}


def floor_md(floor: dict, r32: dict) -> str:
    srv, gen = r32.get("server_cpu_ms_per_image"), r32.get("loadgen_cpu_ms_per_image")
    raw = floor["raw_cpu_ms_per_image"]
    text = (f"**Ceiling on this machine.** A bare `grpc.aio` server (`{floor['server']}`: a canned answer, the "
            f"request never parsed, no model) under the same 32 clients "
            f"and requests spends {floor['server_cpu_ms_per_request']:.3f} ms CPU per request, the load generator "
            f"{floor['loadgen_cpu_ms_per_request']:.3f} ms; raw ORT spends {raw:.3f} ms CPU per image "
            f"(b={floor['raw_reference']['batch']} x {floor['raw_reference']['parallel']}). At one image per request "
            f"and every core busy, no Python gRPC server here can exceed {raw:.3f} / ({raw:.3f} + "
            f"{floor['server_cpu_ms_per_request']:.3f} + {floor['loadgen_cpu_ms_per_request']:.3f}) = "
            f"**{floor['ceiling']:.2f}x** raw, even with a forward pass as cheap as raw's and no work of its own.")
    if srv is not None:
        text += (f" The embedder at 32 clients: {srv:.3f} ms CPU per image (forward passes included) + "
                 f"{gen:.3f} ms in the load generator, which predicts {raw / (srv + gen):.2f}x.")
    return text


def table(result: dict) -> str:
    lines = ["| clients | transport | server img/s | p50 ms | p99 ms | mean batch | raw ORT batch x at once | raw img/s | "
             "raw p50 ms (per forward) | raw img/s at the mean batch | server / raw (the higher raw) | "
             "server CPU ms/img | load gen CPU ms/img |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        raw = r.get("raw") or {}
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-"
        cpu = (f" {r['server_cpu_ms_per_image']:.3f} | {r['loadgen_cpu_ms_per_image']:.3f} |"
               if "server_cpu_ms_per_image" in r else " - | - |")
        lines.append(f"| {r['clients']} | {r['transport']} | {r['images_per_s']:.1f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['mean_batch']:.1f} | {raw.get('batch', '-')} x {raw.get('parallel', 1)} | "
                     f"{raw['images_per_s']:.1f} | {raw['p50_ms']:.1f} | "
                     f"{r['raw_at_mean_batch']['images_per_s']:.1f} (b={r['raw_at_mean_batch']['batch']} x {r['raw_at_mean_batch']['parallel']}) | {ratio} |{cpu}"
                     if raw else
                     f"| {r['clients']} | {r['transport']} | {r['images_per_s']:.1f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['mean_batch']:.1f} | - | - | - | - | - |{cpu}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, help="exported model (default: out/vision-demo, else a demo export)")
    p.add_argument("--seconds", type=float, default=6.0, help="measured seconds per server repetition")
    p.add_argument("--reps", type=int, default=3, help="alternating raw/server repetitions per level (median kept)")
    p.add_argument("--threads", type=int, default=1, help="ORT intra-op threads per forward (server and raw)")
    p.add_argument("--concurrent-batches", type=int, default=(os.cpu_count() or 2) + 1,
                   help="forward passes the server runs at once (default: one more than the cores, so a core "
                        "never waits while the event loop hands a thread its next batch); raw ORT runs in this "
                        "layout and in one forward per core, and the ratio takes the faster")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--no-extra", action="store_true", help="skip the JPEG and REST rows")
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "embedder")
    p.add_argument("--no-publish", action="store_true",
                   help="don't copy the results to benchmarks/results/embedder.{json,md} (make bench's summary)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    from pipelines.vision.preprocessing import PreprocessSpec
    from services.embedder.model_bundle import load_bundle
    from services.embedder.runtime import ort_session_options

    import onnxruntime as ort

    model_dir = args.model_dir or demo_model(REPO / "out" / "bench" / "embedder-model")
    bundle = load_bundle(model_dir)
    spec: PreprocessSpec = bundle.spec
    x, jpegs = real_inputs(spec)
    session = ort.InferenceSession(str(bundle.file("onnx")), sess_options=ort_session_options(args.threads),
                                   providers=["CPUExecutionProvider"])
    cpus = os.cpu_count() or 2
    other = ((cpus, 1) if (args.threads, args.concurrent_batches) != (cpus, 1) else (1, cpus))  # threads, parallel
    other_session = ort.InferenceSession(str(bundle.file("onnx")), sess_options=ort_session_options(other[0]),
                                         providers=["CPUExecutionProvider"])
    par = args.concurrent_batches
    print(f"model {bundle.name} {bundle.version} ({model_dir}), input {bundle.input_shape}, dim {bundle.embedding_dim}; "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}", flush=True)

    # context: raw throughput at every batch size (the server's batches are often smaller than 32),
    # in the server's layout and in the other one (threads x parallel forwards), to show which is faster here
    sweep = [bench_raw(session, x, b, max(1.0, args.seconds / 3), par) for b in (1, 4, 8, 16, 32)]
    other_sweep = [bench_raw(other_session, x, b, max(1.0, args.seconds / 3), other[1]) for b in (1, 4, 8, 16, 32)]
    del other_session
    print("raw ORT sweep: " + ", ".join(f"b={r['batch']} {r['images_per_s']:.0f} img/s" for r in sweep)
          + f"; other layout ({other[0]} threads x {other[1]}): "
          + ", ".join(f"b={r['batch']} {r['images_per_s']:.0f}" for r in other_sweep), flush=True)
    load = grpcload()
    fp32_file = write_requests(args.out / "requests-fp32.bin", bundle.name, x=x)
    jpeg_file = write_requests(args.out / "requests-jpeg.bin", bundle.name, jpegs=jpegs)
    batched_file = write_requests(args.out / f"requests-fp32x{BATCHED}.bin", bundle.name, x=x, per_request=BATCHED)
    proc, http, grpc_port = start_server(model_dir, args.out, args.threads, args.max_batch, args.max_wait_ms,
                                         args.concurrent_batches)
    grpc_url, base_url = f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http}"
    rows = []
    try:
        # raw ORT gets the clients' images in flight, in the server's layout: min(clients, P) forwards at
        # once (P = --concurrent-batches) of clients / that many images each
        plan = [(c, "grpc-fp32", min(c // min(c, par), args.max_batch)) for c in CONCURRENCY]
        if not args.no_extra:
            plan += [(32, "grpc-jpeg", None), (32 // BATCHED, f"grpc-fp32 {BATCHED} images/request", None),
                     (32, "grpc-fp32 kserve-python-client", None),
                     (32, "rest-v2-binary-fp32 kserve-python-client", None)]
        for clients, transport, raw_batch in plan:
            raw_par = min(clients, par)
            core_par = min(clients, cpus)  # raw in one forward per core too: more threads than cores may lose
            # raw and server alternate (args.reps times) so both see the same background load
            raws, core_raws, runs = [], [], []
            s0, n0 = scrape_batches(http)
            for _ in range(args.reps if raw_batch else 1):
                if raw_batch:
                    raws.append(bench_raw(session, x, raw_batch, args.seconds / 2, raw_par))
                    if core_par != raw_par:
                        core_raws.append(bench_raw(session, x, raw_batch * raw_par // core_par, args.seconds / 2,
                                                   core_par))
                if transport == "grpc-fp32":
                    runs.append(bench_grpcload(load, grpc_url, fp32_file, clients, args.seconds, server_pid=proc.pid))
                elif transport.endswith("images/request"):
                    runs.append(bench_grpcload(load, grpc_url, batched_file, clients, args.seconds,
                                               server_pid=proc.pid, per_request=BATCHED))
                elif transport == "grpc-jpeg":
                    runs.append(bench_grpcload(load, grpc_url, jpeg_file, clients, args.seconds, server_pid=proc.pid))
                elif transport.startswith("grpc-fp32"):
                    runs.append(asyncio.run(bench_grpc_tensor(grpc_url, bundle.name, x, clients, args.seconds)))
                else:
                    runs.append(asyncio.run(bench_rest_tensor(base_url, bundle.name, x, clients, args.seconds)))
            s1, n1 = scrape_batches(http)
            r, raw = median_run(runs), (median_run(raws) if raws else None)
            if core_raws and median_run(core_raws)["images_per_s"] > raw["images_per_s"]:
                raw = median_run(core_raws)  # the same images in flight, one forward per core: faster here
            mean_batch = (s1 - s0) / max(1.0, n1 - n0)
            # the server's batches are smaller than `clients` (the next batch fills while one runs):
            # raw ORT at the batch the server actually ran, too; the target uses the lower ratio
            raw_mean = bench_raw(session, x, max(1, round(mean_batch)), args.seconds / 2, raw["parallel"]) if raw else None
            r.update(transport=transport, raw=raw, raw_at_mean_batch=raw_mean, mean_batch=mean_batch,
                     ratio=(r["images_per_s"] / max(raw["images_per_s"], raw_mean["images_per_s"])) if raw else None,
                     repetitions={"server_images_per_s": [round(v["images_per_s"], 1) for v in runs],
                                  "raw_images_per_s": [round(v["images_per_s"], 1) for v in raws],
                                  "raw_one_forward_per_core_images_per_s": [round(v["images_per_s"], 1)
                                                                            for v in core_raws]})
            rows.append(r)
            print(f"  {clients:>2} clients {transport:<20} {r['images_per_s']:7.1f} img/s  p50 {r['p50_ms']:6.1f} ms  "
                  f"p99 {r['p99_ms']:6.1f} ms  batch {r['mean_batch']:4.1f}"
                  + (f"  | raw b={raw['batch']} {raw['images_per_s']:7.1f} img/s  ratio {r['ratio']:.2f}" if raw else ""),
                  flush=True)
    finally:
        proc.stop()
    r32 = next(r for r in rows if r["clients"] == 32 and r["transport"] == "grpc-fp32")
    floor = bench_floor(load, fp32_file, bundle.embedding_dim, args.out, args.seconds, args.reps, r32)
    print(f"  floor (bare grpc.aio, no model): server {floor['server_cpu_ms_per_request']:.3f} + load generator "
          f"{floor['loadgen_cpu_ms_per_request']:.3f} ms CPU/request; raw ORT {floor['raw_cpu_ms_per_image']:.3f} "
          f"ms/image -> ceiling {floor['ceiling']:.2f}x", flush=True)
    ref = max(r32["images_per_s"] / r32["ratio"], 1e-9)  # the 32-client row's raw reference, images/s
    for r in rows:
        if r["transport"].endswith("images/request"):  # the same images in flight as 32 clients, fewer requests
            r["ratio_vs_32_client_raw"] = r["images_per_s"] / ref
    for r in rows:  # images/s the CPU per image predicts (noise-robust cross-check of the measured ratio)
        if "server_cpu_ms_per_image" in r:
            r["cpu_ratio"] = floor["raw_cpu_ms_per_image"] / (r["server_cpu_ms_per_image"] + r["loadgen_cpu_ms_per_image"])

    result = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"dir": str(model_dir), "name": bundle.name, "version": bundle.version,
                  "input": list(bundle.input_shape), "embedding_dim": bundle.embedding_dim},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "onnxruntime": ort.__version__,
                    "load_avg_1m_end": os.getloadavg()[0]},
        "server": {"max_batch_size": args.max_batch, "max_wait_ms": args.max_wait_ms, "intra_op_threads": args.threads,
                   "max_concurrent_batches": args.concurrent_batches,
                   "clients_in": "the benchmark process (same machine, same cores)"},
        "seconds_per_repetition": args.seconds, "repetitions": args.reps,
        "target": "server >= 0.9x raw ORT images/s at 32 clients (grpc-fp32; raw at batch 32 or at the server's "
                  "mean batch, whichever is faster)",
        "clients": "benchmarks/grpcload (Go) for grpc-fp32 and grpc-jpeg; kserve's Python clients where the row says",
        "rows": rows,
        "floor": floor,
        "raw_sweep": sweep,
        "raw_sweep_other_layout": {"threads": other[0], "parallel": other[1], "rows": other_sweep},
    }
    result["target_met"] = bool(r32["ratio"] >= 0.9)
    md = (f"# Embedder benchmark ({result['created_at']})\n\nModel `{bundle.name}` {bundle.version}, input "
          f"{list(bundle.input_shape)}, dim {bundle.embedding_dim}; {os.cpu_count()} CPUs; server max batch "
          f"{args.max_batch}, max wait {args.max_wait_ms} ms, {args.concurrent_batches} forward pass(es) at once with "
          f"{args.threads} ORT thread(s) each (raw ORT: the same layout, and one forward per core with the same "
          f"images in flight: the faster is the reference); clients on the same machine "
          f"(benchmarks/grpcload, Go, unless the row names kserve's Python client); load average at the end "
          f"{result['machine']['load_avg_1m_end']:.1f}."
          f"\n\n{table(result)}\n\nRaw ORT by batch size (before the server started), this layout: "
          + ", ".join(f"{r['batch']}: {r['images_per_s']:.0f} img/s" for r in sweep)
          + f"; the other layout ({other[0]} thread(s) x {other[1]} at once): "
          + ", ".join(f"{r['batch']}: {r['images_per_s']:.0f} img/s" for r in other_sweep)
          + "\n\n" + floor_md(floor, r32)
          + "".join(f" With {r['images_per_request']} images per request ({r['clients']} clients, the same "
                    f"{r['clients'] * r['images_per_request']} images in flight) the per-request cost is shared: "
                    f"{r['images_per_s']:.0f} img/s, {r['ratio_vs_32_client_raw']:.2f}x the 32-client raw reference."
                    for r in rows if "ratio_vs_32_client_raw" in r)
          + "\n\nTarget (>= 0.9x raw at 32 clients): "
          f"{'met' if result['target_met'] else 'NOT met'} ({r32['ratio']:.2f}x).\n")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in (f"embedder-{stamp}", "latest"):
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
        (args.out / f"{name}.md").write_text(md)
    if not args.no_publish:
        from benchmarks.results import RESULTS_DIR

        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / "embedder.json").write_text(json.dumps(result, indent=2))
        (RESULTS_DIR / "embedder.md").write_text(md)
    print("\n" + md)
    print(f"results: {args.out / 'latest.json'}, {args.out / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
