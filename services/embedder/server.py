"""kserve.ModelServer bound to a configurable address (kserve itself always binds 0.0.0.0 / [::]).

Local runs and tests bind 127.0.0.1; the container binds 0.0.0.0. Only the single-process
REST server is supported (the batcher lives in the one process that owns the model).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent import futures

from grpc import aio
from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.model import BaseKServeModel
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.rest.server import RESTServer

from .model import EmbedderModel
from .protocol import fast_grpc_layout
from .settings import EmbedderConfig

log = logging.getLogger(__name__)

GRPC_MAX_MESSAGE = 64 * 1024 * 1024


class EmbedderServicer(InferenceServicer):
    """kserve's servicer, with ModelInfer for the embedder going straight to EmbedderModel.infer_grpc
    when the request has the common layout (one input in raw_input_contents); everything else,
    other models included, takes kserve's generic path."""

    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        if fast_grpc_layout(request):
            model = self._data_plane.model_registry.get_model(request.model_name)
            if isinstance(model, EmbedderModel) and model.ready:
                return await model.infer_grpc(request)
        return await super().ModelInfer(request, context)


class _BoundGRPCServer(GRPCServer):
    def __init__(self, host: str, port: int, *args, log_calls: bool = False, **kwargs) -> None:
        super().__init__(port, *args, **kwargs)
        self._host = host
        self._log_calls = log_calls

    async def start(self, max_workers: int) -> None:
        interceptors = ((LoggingInterceptor(),) if self._log_calls else ()) + (ExceptionToStatusInterceptor(),)
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers), interceptors=interceptors,
            options=[("grpc.max_send_message_length", GRPC_MAX_MESSAGE),
                     ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE),
                     ("grpc.so_reuseport", 0)])
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            EmbedderServicer(self._data_plane, self._model_repository_extension), self._server)
        addr = f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"
        self._server.add_insecure_port(addr)
        log.info("gRPC server on %s", addr)
        await self._server.start()
        await self._server.wait_for_termination()


class EmbedderServer(ModelServer):
    def __init__(self, config: EmbedderConfig) -> None:
        super().__init__(http_port=config.http_port, grpc_port=config.grpc_port, workers=1,
                         enable_grpc=config.enable_grpc, enable_latency_logging=config.request_logging,
                         grace_period=config.grace_period_s)
        self.config = config
        if not config.request_logging:
            for name in ("kserve", "kserve.trace", "uvicorn.access"):
                logging.getLogger(name).setLevel(logging.WARNING)

    def start(self, models: list[BaseKServeModel]) -> None:
        c = self.config
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = RESTServer(FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension,
                                       self.http_port, workers=1, grace_period=self.grace_period,
                                       timeout_keep_alive=self.timeout_keep_alive)
        self._rest_server.config.host = c.host
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = _BoundGRPCServer(c.host, self.grpc_port, self.dataplane,
                                                 self.model_repository_extension, kwargs={},
                                                 grace_period=self.grace_period, log_calls=c.request_logging)
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.register_signal_handler()
        log.info("embedder serving %s on http://%s:%d (gRPC %s)", [m.name for m in models], c.host, self.http_port,
                 self.grpc_port if self.enable_grpc else "off")
        asyncio.run(self._serve())
