"""The embedder benchmark's floor: a bare grpc.aio server that answers ModelInfer with a canned
embedding-sized response, whatever the request (it is the least a gRPC v2 server can do); and
the batched request file the benchmark's 8-images-per-request row sends."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from benchmarks.embedder.bench import write_requests
from benchmarks.embedder.floor_server import serve
from services.localstack.ports import free_port


async def _ask_floor(dim: int) -> list:
    port = free_port()
    ready = asyncio.Event()
    server = asyncio.create_task(serve("127.0.0.1", port, dim, ready))
    await asyncio.wait_for(ready.wait(), 30)
    try:
        async with InferenceGRPCClient(f"127.0.0.1:{port}", retries=0, timeout=10) as client:
            answers = []
            for shape in ([1, 3, 4, 4], [2, 3, 4, 4]):  # the request is never read: same answer
                inp = InferInput("images", shape, "FP32")
                inp.set_data_from_numpy(np.ones(shape, np.float32), binary_data=True)
                answers.append(await client.infer(InferRequest(model_name="anything", infer_inputs=[inp])))
            return answers
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


def test_floor_answers_a_v2_request_with_an_embedding_sized_output() -> None:
    answers = asyncio.run(_ask_floor(dim=48))
    for res in answers:
        out = res.outputs[0]
        assert (out.name, out.datatype, list(out.shape)) == ("embedding", "FP32", [1, 48])
        assert out.as_numpy().shape == (1, 48)


def _read(path: Path) -> list[pb.ModelInferRequest]:
    data, msgs = path.read_bytes(), []
    while data:
        n = struct.unpack(">I", data[:4])[0]
        msgs.append(pb.ModelInferRequest.FromString(data[4:4 + n]))
        data = data[4 + n:]
    return msgs


def test_batched_requests_carry_consecutive_images_wrapping_around(tmp_path: Path) -> None:
    x = np.arange(5 * 3 * 2 * 2, dtype=np.float32).reshape(5, 3, 2, 2)
    msgs = _read(write_requests(tmp_path / "b.bin", "m", x=x, per_request=3))
    assert len(msgs) == 5  # one request starting at each image
    for i, m in enumerate(msgs):
        assert list(m.inputs[0].shape) == [3, 3, 2, 2] and m.inputs[0].datatype == "FP32"
        got = np.frombuffer(m.raw_input_contents[0], "<f4").reshape(3, 3, 2, 2)
        np.testing.assert_array_equal(got, x[[(i + k) % 5 for k in range(3)]])
    single = _read(write_requests(tmp_path / "s.bin", "m", x=x))
    assert [list(m.inputs[0].shape) for m in single] == [[1, 3, 2, 2]] * 5
