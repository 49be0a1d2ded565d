"""KServe payloads <-> embedder inputs and outputs (v1 JSON, v2 open inference protocol REST/gRPC).

Inputs:
- v1 `:predict`: {"instances": [<base64 str> | {"b64": str} | {"image_bytes": {"b64": str}}, ...]}
- v2 (REST or gRPC), one input tensor, told apart by datatype:
  BYTES [N] encoded images (raw bytes over gRPC; base64 strings in REST JSON), or
  FP32 [N, 3, H, W] already preprocessed as the model card's `input` says.
Outputs: v1 {"predictions": [[D floats], ...], "model_name", "model_version"};
v2 one output "embedding" FP32 [N, D] (binary over gRPC; binary in REST when asked with the
`binary_data_output` parameter).
"""

from __future__ import annotations

import json
import math
import struct
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from .decoding import BadInput, ImageLimits, b64decode

OUTPUT_NAME = "embedding"
BYTES_INPUT, TENSOR_INPUT = "image_bytes", "images"
_LENGTH = struct.Struct("<I")


@dataclass
class Parsed:
    protocol: str  # "v1" | "v2"
    images: list[bytes] | None = None  # encoded images ...
    tensor: np.ndarray | None = None  # ... or a preprocessed batch
    request: InferRequest | None = None
    kind: str = ""  # "bytes" | "tensor": what the client sent

    def __post_init__(self) -> None:
        self.kind = self.kind or ("tensor" if self.tensor is not None else "bytes")


