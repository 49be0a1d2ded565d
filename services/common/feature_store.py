"""The platform's one Feast wrapper: push features online, read them back.

The store is configured in code from `FeatureStoreConfig` (SQLite locally, Redis in
production) with the definitions of `feature_repo/definitions.py`, so services and tests do
not depend on the working directory. `feature_repo/feature_store.yaml` is the same setup for
the `feast` CLI.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from feast import FeatureStore, RepoConfig
from feast.data_source import PushMode
from feast.repo_config import RegistryConfig
from pydantic import BaseModel, Field

from .settings import RedisConfig

log = logging.getLogger(__name__)
REPO_PATH = Path(__file__).resolve().parents[2] / "feature_repo"
SQL_URLS = ("postgresql", "mysql", "sqlite://")  # a shared SQL registry (the cluster); else a file


class FeatureStoreConfig(BaseModel):
    project: str = "adrec"
    registry_path: str = ".cache/feast/registry.db"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: str = ".cache/feast/online_store.db"
    redis: RedisConfig = Field(default_factory=RedisConfig)
    registry_cache_ttl_s: int = 60

    def repo_config(self) -> RepoConfig:
        if self.online_store == "redis":
            online: dict[str, Any] = {"type": "redis", "connection_string": self.redis.connection_string}
        else:
            Path(self.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
            online = {"type": "sqlite", "path": str(Path(self.sqlite_path).resolve())}
        if "://" not in self.registry_path:
            Path(self.registry_path).parent.mkdir(parents=True, exist_ok=True)
        return RepoConfig(
            project=self.project,
            provider="local",
            registry=RegistryConfig(path=self.registry_path, cache_ttl_seconds=self.registry_cache_ttl_s,
                                    registry_type="sql" if self.registry_path.startswith(SQL_URLS) else "file"),
            online_store=online,
            offline_store={"type": "file"},
            entity_key_serialization_version=3,
            repo_path=REPO_PATH,
        )


class FeatureStoreError(RuntimeError):
    pass


class FeatureStoreClient:
    def __init__(self, cfg: FeatureStoreConfig) -> None:
        self.cfg = cfg
        self._store = FeatureStore(config=cfg.repo_config(), repo_path=str(REPO_PATH))

    @property
    def store(self) -> FeatureStore:
        return self._store

    def apply(self) -> None:
        """Register the entities, sources and views (idempotent)."""
        from feature_repo import definitions

        self._store.apply(definitions.ALL)

    def push(self, source: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Write rows to the online store through a push source (streaming write)."""
        if not rows:
            return 0
        now = datetime.now(UTC)
        df = pd.DataFrame([{**r, "event_timestamp": r.get("event_timestamp", now)} for r in rows])
        try:
            self._store.push(source, df, to=PushMode.ONLINE)
        except Exception as exc:  # feast raises many types; callers need one
            raise FeatureStoreError(f"push to {source} failed: {exc}") from exc
        return len(df)

    def read(self, features: Sequence[str], entity_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Online features for each entity row, in order; missing values are None."""
        if not entity_rows:
            return []
        try:
            resp = self._store.get_online_features(features=list(features), entity_rows=list(entity_rows))
        except Exception as exc:
            raise FeatureStoreError(f"online read failed: {exc}") from exc
        cols = resp.to_dict()
        n = len(entity_rows)
        return [{k: v[i] for k, v in cols.items()} for i in range(n)]

    def close(self) -> None:
        # FeatureStore.close() is a coroutine for the async feature server only; the sync
        # online stores (SQLite, Redis) hold no resources that need an explicit close.
        self._store = None  # type: ignore[assignment]
