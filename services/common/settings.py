"""Typed configuration shared by the services.

Each service defines ONE settings class (a `ServiceSettings` subclass) with its own env
prefix and composes the connection blocks below. Nested fields use `__` in env names, e.g.
`ADREC_INGEST_KAFKA__BOOTSTRAP_SERVERS=broker:9092`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# the shared catalogue: $ADREC_DATA_DIR, as the training pipeline reads it, else ../shared/data
DATA_DIR = Path(os.environ.get("ADREC_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data").resolve()


class KafkaConfig(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "adrec"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    request_timeout_ms: int = Field(default=30_000, ge=1_000)
    topic_partitions: int = Field(default=3, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    @field_validator("bootstrap_servers")
    @classmethod
    def _hosts(cls, v: str) -> str:
        hosts = [h.strip() for h in v.split(",") if h.strip()]
        if not hosts or any(":" not in h for h in hosts):
            raise ValueError("bootstrap_servers must be a comma-separated list of host:port")
        return ",".join(hosts)

    def client_config(self) -> dict[str, object]:
        """Connection properties in librdkafka's names, shared by producer, consumer and admin."""
        conf: dict[str, object] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
            "socket.timeout.ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        return conf


class MilvusConfig(BaseModel):
    uri: str = Field(default=".cache/run/milvus.db",
                     description="milvus-lite file path, or http(s)://host:port of a Milvus server")
    token: SecretStr | None = None
    db_name: str = ""
    alias: str = Field(default="listings", description="alias the readers search; points at the active collection")
    dim: int = Field(default=256, ge=2, le=32_768)
    metric: Literal["COSINE", "IP", "L2"] = "COSINE"
    index_type: str = "AUTOINDEX"
    index_params: dict[str, int | float | str] = Field(default_factory=dict,
                                                       description='e.g. {"M": 16, "efConstruction": 200} for HNSW')
    search_params: dict[str, int | float | str] = Field(default_factory=dict, description='e.g. {"ef": 64}')
    search_consistency: Literal["Strong", "Bounded", "Session", "Eventually"] = Field(
        default="Bounded", description="reads: Bounded skips Strong's wait for the next time tick (~200 ms)")
    timeout_s: float = Field(default=5.0, gt=0)
    direct_search: bool = Field(default=True, description="search through pymilvus' gRPC stub without "
                                "MilvusClient's per-call layers (services/common/milvus_search.py); false: "
                                "MilvusClient.search")


class RedisConfig(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=6379, ge=1, le=65535)
    db: int = Field(default=0, ge=0)
    password: SecretStr | None = None

    @property
    def connection_string(self) -> str:
        """Feast's redis `connection_string` format."""
        s = f"{self.host}:{self.port},db={self.db}"
        if self.password:
            s += f",password={self.password.get_secret_value()}"
        return s


class FeastConfig(BaseModel):
    repo_path: str = "feature_repo"


class ServiceSettings(BaseSettings):
    """Common fields; subclasses set `model_config` with their own `env_prefix`."""

    model_config = SettingsConfigDict(env_prefix="ADREC_", env_nested_delimiter="__", extra="ignore")

    service_name: str = "adrec"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
    bind_host: str = Field(default="127.0.0.1", description="address servers listen on (0.0.0.0 in a pod)")
    metrics_port: int | None = Field(default=None, ge=0, le=65535,
                                     description="serve /metrics on this port (None: not served separately)")
