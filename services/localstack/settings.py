"""Settings of the local platform supervisor (env prefix ADREC_LOCAL_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .paths import run_dir


class LocalStackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ADREC_LOCAL_", extra="ignore")

    run_dir: Path = Field(default_factory=run_dir, description="logs, data and pid files")
    kafka_port: int = Field(default=19092, ge=0, le=65535, description="0: any free port")
    kafka_controller_port: int = Field(default=19093, ge=0, le=65535)
    milvus_port: int = Field(default=19530, ge=0, le=65535)
    redis: bool = Field(default=False, description="also start redis-server (Feast's production-like store)")
    redis_port: int = Field(default=16379, ge=0, le=65535)
    services: bool = Field(default=True, description="start the platform's services, not only the infrastructure")
    fresh: bool = Field(default=False, description="wipe run_dir data before starting")
