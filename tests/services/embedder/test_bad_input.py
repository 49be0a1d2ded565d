"""Bad input over every protocol: 400 / INVALID_ARGUMENT with a clear message; the server stays up."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from .clients import b64, bytes_request, grpc_v2, rest_v1, rest_v2, run, tensor_request
from .conftest import SERVER_ENV

MAX_BYTES = int(SERVER_ENV["ADREC_EMBEDDER__MAX_IMAGE_BYTES"])
MAX_PIXELS = int(SERVER_ENV["ADREC_EMBEDDER__MAX_IMAGE_PIXELS"])


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height (a decompression bomb's shape)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (255, 0, 0)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])) & 0xFFFFFFFF)
    return bytes(data)


def encoded(fmt: str, size: tuple[int, int] = (40, 30)) -> bytes:
    """A small image in `fmt` (Pillow writes it; ICNS among them, which the platform does not take)."""
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, fmt)
    return buf.getvalue()


def bad_images(jpeg: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (payload, substring of the expected message)."""
    return {
        "not-an-image": (b"%PDF-1.4 definitely not a picture" * 10, "not an image"),
        "truncated-jpeg": (jpeg[: len(jpeg) // 2], "could not be decoded"),
        "empty": (b"", "empty image"),
        "too-many-bytes": (jpeg + b"\0" * MAX_BYTES, f"limit {MAX_BYTES} bytes"),
        "too-many-pixels": (png_claiming(3000, 2000), f"limit {MAX_PIXELS} pixels"),
        "decompression-bomb": (png_claiming(200_000, 200_000), "pixels"),
        # its header's size is not what it decodes (an ICNS may embed any PNG): not a format we open
        "icns": (encoded("ICNS", (64, 64)), "unsupported image format ICNS"),
    }


CASES = ["not-an-image", "truncated-jpeg", "empty", "too-many-bytes", "too-many-pixels", "decompression-bomb", "icns"]


def rest_error(fn) -> tuple[int, str]:
    with pytest.raises(httpx.HTTPStatusError) as info:
        run(fn)
    return info.value.response.status_code, info.value.response.json()["error"]


def grpc_error(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        run(fn)
    return info.value.code(), info.value.details()


@pytest.mark.parametrize("case", CASES)
def test_bad_image_v1(embedder, jpegs, case):
    payload, message = bad_images(jpegs[0])[case]
    status, error = rest_error(rest_v1(embedder.base_url, embedder.model_name, [jpegs[1], payload]))
    assert status == 400 and message in error and error.startswith("image 1:"), error


@pytest.mark.parametrize("case", CASES)
def test_bad_image_v2_rest(embedder, jpegs, case):
    payload, message = bad_images(jpegs[0])[case]
    req = bytes_request(embedder.model_name, [payload], base64_strings=True)
    status, error = rest_error(rest_v2(embedder.base_url, req))
    assert status == 400 and message in error, error


@pytest.mark.parametrize("case", CASES)
def test_bad_image_v2_grpc(embedder, jpegs, case):
    payload, message = bad_images(jpegs[0])[case]
    req = bytes_request(embedder.model_name, [payload], base64_strings=False)
    code, details = grpc_error(grpc_v2(embedder.grpc_url, req))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details, details


TENSORS = {
    "wrong-hw": (np.zeros((1, 3, 10, 10), np.float32), "FP32", "expected [N, 3, 64, 48]"),
    "no-batch-axis": (np.zeros((3, 64, 48), np.float32), "FP32", "expected [N, 3, 64, 48]"),
    "channels-last": (np.zeros((1, 64, 48, 3), np.float32), "FP32", "expected [N, 3, 64, 48]"),
    "fp64": (np.zeros((1, 3, 64, 48), np.float64), "FP64", "send BYTES (encoded images) or FP32"),
    "int32": (np.zeros((1, 3, 64, 48), np.int32), "INT32", "send BYTES (encoded images) or FP32"),
    "nan": (np.full((1, 3, 64, 48), np.nan, np.float32), "FP32", "NaN"),
}


@pytest.mark.parametrize("case,transport", [(c, t) for c in TENSORS for t in ("rest-binary", "rest-json", "grpc")
                                            if (c, t) != ("nan", "rest-json")])  # JSON has no NaN
def test_bad_tensor(embedder, case, transport):
    x, datatype, message = TENSORS[case]
    req = tensor_request(embedder.model_name, x, binary=transport != "rest-json", datatype=datatype)
    if transport == "grpc":
        code, details = grpc_error(grpc_v2(embedder.grpc_url, req))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details, details
    else:
        status, error = rest_error(rest_v2(embedder.base_url, req))
        assert status == 400 and message in error, error


def test_tensor_data_that_does_not_fit_its_shape(embedder):
    body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [2, 3, 64, 48], "data": [0.0] * 10}]}
    r = httpx.post(f"{embedder.base_url}/v2/models/{embedder.model_name}/infer", json=body, timeout=30)
    assert r.status_code == 400 and "does not fit shape [2, 3, 64, 48]" in r.json()["error"], r.text


