"""The recommender's one settings object (env: ADREC_*, nested with __)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from services.common.embedder_client import EmbedderClientConfig
from services.common.feature_store import FeatureStoreConfig
from services.common.settings import KafkaConfig, MilvusConfig, RedisConfig, ServiceSettings


class RecommendConfig(BaseModel):
    default_k: int = Field(default=12, ge=1, le=100)
    max_k: int = Field(default=100, ge=1, le=1000)
    max_page: int = Field(default=10, ge=1, le=100)
    overfetch: int = Field(default=4, ge=1, le=20, description="search k*page*overfetch, then re-rank")
    max_per_shop: int = Field(default=2, ge=1, le=100, description="diversity: at most N results per shop")
    feast_timeout_s: float = Field(default=0.5, gt=0, description="online store (Redis) socket timeout for the seed read")
    milvus_timeout_s: float = Field(default=1.0, gt=0)
    embedder_timeout_s: float = Field(default=5.0, gt=0)
    max_upload_bytes: int = Field(default=10 * 2**20, ge=1024)
    popular_refresh_s: float = Field(default=300.0, gt=0, description="refresh of the fallback lists")
    popular_per_category: int = Field(default=50, ge=1)
    experiments_file: str | None = Field(default=None, description="YAML with the A/B layers and experiments")
    impression_queue: int = Field(default=10_000, ge=1)
    image_roots: list[str] = Field(default_factory=list, description="local roots allowed for image_uri")
    allow_private_image_hosts: bool = False
    demo_page: bool = Field(default=True, description="serve the demo page at /demo (and redirect / to it)")
    dashboard_url: str = Field(default="http://127.0.0.1:18010/experiments/shop-diversity", max_length=2048,
                               description="the A/B dashboard the demo page links to")


class RecommenderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ADREC_", env_nested_delimiter="__", extra="ignore")

    service_name: str = "recommender"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes")
    served_requests: Literal["memory", "redis"] = Field(
        default="memory", description="where served request ids are kept for click validation: memory (one "
                                      "process) or redis (replicas / several workers)")
    redis: RedisConfig = Field(default_factory=RedisConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    milvus: MilvusConfig = Field(default_factory=MilvusConfig)
    feast: FeatureStoreConfig = Field(default_factory=FeatureStoreConfig)
    embedder_client: EmbedderClientConfig = Field(default_factory=EmbedderClientConfig)
    recommend: RecommendConfig = Field(default_factory=RecommendConfig)
