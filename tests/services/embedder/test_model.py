"""EmbedderModel below the server: request outcomes and queue metrics, with a forward pass that
the test holds (a gated backend in place of ONNX Runtime) so requests can be caught waiting."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from prometheus_client import CollectorRegistry

from pipelines.vision.preprocessing import PreprocessSpec
from services.embedder import model as model_module
from services.embedder.metrics import EmbedderMetrics
from services.embedder.model import EmbedderModel
from services.embedder.model_bundle import ModelBundle
from services.embedder.settings import EmbedderConfig

DIM, H, W = 4, 8, 6


class GatedBackend:
    """Blocks every forward pass until `gate` is set; `entered` tells the test one has started."""

    description = "gated test backend"

    def __init__(self) -> None:
        self.gate, self.entered = threading.Event(), threading.Event()
        self.sizes: list[int] = []

    def run(self, x: np.ndarray) -> np.ndarray:
        self.sizes.append(x.shape[0])
        self.entered.set()
        if not self.gate.wait(30):
            raise RuntimeError("test gate never opened")
        out = np.ones((x.shape[0], DIM), np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def served(monkeypatch, tmp_path: Path):
    backend = GatedBackend()
    monkeypatch.setattr(model_module, "create_backend", lambda *a, **k: backend)
    bundle = ModelBundle(root=tmp_path, card={}, name="m", version="1", embedding_dim=DIM,
                         spec=PreprocessSpec(height=H, width=W), input_name="images", output_name="embedding")
    metrics = EmbedderMetrics(CollectorRegistry())
    model = EmbedderModel(EmbedderConfig(warmup=False, max_batch_size=2, max_wait_ms=0), bundle=bundle,
                          metrics=metrics)
    model.load()
    yield model, backend, metrics.registry
    backend.gate.set()
    model.stop()


def request(n: int) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="images", datatype="FP32", shape=[n, 3, H, W])
    req.raw_input_contents.append(np.zeros((n, 3, H, W), np.float32).tobytes())
    return req


async def forward_started(backend: GatedBackend) -> None:
    await asyncio.wait_for(asyncio.to_thread(backend.entered.wait), 30)


def test_queued_images_gauge_follows_the_batcher(served):
    model, backend, registry = served

    def queued() -> float:
        return registry.get_sample_value("adrec_embedder_queued_images")

    async def main():
        running = asyncio.ensure_future(model.infer_grpc(request(2)))  # a full batch: runs, held at the gate
        await forward_started(backend)
        waiting = [asyncio.ensure_future(model.infer_grpc(request(n))) for n in (1, 2)]
        await asyncio.sleep(0.05)
        during = queued()
        backend.gate.set()
        await asyncio.gather(running, *waiting)
        await model.batcher.close()
        return during

    assert asyncio.run(main()) == 3  # the two requests behind the running batch
    assert queued() == 0
    assert backend.sizes == [2, 1, 2]


def test_cancelled_request_is_counted_as_cancelled(served):
    model, backend, registry = served

    def requests(status: str) -> float | None:
        return registry.get_sample_value("adrec_embedder_requests_total", {"protocol": "v2-grpc", "status": status})

    async def main():
        task = asyncio.ensure_future(model.infer_grpc(request(1)))
        await forward_started(backend)
        task.cancel()  # the client went away / its deadline passed
        with pytest.raises(asyncio.CancelledError):
            await task
        backend.gate.set()
        await model.batcher.close()

    asyncio.run(main())
    assert requests("cancelled") == 1
    assert requests("ok") is None
    assert registry.get_sample_value("adrec_embedder_requests_in_flight") == 0
