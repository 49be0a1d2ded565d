"""The local supervisor as a user runs it: `python -m services.localstack up`, then Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pymilvus import MilvusClient

from services.common.events import Topics
from services.common.kafka_client import list_topics
from services.common.settings import KafkaConfig
from tests.helpers.procs import alive, processes_mentioning, read_until, rest_of_output

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[3]


def start_up(run_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "ADREC_LOCAL_RUN_DIR": str(run_dir), "ADREC_LOCAL_KAFKA_PORT": "0",
           "ADREC_LOCAL_KAFKA_CONTROLLER_PORT": "0", "ADREC_LOCAL_MILVUS_PORT": "0",
           "ADREC_LOCAL_REDIS_PORT": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "services.localstack", "up", "--redis", "--infra-only"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_up_reports_endpoints_and_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    proc = start_up(tmp_path)
    try:
        out = read_until(proc, "Ctrl-C to stop.", timeout_s=180)
        env = dict(line.split("export ", 1)[1].split("=", 1) for line in out.splitlines() if "export " in line)
        assert set(Topics.all()) <= list_topics(KafkaConfig(bootstrap_servers=env["ADREC_KAFKA__BOOTSTRAP_SERVERS"]))
        client = MilvusClient(uri=env["ADREC_MILVUS__URI"])
        assert client.list_collections() == []
        client.close()
        state = json.loads((tmp_path / "state.json").read_text())
        assert {c["name"] for c in state["components"]} == {"kafka", "milvus", "redis"}
        pids = [c["pid"] for c in state["components"]]
        assert all(alive(p) for p in pids)

        proc.send_signal(signal.SIGINT)
        rest = rest_of_output(proc, timeout_s=90)
        assert proc.returncode == 0, rest
        assert "stopped." in rest
        assert not any(alive(p) for p in pids)
        assert processes_mentioning(str(tmp_path)) == []
        assert not (tmp_path / "state.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run([sys.executable, "-m", "services.localstack", "stop"], cwd=REPO,
                       env={**os.environ, "ADREC_LOCAL_RUN_DIR": str(tmp_path)}, capture_output=True)


def test_stop_cleans_up_after_a_crashed_supervisor(tmp_path: Path) -> None:
    proc = start_up(tmp_path)
    try:
        read_until(proc, "Ctrl-C to stop.", timeout_s=180)
        proc.kill()  # the supervisor dies; its children (own sessions) keep running
        proc.wait(timeout=10)
        time.sleep(0.5)
        assert processes_mentioning(str(tmp_path)), "children should outlive a SIGKILLed supervisor"
        res = subprocess.run([sys.executable, "-m", "services.localstack", "stop"], cwd=REPO, text=True,
                             env={**os.environ, "ADREC_LOCAL_RUN_DIR": str(tmp_path)}, capture_output=True,
                             timeout=120)
        assert res.returncode == 0 and "stopped 3 process(es)" in res.stdout, res.stdout + res.stderr
        assert processes_mentioning(str(tmp_path)) == []
    finally:
        if proc.poll() is None:
            proc.kill()


def test_up_fresh_stops_what_a_crashed_run_left_before_wiping_its_pid_files(tmp_path: Path) -> None:
    crashed = start_up(tmp_path)
    try:
        read_until(crashed, "Ctrl-C to stop.", timeout_s=180)
        crashed.kill()
        crashed.wait(timeout=10)
        assert processes_mentioning(str(tmp_path))
        env = {**os.environ, "ADREC_LOCAL_RUN_DIR": str(tmp_path), "ADREC_LOCAL_KAFKA_PORT": "0",
               "ADREC_LOCAL_KAFKA_CONTROLLER_PORT": "0", "ADREC_LOCAL_MILVUS_PORT": "0",
               "ADREC_LOCAL_REDIS_PORT": "0", "PYTHONUNBUFFERED": "1"}
        fresh = subprocess.Popen([sys.executable, "-m", "services.localstack", "up", "--redis", "--infra-only",
                                  "--fresh"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        try:
            out = read_until(fresh, "starting kafka", timeout_s=120)
            assert "stopped 3 process(es) left by an earlier run" in out, out
            # SIGTERM while it starts (a pod or a terminal closing): what it started is stopped too
            fresh.send_signal(signal.SIGTERM)
            rest = rest_of_output(fresh, timeout_s=120)
            assert fresh.returncode == 130 and "interrupted while starting" in rest, rest
            time.sleep(0.5)
            assert processes_mentioning(str(tmp_path)) == []
        finally:
            if fresh.poll() is None:
                fresh.kill()
    finally:
        if crashed.poll() is None:
            crashed.kill()
        subprocess.run([sys.executable, "-m", "services.localstack", "stop"], cwd=REPO,
                       env={**os.environ, "ADREC_LOCAL_RUN_DIR": str(tmp_path)}, capture_output=True)
