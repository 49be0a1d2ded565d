"""Request builders on kserve's own client types (InferenceRESTClient / InferenceGRPCClient)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bytes_request(model: str, images: Sequence[bytes], *, base64_strings: bool) -> InferRequest:
    inp = InferInput("image_bytes", [len(images)], "BYTES")
    if base64_strings:  # REST JSON carries BYTES elements as strings
        inp.set_data_from_numpy(np.array([b64(i) for i in images], dtype=object), binary_data=False)
    else:  # gRPC raw_input_contents: the encoded images as they are
        inp.set_data_from_numpy(np.array(list(images), dtype=object), binary_data=True)
    return InferRequest(model_name=model, infer_inputs=[inp])


def tensor_request(model: str, x: np.ndarray, *, binary: bool = True, datatype: str = "FP32",
                   binary_output: bool = False) -> InferRequest:
    inp = InferInput("images", list(x.shape), datatype)
    inp.set_data_from_numpy(x, binary_data=binary)
    return InferRequest(model_name=model, infer_inputs=[inp],
                        parameters={"binary_data_output": True} if binary_output else None)


async def rest_v1(base_url: str, model: str, images: Sequence[bytes]) -> np.ndarray:
    async with InferenceRESTClient(RESTConfig(protocol="v1", retries=0, timeout=60)) as client:
        res = await client.infer(base_url, {"instances": [{"image_bytes": {"b64": b64(i)}} for i in images]},
                                 model_name=model)
    return np.asarray(res["predictions"], dtype=np.float32)


async def rest_v2(base_url: str, req: InferRequest) -> np.ndarray:
    async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60)) as client:
        res = await client.infer(base_url, req, model_name=req.model_name)
    return res.outputs[0].as_numpy()


async def grpc_v2(url: str, req: InferRequest) -> np.ndarray:
    async with InferenceGRPCClient(url, retries=0, timeout=60) as client:
        res = await client.infer(req)
    return res.outputs[0].as_numpy()
