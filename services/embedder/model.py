"""The kserve.Model adapter: protocol parsing -> decoding -> dynamic batcher -> responses + metrics."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Coroutine
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput, ServerNotReady
from kserve.model import InferenceVerb
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.infer_type import InferRequest

from .batcher import DynamicBatcher, QueueFull
from .decoding import BadInput, ImageLimits, check_tensor, decode_image
from .metrics import EmbedderMetrics, default_metrics
from .model_bundle import ModelBundle, load_bundle, resolve_model_dir
from .protocol import (BYTES_INPUT, OUTPUT_NAME, TENSOR_INPUT, Parsed, parse_v1, parse_v2, parse_v2_grpc, v1_response,
                       v2_grpc_response, v2_response)
from .runtime import Backend, create_backend
from .settings import EmbedderConfig

log = logging.getLogger(__name__)


class EmbedderModel(Model):
    """Image in, L2-normalised embedding out."""

    def __init__(self, config: EmbedderConfig, *, bundle: ModelBundle | None = None,
                 metrics: EmbedderMetrics | None = None) -> None:
        self.config = config
        self.bundle = bundle or load_bundle(resolve_model_dir(config.model_dir))
        super().__init__(config.model_name or self.bundle.name)
        self.version = self.bundle.version
        self.metrics = metrics or default_metrics()
        self.limits = ImageLimits(config.max_image_bytes, config.max_image_pixels)
        self.backend: Backend | None = None
        self.batcher: DynamicBatcher | None = None
        self._decode_pool = concurrent.futures.ThreadPoolExecutor(config.decode_threads, thread_name_prefix="decode")
        self._in_flight = 0

    # -- lifecycle -------------------------------------------------------------------------

    def load(self) -> bool:
        c = self.config
        self.backend = create_backend(self.bundle, c.runtime, provider=c.provider,
                                      intra_op_threads=c.intra_op_threads, allow_spinning=c.allow_spinning)
        if c.warmup:
            for n in sorted({1, c.max_batch_size}):
                out = self.backend.run(np.zeros((n, *self.bundle.input_shape), np.float32))
                if out.shape != (n, self.bundle.embedding_dim):
                    raise RuntimeError(f"model returned {out.shape}, card says embedding_dim "
                                       f"{self.bundle.embedding_dim}")
        self.batcher = DynamicBatcher(self.backend.run, max_batch_size=c.max_batch_size,
                                      max_wait_s=c.max_wait_ms / 1000.0,
                                      max_concurrent_batches=c.max_concurrent_batches,
                                      max_queue_rows=c.max_queue_images, in_flight=lambda: self._in_flight,
                                      on_batch=self.metrics.observe_batch)
        self.metrics.watch_queue(self.batcher)
        self.metrics.model_info.labels(self.name, self.version, self.backend.description).set(1)
        self.ready = True
        return self.ready

    def stop(self) -> None:
        self.ready = False
        self._decode_pool.shutdown(wait=False, cancel_futures=True)

    # -- metadata --------------------------------------------------------------------------

    def get_input_types(self) -> list[dict]:
        c, h, w = self.bundle.input_shape
        return [{"name": BYTES_INPUT, "datatype": "BYTES", "shape": [-1]},
                {"name": TENSOR_INPUT, "datatype": "FP32", "shape": [-1, c, h, w]}]

    def get_output_types(self) -> list[dict]:
        return [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, self.bundle.embedding_dim]}]

    # -- request path ----------------------------------------------------------------------

    async def __call__(self, body: Any, headers: dict[str, str] | None = None,
                       verb: InferenceVerb = InferenceVerb.PREDICT):
        protocol = ("v2-grpc" if body.from_grpc else "v2-rest") if isinstance(body, InferRequest) else "v1"
        return await self._tracked(protocol, super().__call__(body, headers, verb))

    async def infer_grpc(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """The gRPC fast path for requests in `fast_grpc_layout` (see server.EmbedderServicer): the
        same parsing, limits, batcher and metrics as `__call__`, minus kserve's InferRequest/
        InferResponse conversions, which cost more CPU per image than everything else in the
        request on a small CPU box."""
        async def infer() -> pb.ModelInferResponse:
            try:
                parsed = parse_v2_grpc(request, self.limits, self.config.max_images_per_request)
            except BadInput as exc:
                raise self._bad(exc) from None
            await self._prepare(parsed)
            _, emb = await self.predict(parsed)
            return v2_grpc_response(emb, request.id, self.name, self.version)
        return await self._tracked("v2-grpc", infer())

    async def _tracked(self, protocol: str, work: Coroutine):
        """Run one request's work with the in-flight count (the batcher's "everyone queued" signal),
        latency, outcome and error metrics."""
        m = self.metrics
        self._in_flight += 1
        m.in_flight.inc()
        t = time.perf_counter()
        status = "ok"
        try:
            return await work
        except InvalidInput:
            status = "invalid"
            raise
        except ServerNotReady:
            status = "overloaded"
            raise
        except asyncio.CancelledError:  # the client went away or its deadline passed (not an Exception)
            status = "cancelled"
            raise
        except Exception:
            status = "error"
            m.errors.labels("internal").inc()
            log.exception("embedding request failed")
            raise
        finally:
            self._in_flight -= 1
            m.in_flight.dec()
            m.request_done(protocol, status, time.perf_counter() - t)

    def _bad(self, exc: BadInput) -> InvalidInput:
        self.metrics.errors.labels(exc.reason).inc()
        return InvalidInput(exc.message)

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Parsed:
        c = self.config
        try:
            if isinstance(payload, InferRequest):
                parsed = parse_v2(payload, self.limits, c.max_images_per_request)
            else:
                parsed = parse_v1(payload, self.limits, c.max_images_per_request)
        except BadInput as exc:
            raise self._bad(exc) from None
        await self._prepare(parsed)
        return parsed

    async def _prepare(self, parsed: Parsed) -> None:
        """Encoded images -> the model's input tensor; a client's tensor -> checked against the card."""
        try:
            if parsed.tensor is None:
                parsed.tensor = await self._decode(parsed.images)
            else:
                check_tensor(parsed.tensor, self.bundle.input_shape, self.config.max_images_per_request)
        except BadInput as exc:
            raise self._bad(exc) from None
        parsed.images = None

    async def _decode(self, images: list[bytes]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        spec, limits = self.bundle.spec, self.limits
        t = time.perf_counter()

        def one(i: int, data: bytes) -> np.ndarray:
            try:
                return decode_image(data, spec, limits)
            except BadInput as exc:
                raise exc.at(i) from None

        arrays = await asyncio.gather(*(loop.run_in_executor(self._decode_pool, one, i, d)
                                        for i, d in enumerate(images)))
        self.metrics.decode.observe(time.perf_counter() - t)
        return np.stack(arrays)

    def validate(self, payload: Any) -> Any:
        return payload  # checked in preprocess

    async def predict(self, parsed: Parsed, headers: dict[str, str] | None = None) -> tuple[Parsed, np.ndarray]:
        if self.batcher is None:
            raise ServerNotReady("model not loaded")
        x = parsed.tensor
        try:
            emb = await self.batcher.submit(x)
        except QueueFull as exc:
            self.metrics.errors.labels("overloaded").inc()
            raise ServerNotReady(str(exc)) from None
        self.metrics.images_done(parsed.kind, x.shape[0])
        return parsed, emb

    async def postprocess(self, result: tuple[Parsed, np.ndarray], headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None):
        parsed, emb = result
        if parsed.protocol == "v1":
            return v1_response(emb, self.name, self.version)
        return v2_response(emb, parsed.request, self.name, self.version)
