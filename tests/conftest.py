"""Fixtures that start the real infrastructure (bound to 127.0.0.1, stopped by PID).

The servers come from the repo's own bootstrap (scripts/bootstrap.sh): Kafka jars from
Maven Central, Debian's redis-server, milvus-lite from PyPI.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from services.common.settings import KafkaConfig  # noqa: E402
from services.localstack.kafka_broker import KafkaBroker  # noqa: E402
from services.localstack.redis_server import RedisServer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_config(kafka_broker: KafkaBroker) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=kafka_broker.bootstrap_servers, client_id="adrec-test")


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and collection names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if not shutil.which("redis-server"):
        pytest.fail("redis-server not installed: run scripts/bootstrap.sh")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-init embedder model (32 dims, 64x48 input) exported by the vision package's
    own code, the way tests/services/embedder does: for tests that run the whole platform."""
    from tests.services.embedder.conftest import build_model

    return build_model(tmp_path_factory.mktemp("small-model"))


@pytest.fixture
def milvus_uri(tmp_path: Path) -> str:
    """A fresh embedded milvus-lite database file."""
    return str(tmp_path / "milvus.db")


@pytest.fixture(scope="session")
def embedded_milvus(tmp_path_factory: pytest.TempPathFactory):
    """The real C++ Milvus 2.3.5 (scripts/bootstrap.sh milvus), for server-mode tests."""
    from services.localstack.milvus_server import EmbeddedMilvus

    server = EmbeddedMilvus(tmp_path_factory.mktemp("milvus-2.3.5"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
