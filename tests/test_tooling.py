"""The repo's own tooling: make help, the bootstrap's helm, the Kafka pom and the lock file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from services.localstack.paths import kafka_libs, kafka_version

REPO = Path(__file__).resolve().parents[1]


def test_make_help_lists_every_documented_target() -> None:
    out = subprocess.run(["make", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)  # colours
    makefiles = [REPO / "Makefile", *sorted((REPO / "mk").glob("*.mk"))]
    documented = {m for f in makefiles for m in re.findall(r"^([\w-]+):.*?## ", f.read_text(), re.M)}
    assert {"up", "test", "bootstrap", "help"} <= documented
    for target in documented:
        assert re.search(rf"\b{re.escape(target)}\b", out), f"{target} missing from make help"


def test_helm_from_the_bootstrap_runs() -> None:
    out = subprocess.run([str(REPO / ".cache" / "bin" / "helm"), "version", "--short"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("v3.21.4")


def test_kafka_jars_match_the_pom() -> None:
    assert (kafka_libs() / f"kafka_2.13-{kafka_version()}.jar").exists()
    assert any(kafka_libs().glob("log4j-slf4j-impl-*.jar"))  # the log4j2 binding


def test_lock_pins_every_package_and_the_agreed_versions() -> None:
    lock = (REPO / "requirements" / "main.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s]+)", lock, re.M))
    assert pins["kfp"] == "2.17.0"
    assert pins["torch"].startswith("2.14.") and pins["torchvision"].startswith("0.29.")
    major, minor, _ = pins["protobuf"].split(".", 2)
    assert (int(major), int(minor)) >= (6, 33) and int(major) < 7
    unpinned = [ln for ln in lock.splitlines() if ln and not ln.startswith((" ", "#")) and "==" not in ln]
    assert unpinned == []


def test_bootstrap_is_idempotent() -> None:
    res = subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=REPO, capture_output=True, text=True,
                         timeout=300, check=True)
    steps = [ln for ln in res.stderr.splitlines() if "[bootstrap]" in ln]
    assert len(steps) == 1 and "ready" in steps[0], res.stderr  # nothing re-installed