def test_grpc_raw_tensor_that_does_not_fit_its_shape(embedder):
    """A raw_input_contents buffer whose size disagrees with the declared shape (the gRPC fast path)."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    req = pb.ModelInferRequest(model_name=embedder.model_name)
    req.inputs.add(name="images", datatype="FP32", shape=[2, 3, 64, 48])
    req.raw_input_contents.append(np.zeros((1, 3, 64, 48), np.float32).tobytes())

    async def call() -> None:
        async with grpc.aio.insecure_channel(embedder.grpc_url) as channel:
            await channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                      request_serializer=pb.ModelInferRequest.SerializeToString,
                                      response_deserializer=pb.ModelInferResponse.FromString)(req, timeout=30)
    code, details = grpc_error(call())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not fit shape [2, 3, 64, 48]" in details, details


@pytest.mark.parametrize("body,message", [
    ({"instances": "abc"}, "instances"),
    ({"instances": []}, "0 instances"),
    ({"instances": [123]}, "instance 0: expected a base64 string"),
    ({"instances": ["%%%not base64%%%"]}, "invalid base64"),
    ({"inputs": []}, "instances"),
])
def test_malformed_v1(embedder, body, message):
    r = httpx.post(f"{embedder.base_url}/v1/models/{embedder.model_name}:predict", json=body, timeout=30)
    assert r.status_code == 400 and message in r.json()["error"], r.text


def test_v1_body_not_json(embedder):
    r = httpx.post(f"{embedder.base_url}/v1/models/{embedder.model_name}:predict", content=b"\x89PNG...",
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text


def test_server_survives_bad_input_and_counts_errors(embedder, jpegs):
    for payload, _ in bad_images(jpegs[0]).values():
        with pytest.raises(httpx.HTTPStatusError):
            run(rest_v1(embedder.base_url, embedder.model_name, [payload]))
    assert embedder.proc.running()
    got = run(grpc_v2(embedder.grpc_url, bytes_request(embedder.model_name, jpegs[:2], base64_strings=False)))
    assert got.shape == (2, 32) and np.isfinite(got).all()
    metrics = httpx.get(embedder.base_url + "/metrics").text
    for reason in ("not_an_image", "corrupt_image", "too_many_bytes", "too_many_pixels", "empty", "bad_shape",
                   "bad_dtype", "unsupported_format"):
        assert f'adrec_embedder_errors_total{{reason="{reason}"}}' in metrics, reason
    assert 'adrec_embedder_requests_total{protocol="v1",status="invalid"}' in metrics


@pytest.mark.parametrize("element,kind", [(1.5, "float"), (None, "NoneType"), (2**62, "int"), (10**6, "int"),
                                          (True, "bool"), (["abc"], "list")])
def test_v2_rest_bytes_element_that_is_not_a_string(embedder, jpegs, element, kind):
    """JSON BYTES data must be base64 strings: a number is never taken as a size (bytes(2**62))."""
    body = {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [2], "data": [b64(jpegs[0]), element]}]}
    r = httpx.post(f"{embedder.base_url}/v2/models/{embedder.model_name}/infer", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(f"image 1: BYTES element is {kind}, expected a base64 string"), r.text


def grpc_raw(embedder, datatype: str, shape: list[int], raw: bytes):
    """One ModelInfer call with the input's data in raw_input_contents (the server's fast path)."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    req = pb.ModelInferRequest(model_name=embedder.model_name)
    req.inputs.add(name="image_bytes" if datatype == "BYTES" else "images", datatype=datatype, shape=shape)
    req.raw_input_contents.append(raw)

    async def call() -> pb.ModelInferResponse:
        async with grpc.aio.insecure_channel(embedder.grpc_url, options=[
                ("grpc.max_send_message_length", 64 << 20)]) as channel:
            return await channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                             request_serializer=pb.ModelInferRequest.SerializeToString,
                                             response_deserializer=pb.ModelInferResponse.FromString)(req, timeout=60)
    return call()


def test_grpc_bytes_flood_of_empty_elements_is_refused_without_reading_it(embedder, jpegs):
    """60 MB of zero-length BYTES elements declared as shape [1]: refused after the first element
    (kserve's deserialize_bytes_tensor would read all 15M of them on the event loop first)."""
    raw = struct.pack("<I", len(jpegs[0])) + jpegs[0] + b"\0\0\0\0" * 15_000_000

    async def flood_and_health():
        flood = asyncio.ensure_future(grpc_raw(embedder, "BYTES", [1], raw))
        async with httpx.AsyncClient(base_url=embedder.base_url, timeout=30) as http:
            health = (await http.get("/v2/health/ready")).json()
        return health, (await asyncio.gather(flood, return_exceptions=True))[0]

    health, exc = run(flood_and_health())
    assert health == {"ready": True}
    assert isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not fit shape [1]: more than 1 BYTES elements (60000000 bytes after element 0)" in exc.details()
    got = run(grpc_v2(embedder.grpc_url, bytes_request(embedder.model_name, jpegs[:1], base64_strings=False)))
    assert got.shape == (1, 32)


@pytest.mark.parametrize("shape", [[100_000], [1000, 1000]])
def test_grpc_bytes_shape_over_the_image_limit(embedder, jpegs, shape):
    code, details = grpc_error(grpc_raw(embedder, "BYTES", shape, struct.pack("<I", len(jpegs[0])) + jpegs[0]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and f"{np.prod(shape)} images, allowed 1..256" in details, details

