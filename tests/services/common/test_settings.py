"""Typed settings: env overrides (nested with __) and validation errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.common.settings import KafkaConfig, MilvusConfig, RedisConfig, ServiceSettings


class DemoSettings(ServiceSettings):
    kafka: KafkaConfig = KafkaConfig()
    milvus: MilvusConfig = MilvusConfig()
    batch_size: int = 32


def test_env_overrides_nested_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADREC_KAFKA__BOOTSTRAP_SERVERS", "k1:9092, k2:9092")
    monkeypatch.setenv("ADREC_MILVUS__URI", "http://milvus:19530")
    monkeypatch.setenv("ADREC_MILVUS__DIM", "128")
    monkeypatch.setenv("ADREC_BATCH_SIZE", "8")
    s = DemoSettings()
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert s.kafka.client_config()["bootstrap.servers"] == "k1:9092,k2:9092"
    assert (s.milvus.uri, s.milvus.dim, s.batch_size) == ("http://milvus:19530", 128, 8)


@pytest.mark.parametrize("name, value", [
    ("ADREC_KAFKA__BOOTSTRAP_SERVERS", "no-port-here"),
    ("ADREC_MILVUS__DIM", "1"),
    ("ADREC_MILVUS__METRIC", "HAMMING"),
    ("ADREC_LOG_LEVEL", "LOUD"),
])
def test_invalid_env_is_rejected(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as err:
        DemoSettings()
    assert name.removeprefix("ADREC_").split("__")[-1].lower() in str(err.value).lower()


def test_sasl_and_redis_connection_strings() -> None:
    k = KafkaConfig(bootstrap_servers="b:9093", security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
                    sasl_username="u", sasl_password="s3cr3t-pw")
    conf = k.client_config()
    assert (conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == ("PLAIN", "u", "s3cr3t-pw")
    assert conf["security.protocol"] == "SASL_SSL"
    assert "s3cr3t-pw" not in repr(k)  # secrets are not printed
    assert RedisConfig(host="r", port=6380, db=2, password="x").connection_string == "r:6380,db=2,password=x"
