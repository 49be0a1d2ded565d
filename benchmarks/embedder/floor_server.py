"""The floor for `make bench-embedder`: the least a Python gRPC v2 server can do per request.

A bare `grpc.aio` server (the stack kserve's gRPC server runs on) whose ModelInfer takes the
request as bytes, never parses it, and answers with one pre-serialized ModelInferResponse of
the embedder's output size. No model, no kserve, no batching, no metrics. Driven by the same
load generator with the same requests, its CPU per request (plus the generator's) is what any
Python gRPC server pays before doing any work, so

    ceiling = raw ORT CPU per image / (raw ORT CPU per image + floor CPU per request)

bounds server/raw throughput on this machine at one image per request (benchmarks/embedder/bench.py).

    python -m benchmarks.embedder.floor_server --port N [--host 127.0.0.1] [--dim 256]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc
import numpy as np
from grpc import aio

SERVICE, METHOD = "inference.GRPCInferenceService", "ModelInfer"
GRPC_MAX_MESSAGE = 64 * 1024 * 1024


def canned_response(dim: int, model_name: str = "floor") -> bytes:
    """A serialized ModelInferResponse carrying one [1, dim] FP32 output, as the embedder answers."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    out = pb.ModelInferResponse.InferOutputTensor(name="embedding", datatype="FP32", shape=[1, dim])
    return pb.ModelInferResponse(id="floor", model_name=model_name, model_version="0", outputs=[out],
                                 raw_output_contents=[np.zeros(dim, "<f4").tobytes()]).SerializeToString()


async def serve(host: str, port: int, dim: int, ready: asyncio.Event | None = None) -> None:
    answer = canned_response(dim)

    async def model_infer(request: bytes, context) -> bytes:  # no deserializer: the raw message
        return answer

    server = aio.server(options=[("grpc.max_send_message_length", GRPC_MAX_MESSAGE),
                                 ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE),
                                 ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(model_infer)}),))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise SystemExit(f"floor server: cannot bind {host}:{port}")
    await server.start()
    print(f"floor server on {host}:{port}", flush=True)
    if ready is not None:
        ready.set()
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dim", type=int, default=256, help="floats in the answer (the embedding size)")
    args = p.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.dim))
    return 0


if __name__ == "__main__":
    sys.exit(main())
