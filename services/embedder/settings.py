"""Embedder settings: one `EmbedderSettings` object, the embedder's own block under ADREC_EMBEDDER__*.

Examples: ADREC_EMBEDDER__MODEL_DIR=/mnt/models, ADREC_EMBEDDER__MAX_BATCH_SIZE=64,
ADREC_EMBEDDER__PROVIDER=cuda, ADREC_EMBEDDER__MAX_IMAGE_PIXELS=20000000.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class EmbedderConfig(BaseModel):
    # -- the model ------------------------------------------------------------------------
    model_dir: str = Field(default="out/vision-demo",
                           description="local dir (or file:// URI, or a storage URI if kserve-storage is installed) "
                                       "holding model_card.json + model.onnx / model.torchscript.pt")
    model_name: str | None = Field(default=None, description="served name; default: the model card's `name`")
    runtime: Literal["onnx", "torchscript"] = "onnx"
    provider: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="ONNX Runtime provider (auto: CUDA if available) / torch device")
    intra_op_threads: int = Field(default=0, ge=0, description="ORT/torch intra-op threads (0: runtime default)")
    allow_spinning: bool = Field(default=False,
                                 description="ORT worker threads busy-wait between ops (faster alone, "
                                             "steals CPU from request handling when cores are few)")
    warmup: bool = True
    # -- dynamic batching -----------------------------------------------------------------
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_wait_ms: float = Field(default=5.0, ge=0, le=1000,
                               description="how long the first queued image waits for company when idle")
    max_concurrent_batches: int = Field(default=1, ge=1, le=8,
                                        description="batches in flight (1 on CPU; 2 overlaps host work on GPU)")
    max_queue_images: int = Field(default=4096, ge=1, description="queued images before requests are refused")
    # -- request limits -------------------------------------------------------------------
    max_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="encoded size limit per image")
    max_image_pixels: int = Field(default=25_000_000, ge=1, description="width*height limit, checked before decoding")
    max_images_per_request: int = Field(default=256, ge=1)
    decode_threads: int = Field(default=2, ge=1, description="threads decoding/resizing images (PIL drops the GIL)")
    # -- servers --------------------------------------------------------------------------
    host: str = Field(default="0.0.0.0", description="bind address of the REST and gRPC servers")
    http_port: int = Field(default=8080, ge=0, le=65535)
    grpc_port: int = Field(default=8081, ge=0, le=65535)
    enable_grpc: bool = True
    grace_period_s: int = Field(default=10, ge=0)
    request_logging: bool = Field(default=False, description="kserve's per-request latency / gRPC method log lines")


class EmbedderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ADREC_", env_nested_delimiter="__", extra="ignore")

    service_name: str = "embedder"
    embedder: EmbedderConfig = EmbedderConfig()
