"""The platform's one Feast wrapper: push features online, read them back.

The store is configured in code from `FeatureStoreConfig` (SQLite locally, Redis in
production) with the definitions of `feature_repo/definitions.py`, so services and tests do
not depend on the working directory. `feature_repo/feature_store.yaml` is the same setup for
the `feast` CLI.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import prometheus_client.values  # noqa: F401 - before feast: see below
from feast import FeatureStore, RepoConfig
from feast.data_source import PushMode
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.repo_config import RegistryConfig
from feast.type_map import feast_value_type_to_python_type
from pydantic import BaseModel, Field

from .settings import RedisConfig

# Importing feast points prometheus_client at a multiprocess temp dir (PROMETHEUS_MULTIPROC_DIR) for
# its feature server; prometheus_client picks its value class once, at its own import, so importing it
# first keeps every service's metrics in-process (no mmap write per observation, no dir to outlive us).
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
    timeout_s: float | None = Field(default=None, gt=0, description=(
        "online reads on Redis: socket timeout per call and no client retries (a request's budget; the "
        "caller falls back or answers 503); None keeps redis-py's defaults (3 retries with backoff)"))

    def repo_config(self) -> RepoConfig:
        if self.online_store == "redis":
            conn = self.redis.connection_string
            if self.timeout_s is not None:  # parsed by Feast as JSON values into redis.Redis(**kwargs)
                conn += f",socket_timeout={self.timeout_s},socket_connect_timeout={self.timeout_s},retry=null"
            # skip_dedup: Feast's Redis store would keep a row only if its event timestamp (the writer's
            # clock) is newer than the stored one, silently dropping a newer version written by a replica
            # whose clock is behind, or a delete tied with the upsert it beats. The writers order versions
            # themselves (ingest compares `updated_at`, one consumer per listing's partition), like SQLite.
            online: dict[str, Any] = {"type": "redis", "connection_string": conn, "skip_dedup": True}
        else:
            Path(self.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
            online = {"type": "sqlite", "path": str(Path(self.sqlite_path).resolve())}
        if "://" not in self.registry_path:
            Path(self.registry_path).parent.mkdir(parents=True, exist_ok=True)
        return RepoConfig(
            project=self.project,
            provider="local",
            registry=self._registry(),
            online_store=online,
            offline_store={"type": "file"},
            entity_key_serialization_version=3,
            repo_path=REPO_PATH,
        )


    def _registry(self) -> RegistryConfig:
        if self.registry_path.startswith(SQL_URLS):  # Feast's SQL registry wants its own config class
            from feast.infra.registry.sql import SqlRegistryConfig

            return SqlRegistryConfig(path=self.registry_path, cache_ttl_seconds=self.registry_cache_ttl_s)
        return RegistryConfig(path=self.registry_path, cache_ttl_seconds=self.registry_cache_ttl_s, registry_type="file")


class FeatureStoreError(RuntimeError):
    pass


class FeatureStoreClient:
    def __init__(self, cfg: FeatureStoreConfig) -> None:
        self.cfg = cfg
        self._store = FeatureStore(config=cfg.repo_config(), repo_path=str(REPO_PATH))
        self._view_cache: dict[str, tuple[float, Any, dict[str, Any]]] = {}
        self._lock = threading.Lock()

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
        """Online features for each entity row (its keys included), in order; missing values are None.

        The same values as `FeatureStore.get_online_features(...).to_dict()` (no on-demand views are
        defined here), read with the online store's own `online_read`, one call per feature view, with
        the views cached for the registry's TTL: a seed read costs 0.09 ms instead of 0.25 ms of Python.
        """
        if not entity_rows:
            return []
        try:
            keys = [_entity_key(r) for r in entity_rows]
            out = [dict(r) for r in entity_rows]
            provider = self._store._get_provider()  # noqa: SLF001 - the per-view read has no public API
            for view, names, types in self._views(features):
                rows = provider.online_read(config=self._store.config, table=view, entity_keys=keys,
                                            requested_features=list(names))  # redis appends to it
                for row, (_, values) in zip(out, rows):
                    for name in names:
                        value = values.get(name) if values else None
                        row[name] = None if value is None else feast_value_type_to_python_type(value, types[name])
        except FeatureStoreError:
            raise
        except Exception as exc:  # feast and the store clients raise many types; callers need one
            raise FeatureStoreError(f"online read failed: {exc}") from exc
        return out

    def _views(self, features: Sequence[str]) -> list[tuple[Any, list[str], dict[str, Any]]]:
        """`view:feature` refs grouped by view -> (view, names, value types); views cached for the TTL."""
        grouped: dict[str, list[str]] = {}
        seen: set[str] = set()
        for ref in features:
            view_name, sep, name = ref.partition(":")
            if not sep or not name:
                raise FeatureStoreError(f"feature reference {ref!r} is not 'view:feature'")
            if name in seen:
                raise FeatureStoreError(f"feature name {name!r} requested from two views")
            seen.add(name)
            grouped.setdefault(view_name, []).append(name)
        now = time.monotonic()
        out = []
        for view_name, names in grouped.items():
            with self._lock:
                hit = self._view_cache.get(view_name)
            if hit is None or hit[0] < now:
                view = self._store.get_feature_view(view_name)
                hit = (now + self.cfg.registry_cache_ttl_s, view, {f.name: f.dtype.to_value_type() for f in view.features})
                with self._lock:
                    self._view_cache[view_name] = hit
            _, view, types = hit
            unknown = [n for n in names if n not in types]
            if unknown:
                raise FeatureStoreError(f"feature view {view_name!r} has no features {unknown}")
            out.append((view, names, types))
        return out

    def close(self) -> None:
        # FeatureStore.close() is a coroutine for the async feature server only; the sync
        # online stores (SQLite, Redis) hold no resources that need an explicit close.
        self._store = None  # type: ignore[assignment]


def _entity_key(row: Mapping[str, Any]) -> EntityKey:
    """An entity row ({join key: value}) as Feast's key proto: join keys sorted, str or int values."""
    if not row:
        raise FeatureStoreError("empty entity row")
    keys = sorted(row)
    values = []
    for k in keys:
        v = row[k]
        if isinstance(v, str):
            values.append(Value(string_val=v))
        elif isinstance(v, int) and not isinstance(v, bool):
            values.append(Value(int64_val=v))
        else:
            raise FeatureStoreError(f"entity key {k}={v!r}: only str and int keys are supported")
    return EntityKey(join_keys=keys, entity_values=values)