def _image_from_bytes(data: bytes, limits: ImageLimits) -> bytes:
    """Raw image bytes, or base64 text sent as bytes (gRPC bytes_contents of a string)."""
    head = data[:64].strip()
    if head and all(c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n" for c in head):
        try:
            return b64decode(data.strip(), limits)
        except BadInput as exc:
            if exc.reason == "too_many_bytes":
                raise
    return data


def _v1_instance(i: int, inst: Any, limits: ImageLimits) -> bytes:
    if isinstance(inst, dict):
        inst = inst.get("image_bytes", inst)
        if isinstance(inst, dict):
            inst = inst.get("b64")
    if not isinstance(inst, str):
        raise BadInput("bad_request", f'instance {i}: expected a base64 string, {{"b64": ...}} or '
                                      f'{{"image_bytes": {{"b64": ...}}}}, got {type(inst).__name__}')
    try:
        return b64decode(inst, limits)
    except BadInput as exc:
        raise exc.at(i) from None


def parse_v1(body: Any, limits: ImageLimits, max_images: int) -> Parsed:
    if isinstance(body, (bytes, str)):  # kserve passes the raw body on for non-JSON content types
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise BadInput("bad_request", f"v1 request body is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        raise BadInput("bad_request", 'v1 request body must be {"instances": [<base64 image>, ...]}')
    instances = body["instances"]
    if not 1 <= len(instances) <= max_images:
        raise BadInput("bad_request", f"{len(instances)} instances, allowed 1..{max_images}")
    return Parsed("v1", images=[_v1_instance(i, inst, limits) for i, inst in enumerate(instances)])


def bytes_elements(raw: bytes, count: int) -> list[bytes]:
    """A binary BYTES tensor (each element a 4-byte little-endian length, then its bytes: what
    kserve's deserialize_bytes_tensor reads) holding exactly `count` elements. Reads at most
    `count` elements, so a huge buffer of tiny elements costs nothing before it is refused."""
    out: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end and len(out) < count:
        if offset + 4 > end:
            raise BadInput("bad_shape", f"BYTES element {len(out)} is truncated (no 4-byte length)")
        (n,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + n > end:
            raise BadInput("bad_shape", f"BYTES element {len(out)} is truncated ({n} bytes declared, "
                                        f"{end - offset} left)")
        out.append(raw[offset:offset + n])
        offset += n
    if len(out) < count:
        raise BadInput("bad_shape", f"{len(out)} BYTES elements, the shape needs {count}")
    if offset < end:
        raise BadInput("bad_shape", f"more than {count} BYTES elements ({end - offset} bytes after element "
                                    f"{count - 1})")
    return out


def _parse_input(name: str, datatype: str, shape, as_numpy, max_images: int, limits: ImageLimits,
                 request=None, raw: bytes | None = None) -> Parsed:
    """One v2 input tensor (from REST/kserve's InferRequest or straight from a gRPC message);
    `raw`: a BYTES tensor's data still serialized (the gRPC fast path's raw_input_contents)."""
    if datatype == "BYTES":
        count = math.prod(shape)
        if not 1 <= count <= max_images:  # before any element is read
            raise BadInput("bad_request", f"{count} images, allowed 1..{max_images}")
        try:
            if any(d < 0 for d in shape):
                raise ValueError("negative dimension")
            items = bytes_elements(raw, count) if raw is not None else as_numpy().reshape(-1)
        except Exception as exc:  # noqa: BLE001 - shape/data mismatch from the client
            msg = exc.message if isinstance(exc, BadInput) else exc
            raise BadInput("bad_shape", f"input {name!r}: BYTES data does not fit shape {list(shape)}: {msg}") from None
        images = []
        for i, item in enumerate(items):
            try:
                if isinstance(item, str):  # base64 in REST JSON
                    images.append(b64decode(item, limits))
                elif isinstance(item, bytes):  # np.bytes_ included
                    images.append(_image_from_bytes(item, limits))
                else:  # JSON numbers, null, lists: never bytes(item) (bytes(10**9) allocates 1 GB)
                    raise BadInput("bad_request", f"BYTES element is {type(item).__name__}, expected a base64 "
                                                  "string (JSON) or the image's bytes (binary)")
            except BadInput as exc:
                raise exc.at(i) from None
        return Parsed("v2", images=images, request=request)
    if datatype == "FP32":
        try:
            x = as_numpy()
        except Exception as exc:  # noqa: BLE001
            raise BadInput("bad_shape", f"input {name!r}: FP32 data does not fit shape {list(shape)}: {exc}") from None
        return Parsed("v2", tensor=x, request=request)
    raise BadInput("bad_dtype", f"input {name!r} has datatype {datatype}; send BYTES (encoded images) "
                                "or FP32 (preprocessed [N, 3, H, W])")


def parse_v2(req: InferRequest, limits: ImageLimits, max_images: int) -> Parsed:
    if len(req.inputs) != 1:
        raise BadInput("bad_request", f"expected exactly one input ({BYTES_INPUT!r} BYTES or {TENSOR_INPUT!r} FP32), "
                                      f"got {len(req.inputs)}")
    inp = req.inputs[0]
    return _parse_input(inp.name, inp.datatype, inp.shape, inp.as_numpy, max_images, limits, request=req)


def fast_grpc_layout(req: pb.ModelInferRequest) -> bool:
    """One input whose data travels in `raw_input_contents` (what kserve's and Triton's clients
    send): the layout the gRPC fast path parses; any other goes through kserve's generic path,
    which validates it the same way (parse_v2)."""
    return len(req.raw_input_contents) == 1 and len(req.inputs) == 1


def parse_v2_grpc(req: pb.ModelInferRequest, limits: ImageLimits, max_images: int) -> Parsed:
    """The gRPC fast path: a request in `fast_grpc_layout`, parsed without building an InferRequest."""
    inp, raw = req.inputs[0], req.raw_input_contents[0]
    shape = tuple(inp.shape)

    def as_numpy() -> np.ndarray:  # FP32
        need = 4 * math.prod(shape)
        if len(raw) != need:
            raise ValueError(f"{len(raw)} bytes of data, the shape needs {need}")
        return np.frombuffer(raw, dtype="<f4").reshape(shape)

    return _parse_input(inp.name, inp.datatype, shape, as_numpy, max_images, limits, raw=raw)


def v1_response(emb: np.ndarray, model_name: str, model_version: str) -> dict:
    return {"predictions": emb.tolist(), "model_name": model_name, "model_version": model_version}


def v2_response(emb: np.ndarray, req: InferRequest, model_name: str, model_version: str) -> InferResponse:
    out = InferOutput(name=OUTPUT_NAME, shape=list(emb.shape), datatype="FP32")
    # raw bytes, not an ndarray: kserve 0.21's to_grpc() tests an ndarray's truth value (ValueError)
    out.set_data_from_numpy(np.ascontiguousarray(emb, dtype=np.float32), binary_data=True)
    return InferResponse(response_id=req.id or str(uuid.uuid4()), model_name=model_name, model_version=model_version,
                         infer_outputs=[out], use_binary_outputs=req.use_binary_outputs,
                         requested_outputs=req.request_outputs)


def v2_grpc_response(emb: np.ndarray, request_id: str, model_name: str, model_version: str) -> pb.ModelInferResponse:
    """The gRPC fast path's answer: what InferResponse.to_grpc() builds, without the detour."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    return pb.ModelInferResponse(
        id=request_id or str(uuid.uuid4()), model_name=model_name, model_version=model_version,
        outputs=[pb.ModelInferResponse.InferOutputTensor(name=OUTPUT_NAME, datatype="FP32", shape=list(emb.shape))],
        raw_output_contents=[emb.tobytes()])
