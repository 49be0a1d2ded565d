"""Settings from the environment, and `python -m services.abmetrics` as a process on the real broker/Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from services.abmetrics.settings import AbMetricsSettings
from services.common.events import Assignment, Impression, ShownItem
from services.common.feature_store import FeatureStoreClient, FeatureStoreConfig
from services.common.kafka_client import EventProducer
from services.localstack.ports import free_port
from tests.helpers.procs import read_until

from .conftest import new_topic

REPO = Path(__file__).resolve().parents[3]


def test_settings_read_the_shared_adrec_environment(monkeypatch) -> None:
    monkeypatch.setenv("ADREC_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("ADREC_REDIS__HOST", "redis.adrec")
    monkeypatch.setenv("ADREC_ABMETRICS__GROUP_ID", "g1")
    monkeypatch.setenv("ADREC_ABMETRICS__SRM_ALPHA", "0.01")
    s = AbMetricsSettings()
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092" and s.redis.host == "redis.adrec"
    assert s.abmetrics.group_id == "g1" and s.abmetrics.srm_alpha == 0.01 and s.abmetrics.topic == "user-events"
    assert AbMetricsSettings(abmetrics={"srm_alpha": 0.001}).abmetrics.alpha == 0.05


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
def test_service_process_aggregates_and_serves_reports(kcfg, redis_server, tmp_path: Path) -> None:
    topic, port = new_topic(kcfg), free_port()
    exp_file = tmp_path / "experiments.yaml"
    exp_file.write_text("layers:\n- id: l1\n  salt: s1\n  experiments:\n  - id: proc-exp\n    salt: p1\n"
                        "    variants: [{name: control, weight: 1}, {name: treatment, weight: 1}]\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ADREC_LOG_LEVEL": "WARNING",
           "ADREC_KAFKA__BOOTSTRAP_SERVERS": kcfg.bootstrap_servers, "ADREC_REDIS__HOST": redis_server.host,
           "ADREC_REDIS__PORT": str(redis_server.port), "ADREC_PORT": str(port),
           "ADREC_ABMETRICS__TOPIC": topic, "ADREC_ABMETRICS__GROUP_ID": f"g-{uuid.uuid4().hex[:6]}",
           "ADREC_ABMETRICS__NAMESPACE": f"abm-proc-{uuid.uuid4().hex[:6]}",
           "ADREC_ABMETRICS__EXPERIMENTS_FILE": str(exp_file), "ADREC_ABMETRICS__FEAST_PUSH_INTERVAL_S": "0.5",
           "ADREC_FEAST__REGISTRY_PATH": str(tmp_path / "registry.db"),
           "ADREC_FEAST__SQLITE_PATH": str(tmp_path / "online.db")}
    proc = subprocess.Popen([sys.executable, "-m", "services.abmetrics"], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        read_until(proc, "abmetrics ready", timeout_s=90)
        with EventProducer(kcfg) as producer:
            for i, variant in enumerate(["control", "treatment", "treatment"]):
                producer.publish(topic, Impression(
                    request_id=f"req-proc-{i:04d}", user_id=f"u{i}",
                    assignments=[Assignment(experiment_id="proc-exp", variant=variant)],
                    items=[ShownItem(listing_id="l1", position=0), ShownItem(listing_id="l2", position=1)]))
            producer.flush()
        deadline, report = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/experiments/proc-exp/report", timeout=10) as r:
                report = json.load(r)
            if sum(v["impressions"] for v in report["variants"]) == 6:
                break
            time.sleep(0.5)
        assert [(v["variant"], v["impressions"], v["users"]) for v in report["variants"]] == \
               [("control", 2, 1), ("treatment", 4, 2)]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/experiments/proc-exp", timeout=30) as r:
            assert r.status == 200 and b"<img" in r.read()
        # item CTR reached Feast's online store (what the re-ranker reads)
        features = FeatureStoreClient(FeatureStoreConfig(registry_path=env["ADREC_FEAST__REGISTRY_PATH"],
                                                         sqlite_path=env["ADREC_FEAST__SQLITE_PATH"]))
        deadline, row = time.monotonic() + 30, {}
        while time.monotonic() < deadline:
            row = features.read(["item_ctr:impressions", "item_ctr:ctr"], [{"listing_id": "l1"}])[0]
            if row["impressions"] == 3:
                break
            time.sleep(0.5)
        assert row["impressions"] == 3 and row["ctr"] == pytest.approx(2 / 103)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
