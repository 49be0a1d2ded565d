"""benchmarks/grpcload, the Go gRPC load generator of `make bench-embedder`: built by its script,
it sends the file's messages unchanged, counts answers and errors, and refuses bad input."""

from __future__ import annotations

import json
import struct
import subprocess
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest

REPO = Path(__file__).resolve().parents[2]
METHOD = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def grpcload() -> Path:
    subprocess.run([str(REPO / "scripts" / "build_grpcload.sh")], check=True, timeout=600)
    return REPO / ".cache" / "bin" / "grpcload"


class Recorder(grpc.GenericRpcHandler):
    """Answers ModelInfer with the request's bytes reversed; fails messages that start with b"fail"."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.lock = threading.Lock()

    def service(self, details):
        if details.method != METHOD:
            return None

        def handle(request: bytes, context) -> bytes:
            with self.lock:
                self.seen.append(request)
            if request.startswith(b"fail"):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "told to fail")
            return request[::-1]
        return grpc.unary_unary_rpc_method_handler(handle)


@pytest.fixture
def server():
    rec = Recorder()
    srv = grpc.server(futures.ThreadPoolExecutor(8), handlers=[rec])
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    try:
        yield rec, f"127.0.0.1:{port}"
    finally:
        srv.stop(grace=None)


def messages_file(path: Path, msgs: list[bytes]) -> Path:
    path.write_bytes(b"".join(struct.pack(">I", len(m)) + m for m in msgs))
    return path


def run(binary: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60)


def test_sends_the_messages_unchanged_and_reports_latency(grpcload, server, tmp_path):
    rec, addr = server
    msgs = [b"alpha", b"bravo-" * 100, b"\x00\x01binary\xff"]
    out = run(grpcload, "-addr", addr, "-data", str(messages_file(tmp_path / "m.bin", msgs)),
              "-concurrency", "4", "-duration", "1s", "-warmup", "200ms")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["errors"] == 0 and r["requests"] > 10 and r["concurrency"] == 4
    assert r["requests_per_s"] == pytest.approx(r["requests"] / r["seconds"])
    assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert set(rec.seen) == set(msgs)  # every message, byte for byte, and nothing else
    assert len(rec.seen) >= r["requests"]  # warm-up calls are sent but not measured
    assert r["completed"] == len(rec.seen) > r["requests"]  # ... and counted as answered (CPU per call)


def test_counts_errors_with_the_first_message(grpcload, server, tmp_path):
    _, addr = server
    out = run(grpcload, "-addr", addr, "-data", str(messages_file(tmp_path / "m.bin", [b"fail please"])),
              "-duration", "300ms", "-warmup", "0s")
    r = json.loads(out.stdout)
    assert r["requests"] == 0 == r["completed"] and r["errors"] > 0 and "told to fail" in r["first_error"]


@pytest.mark.parametrize("content,message", [(b"", "no messages"), (b"\x00\x00", "truncated length prefix"),
                                             (b"\x00\x00\x00\x09abc", "truncated")])
def test_bad_data_file(grpcload, tmp_path, content, message):
    data = tmp_path / "bad.bin"
    data.write_bytes(content)
    out = run(grpcload, "-data", str(data))
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_usage_without_data(grpcload):
    out = run(grpcload)
    assert out.returncode == 2 and "usage" in out.stderr
