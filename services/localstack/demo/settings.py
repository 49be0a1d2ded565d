"""The demo's one settings object (env: ADREC_DEMO_*) and its error."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import DATA_DIR

from ..paths import REPO_ROOT


class DemoError(RuntimeError):
    """The demo cannot go on; the message says what is wrong and where to look."""


class DemoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ADREC_DEMO_", extra="ignore")

    datasets: list[str] = Field(default_factory=lambda: ["fashion-products"], min_length=1)
    data_dir: Path = Field(default=DATA_DIR, description="the shared data (../shared/data)")
    limit: int | None = Field(default=None, ge=1, description="publish at most N listings per dataset")
    train: bool = Field(default=True, description="train the demo model when none is exported")
    train_config: Path = Field(default=REPO_ROOT / "configs" / "vision" / "demo.yaml")
    index_timeout_s: float = Field(default=1800, gt=0, description="give up indexing after this long")
    stall_s: float = Field(default=180, gt=0, description="give up when nothing new is searchable for this long")
    probe_users: int = Field(default=1000, ge=2, le=100_000,
                             description="A/B check: user ids tried to find one per variant")

    @field_validator("datasets")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from services.ingest.catalogue import DATASETS

        unknown = sorted(set(v) - set(DATASETS))
        if unknown:
            raise ValueError(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(sorted(DATASETS))}")
        return list(dict.fromkeys(v))
