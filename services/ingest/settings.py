"""The ingest worker's one settings object (env: ADREC_*, nested with __)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from services.common.embedder_client import EmbedderClientConfig
from services.common.events import Topics
from services.common.feature_store import FeatureStoreConfig
from services.common.settings import DATA_DIR, KafkaConfig, MilvusConfig, ServiceSettings


class IngestConfig(BaseModel):
    topic: str = Topics.LISTINGS
    group_id: str = "adrec-ingest"
    poll_max_records: int = Field(default=1000, ge=1, le=10_000,
                                  description="batch size cap: larger batches amortise the per-batch writes")
    poll_timeout_s: float = Field(default=0.2, gt=0)
    fetch_workers: int = Field(default=8, ge=1, le=128)
    image_roots: list[str] = Field(default_factory=lambda: [str(DATA_DIR)],
                                   description="local directories image paths may point into")
    image_max_bytes: int = Field(default=10 * 2**20, ge=1024)
    image_timeout_s: float = Field(default=5.0, gt=0)
    allow_private_hosts: bool = Field(default=False, description="allow http(s) images from private/loopback IPs")
    allowed_hosts: list[str] = Field(default_factory=list, description="hosts exempt from the address check")
    max_attempts: int = Field(default=3, ge=1, le=20, description=(
        "tries for a transient error; then an image fetch goes to the DLQ, an embedder error fails the batch"))
    backoff_s: float = Field(default=0.2, ge=0)
    max_future_s: float = Field(default=3600.0, gt=0,
                                description="dead-letter listing events dated further ahead of the clock")
    model_version: str = Field(default="", description="collection version when none is active yet")
    precomputed_vectors: str | None = Field(
        default=None, description=".npz with `uris` and `vectors`: bypass the embedder (benchmarks, tests)")


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ADREC_", env_nested_delimiter="__", extra="ignore")

    service_name: str = "ingest"
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    milvus: MilvusConfig = Field(default_factory=MilvusConfig)
    feast: FeatureStoreConfig = Field(default_factory=FeatureStoreConfig)
    embedder_client: EmbedderClientConfig = Field(default_factory=EmbedderClientConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
