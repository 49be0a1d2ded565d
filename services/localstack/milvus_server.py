"""Milvus servers for the local platform and benchmarks, started as processes by PID.

- `MilvusLiteServer`: milvus-lite's gRPC server mode (`milvus-lite server`), so several local
  processes (ingest worker, recommender) share one database. The default locally.
- `EmbeddedMilvus`: the real C++ Milvus 2.3.5 (`milvus` package, own venv from
  `scripts/bootstrap.sh milvus`), the one to benchmark against.
Clients reach both with the project's pymilvus at `http://127.0.0.1:<port>`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from .paths import REPO_ROOT, milvus_server_python
from .ports import free_port, wait_port_closed
from .process import ManagedProcess, ProcessError


def _ping(uri: str) -> bool:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=3)
    try:
        client.list_collections()
        return True
    finally:
        client.close()


class _MilvusProcess:
    """A Milvus server process: start, wait until a client can list collections, stop by PID."""

    workdir: Path
    port: int
    _proc: ManagedProcess
    startup_timeout_s = 60.0
    stop_timeout_s = 20.0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def start(self, timeout: float | None = None):
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc.start()
        self._proc.wait_ready(lambda: _ping(self.uri), timeout=timeout or self.startup_timeout_s, interval=0.5)
        return self

    def stop(self) -> int | None:
        code = self._proc.stop(timeout=self.stop_timeout_s)
        wait_port_closed(self.port)
        return code

    def running(self) -> bool:
        return self._proc.running()


@dataclass
class MilvusLiteServer(_MilvusProcess):
    workdir: Path
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        argv = [sys.executable, "-m", "services.localstack.milvus_lite_main", "server",
                "--data-dir", str(self.workdir / "data"), "--host", "127.0.0.1", "--port", str(self.port)]
        self._proc = ManagedProcess("milvus-lite", argv, log_path=self.workdir / "milvus-lite.log",
                                    pid_path=self.workdir / "milvus-lite.pid", cwd=REPO_ROOT)

    def start(self, timeout: float | None = None):
        """Start, then load the collections an earlier run left: milvus-lite restarts with every
        collection released (search/query fail until load()), where a Milvus server reloads them."""
        super().start(timeout)
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.uri, timeout=30)
        try:
            for name in client.list_collections():
                client.load_collection(name)
        except Exception:
            self.stop()
            raise
        finally:
            client.close()
        return self


@dataclass
class EmbeddedMilvus(_MilvusProcess):
    workdir: Path
    port: int = field(default_factory=free_port)
    python: Path = field(default_factory=milvus_server_python)
    startup_timeout_s = 180.0
    stop_timeout_s = 60.0

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        if not Path(self.python).exists():
            raise ProcessError(f"{self.python} not found: run `scripts/bootstrap.sh milvus` "
                               "(embedded Milvus 2.3.5 lives in its own venv)")
        argv = [str(self.python), str(Path(__file__).with_name("milvus_embedded_main.py")),
                str(self.workdir / "data"), str(self.port)]
        self._proc = ManagedProcess("milvus-2.3.5", argv, log_path=self.workdir / "milvus.log",
                                    pid_path=self.workdir / "milvus.pid")
