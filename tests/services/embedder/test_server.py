"""The embedder as clients see it: a real server process, kserve's own REST and gRPC clients.

Parity tolerance: every protocol returns the exported ONNX model's output on the same
preprocessed tensor (pipelines.vision.preprocessing) within max |diff| <= 1e-5 per component
and cosine distance <= 1e-5 (batch composition and thread count change float summation order,
nothing else).
"""

from __future__ import annotations

import asyncio
import io
import re

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from kserve import InferenceGRPCClient

from pipelines.vision.preprocessing import PreprocessSpec, preprocess_bytes

from .clients import bytes_request, grpc_v2, rest_v1, rest_v2, run, tensor_request
from .conftest import DIM, MODEL_VERSION

ATOL = 1e-5
MAX_COSINE_DISTANCE = 1e-5


@pytest.fixture(scope="module")
def reference(model_dir, card, jpegs):
    spec = PreprocessSpec.from_dict(card["input"])
    x = np.stack([preprocess_bytes(b, spec) for b in jpegs])
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    return x, sess.run(["embedding"], {"images": x})[0]


def assert_parity(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape and got.dtype == np.float32
    assert np.abs(got - ref).max() <= ATOL
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert (1 - cos).max() <= MAX_COSINE_DISTANCE
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_v1_predict_base64_matches_exported_model(embedder, jpegs, reference):
    got = run(rest_v1(embedder.base_url, embedder.model_name, jpegs))
    assert_parity(got, reference[1])


def test_v2_rest_bytes_matches(embedder, jpegs, reference):
    got = run(rest_v2(embedder.base_url, bytes_request(embedder.model_name, jpegs, base64_strings=True)))
    assert_parity(got, reference[1])


@pytest.mark.parametrize("binary", [True, False], ids=["binary-extension", "json"])
def test_v2_rest_tensor_matches(embedder, reference, binary):
    x, ref = reference
    got = run(rest_v2(embedder.base_url, tensor_request(embedder.model_name, x, binary=binary, binary_output=binary)))
    assert_parity(got, ref)


def test_v2_grpc_bytes_matches(embedder, jpegs, reference):
    got = run(grpc_v2(embedder.grpc_url, bytes_request(embedder.model_name, jpegs, base64_strings=False)))
    assert_parity(got, reference[1])


@pytest.mark.parametrize("binary", [True, False], ids=["raw_input_contents", "fp32_contents"])
def test_v2_grpc_tensor_matches(embedder, reference, binary):
    """raw_input_contents takes the server's fast path, typed contents kserve's generic one: same vectors."""
    x, ref = reference
    got = run(grpc_v2(embedder.grpc_url, tensor_request(embedder.model_name, x, binary=binary)))
    assert_parity(got, ref)


def test_every_supported_format_is_embedded(embedder, jpeg_paths):
    """JPEG, PNG, WebP, GIF, BMP, TIFF (pipelines.vision.preprocessing.IMAGE_FORMATS) over gRPC and REST."""
    from PIL import Image

    with Image.open(jpeg_paths[0]) as im:
        img = im.convert("RGB")
    images = []
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"):
        buf = io.BytesIO()
        img.save(buf, fmt)
        images.append(buf.getvalue())
    got = run(grpc_v2(embedder.grpc_url, bytes_request(embedder.model_name, images, base64_strings=False)))
    assert got.shape == (6, DIM) and np.isfinite(got).all()
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    got_rest = run(rest_v2(embedder.base_url, bytes_request(embedder.model_name, images, base64_strings=True)))
    np.testing.assert_allclose(got_rest, got, atol=ATOL)


def test_single_image_requests_equal_the_batch(embedder, jpegs, reference):
    async def each():
        return await asyncio.gather(*(grpc_v2(embedder.grpc_url, bytes_request(embedder.model_name, [j],
                                                                                base64_strings=False))
                                      for j in jpegs))
    got = np.concatenate(run(each()))
    assert_parity(got, reference[1])


def test_health_readiness_and_metadata(embedder):
    name = embedder.model_name
    with httpx.Client(base_url=embedder.base_url, timeout=10) as http:
        assert http.get("/v2/health/live").json() == {"live": True}
        assert http.get("/v2/health/ready").json() == {"ready": True}
        assert http.get(f"/v2/models/{name}/ready").json() == {"name": name, "ready": True}
        assert http.get(f"/v1/models/{name}").json() == {"name": name, "ready": True}
        assert http.get("/v1/models").json() == {"models": [name]}
        meta = http.get(f"/v2/models/{name}").json()
        assert http.get("/v2/models/nope/ready").status_code == 404
    assert {(i["name"], i["datatype"]) for i in meta["inputs"]} == {("image_bytes", "BYTES"), ("images", "FP32")}
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, DIM]}]

    async def grpc_checks():
        async with InferenceGRPCClient(embedder.grpc_url, retries=0) as client:
            return await client.is_server_ready(), await client.is_model_ready(name)
    assert run(grpc_checks()) == (True, True)

    async def version():  # the model card's version travels with every v2 response
        async with InferenceGRPCClient(embedder.grpc_url, retries=0) as client:
            res = await client.infer(tensor_request(name, np.zeros((1, 3, 64, 48), np.float32)))
            return res.model_name, res.model_version
    assert run(version()) == (name, MODEL_VERSION)
    body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 64, 48], "data": [0.0] * 3 * 64 * 48}]}
    res = httpx.post(f"{embedder.base_url}/v2/models/{name}/infer", json=body, timeout=30).json()
    assert (res["model_name"], res["model_version"], res["outputs"][0]["shape"]) == (name, MODEL_VERSION, [1, DIM])


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_concurrent_requests_are_batched_and_metrics_exposed(embedder, reference):
    x, ref = reference
    n = 24

    async def burst():
        async with InferenceGRPCClient(embedder.grpc_url, retries=0) as client:
            reqs = [tensor_request(embedder.model_name, x[i % len(x)][None]) for i in range(n)]
            return await asyncio.gather(*(client.infer(r) for r in reqs))

    before = httpx.get(embedder.base_url + "/metrics").text
    results = run(burst())
    for i, res in enumerate(results):
        assert_parity(res.outputs[0].as_numpy(), ref[i % len(x)][None])
    after = httpx.get(embedder.base_url + "/metrics").text

    batches = _metric(after, "adrec_embedder_batch_size_count") - _metric(before, "adrec_embedder_batch_size_count")
    rows = _metric(after, "adrec_embedder_batch_size_sum") - _metric(before, "adrec_embedder_batch_size_sum")
    assert rows == n and batches < n, f"{n} concurrent requests ran in {batches:.0f} forward passes"
    assert (_metric(after, "adrec_embedder_images_total", input="tensor")
            - _metric(before, "adrec_embedder_images_total", input="tensor")) == n
    assert _metric(after, "adrec_embedder_request_latency_seconds_count", protocol="v2-grpc", status="ok") >= n
    for name in ("adrec_embedder_request_latency_seconds_bucket", "adrec_embedder_batch_size_bucket",
                 "adrec_embedder_forward_seconds_bucket", "adrec_embedder_model_info", "request_predict_seconds"):
        assert name in after
