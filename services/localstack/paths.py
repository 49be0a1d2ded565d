"""Where the bootstrap script put things (mirrors scripts/bootstrap.sh)."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_home() -> Path:
    return Path(os.environ.get("ADREC_CACHE_HOME", Path.home() / ".cache" / "adrec"))


def kafka_version() -> str:
    pom = (REPO_ROOT / "infra" / "kafka" / "pom.xml").read_text()
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    if not match:
        raise RuntimeError("infra/kafka/pom.xml has no <kafka.version>")
    return match.group(1)


def kafka_libs() -> Path:
    return cache_home() / f"kafka-{kafka_version()}" / "libs"


def milvus_server_python() -> Path:
    return cache_home() / "milvus-2.3.5-venv" / "bin" / "python"


def run_dir() -> Path:
    """State of the local platform (logs, data, pid files); ignored by git."""
    return Path(os.environ.get("ADREC_RUN_DIR", REPO_ROOT / ".cache" / "run"))
