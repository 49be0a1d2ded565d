"""A real redis-server (Debian package) on a free loopback port, stopped by PID."""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

from .ports import free_port
from .process import ManagedProcess, ProcessError


@dataclass
class RedisServer:
    workdir: Path
    port: int = field(default_factory=free_port)
    persist: bool = False  # append-only file, for state that must survive a restart

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        exe = shutil.which("redis-server")
        if exe is None:
            raise ProcessError("redis-server not found; run scripts/bootstrap.sh (apt-get install redis-server)")
        argv = [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.workdir),
                "--save", "", "--appendonly", "yes" if self.persist else "no",
                "--protected-mode", "yes", "--daemonize", "no", "--logfile", ""]
        self._proc = ManagedProcess("redis", argv, log_path=self.workdir / "redis.log",
                                    pid_path=self.workdir / "redis.pid")

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def start(self, timeout: float = 20.0) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc.start()
        self._proc.wait_ready(self.ping, timeout=timeout, interval=0.1)
        return self

    def ping(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")

    def stop(self) -> int | None:
        return self._proc.stop(timeout=10)

    def running(self) -> bool:
        return self._proc.running()
