"""Starts the local platform (infrastructure, then services), reports where each listens,
and stops everything, in reverse order, on Ctrl-C / SIGTERM or when a component dies."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.events import Topics
from services.common.kafka_client import ensure_topics
from services.common.settings import KafkaConfig

from .kafka_broker import KafkaBroker
from .milvus_server import MilvusLiteServer
from .ports import free_port
from .process import ManagedProcess, kill_from_pidfile
from .redis_server import RedisServer
from .registry import SERVICES, ServiceSpec
from .settings import LocalStackSettings

log = logging.getLogger(__name__)


@dataclass
class Running:
    name: str
    address: str
    pid: int | None
    stop: Callable[[], Any]
    alive: Callable[[], bool]


def _port(p: int) -> int:
    return p or free_port()


class Supervisor:
    def __init__(self, settings: LocalStackSettings, services: Sequence[ServiceSpec] | None = None,
                 echo: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.services = list(SERVICES if services is None else services)
        self.echo = echo
        self.running: list[Running] = []
        self.endpoints: dict[str, str] = {}
        self._stop = threading.Event()

    @property
    def state_file(self) -> Path:
        return self.settings.run_dir / "state.json"

    # -- start ---------------------------------------------------------------------------

    def up(self) -> dict[str, str]:
        """Start everything; on an error, Ctrl-C or SIGTERM meanwhile, stop what had started and raise
        (SIGTERM as KeyboardInterrupt: the children run in their own sessions and would outlive us)."""
        s = self.settings
        s.run_dir.mkdir(parents=True, exist_ok=True)
        stale = stop_stale(s.run_dir)  # before --fresh wipes their pid files with the data
        if stale:
            self.echo(f"stopped {stale} process(es) left by an earlier run")
        if s.fresh:
            shutil.rmtree(s.run_dir)
            s.run_dir.mkdir(parents=True)
        main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGTERM, _interrupt) if main else None
        try:
            self._start_infra()
            for spec in self.services if s.services else []:
                self._start_service(spec)
        except BaseException:
            self.down()
            # a child interrupted between its start and its registration here (e.g. SIGTERM right after
            # the broker's Popen) is not in self.running: its pid file under run_dir still names it
            stop_stale(s.run_dir)
            raise
        finally:
            if main:
                signal.signal(signal.SIGTERM, old)
        self._write_state()
        return dict(self.endpoints)

    def _step(self, name: str) -> float:
        self.echo(f"  starting {name} ...")
        return time.monotonic()

    def _start_infra(self) -> None:
        s = self.settings
        t = self._step("kafka (KRaft broker+controller)")
        broker = KafkaBroker(s.run_dir / "kafka", port=_port(s.kafka_port),
                             controller_port=_port(s.kafka_controller_port))
        broker.start()
        self.running.append(Running("kafka", broker.bootstrap_servers, broker.pid, broker.stop, broker.running))
        self.endpoints["ADREC_KAFKA__BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        ensure_topics(KafkaConfig(bootstrap_servers=broker.bootstrap_servers), Topics.all())
        self.echo(f"  kafka ready in {time.monotonic() - t:.1f}s, topics: {', '.join(Topics.all())}")

        t = self._step("milvus-lite server")
        milvus = MilvusLiteServer(s.run_dir / "milvus", port=_port(s.milvus_port))
        milvus.start()
        self.running.append(Running("milvus", milvus.uri, milvus.pid, milvus.stop, milvus.running))
        self.endpoints["ADREC_MILVUS__URI"] = milvus.uri
        self.echo(f"  milvus ready in {time.monotonic() - t:.1f}s")

        if s.redis or (s.services and self.services):  # the A/B aggregator keeps its state in Redis
            t = self._step("redis-server")
            redis = RedisServer(s.run_dir / "redis", port=_port(s.redis_port), persist=True)
            redis.start()
            self.running.append(Running("redis", f"127.0.0.1:{redis.port}", redis.pid, redis.stop, redis.running))
            self.endpoints["ADREC_REDIS__HOST"] = "127.0.0.1"
            self.endpoints["ADREC_REDIS__PORT"] = str(redis.port)
            self.echo(f"  redis ready in {time.monotonic() - t:.1f}s")
        self.endpoints["ADREC_FEAST__SQLITE_PATH"] = str(s.run_dir / "feast" / "online_store.db")
        self.endpoints["ADREC_FEAST__REGISTRY_PATH"] = str(s.run_dir / "feast" / "registry.db")

    def _start_service(self, spec: ServiceSpec) -> None:
        reason = spec.skip_reason() if spec.skip_reason else None
        if reason:
            self.echo(f"  skipping {spec.name}: {reason}")
            return
        t = self._step(spec.name)
        env = {**os.environ, **self.endpoints, **spec.env, **(spec.env_fn() if spec.env_fn else {}),
               "HF_HUB_OFFLINE": "1", "ADREC_LOG_JSON": "true"}
        # importing feast sets this to a temp dir of this process, removed when it exits: a child
        # that inherits it crashes on its next new metric once the supervisor is gone
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.pop("PROMETHEUS_MULTIPROCESS_DIR", None)  # feast reads this one first and would reuse it
        proc = ManagedProcess(spec.name, spec.argv(self.endpoints), env=env,
                              log_path=self.settings.run_dir / "logs" / f"{spec.name}.log",
                              pid_path=self.settings.run_dir / f"{spec.name}.pid")
        proc.start()
        if spec.health_path:
            url = spec.url + spec.health_path
            try:
                proc.wait_ready(lambda: urllib.request.urlopen(url, timeout=2).status == 200,
                                timeout=spec.startup_timeout_s, interval=0.5)
            except BaseException:  # Ctrl-C while it starts: it is not in self.running yet
                proc.stop()
                raise
        self.running.append(Running(spec.name, spec.url, proc.pid, proc.stop, proc.running))
        self.echo(f"  {spec.name} ready in {time.monotonic() - t:.1f}s")

    def _write_state(self) -> None:
        state = {"started_at": time.time(), "components": [
            {"name": r.name, "address": r.address, "pid": r.pid} for r in self.running]}
        self.state_file.write_text(json.dumps(state, indent=2))

    # -- run and stop --------------------------------------------------------------------

    def table(self) -> str:
        width = max(len(r.name) for r in self.running) if self.running else 4
        return "\n".join(f"  {r.name:<{width}}  {r.address:<28} pid {r.pid}" for r in self.running)

    def wait(self, poll_s: float = 1.0) -> str:
        """Block until a stop signal or a dead component; returns why it stopped."""
        reason = "signal"
        handler = lambda signum, _frame: self._stop.set()  # noqa: E731
        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not self._stop.wait(poll_s):
                dead = [r.name for r in self.running if not r.alive()]
                if dead:
                    reason = f"component exited: {', '.join(dead)}"
                    break
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
        return reason

    def request_stop(self) -> None:
        self._stop.set()

    def down(self) -> None:
        """Stop everything in reverse start order; further Ctrl-C presses cannot cut it short."""
        old = {sig: signal.signal(sig, lambda *_: self.echo("  still stopping, please wait ..."))
               for sig in (signal.SIGINT, signal.SIGTERM)} if threading.current_thread() is threading.main_thread() else {}
        try:
            self._stop_all()
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
        self.state_file.unlink(missing_ok=True)

    def _stop_all(self) -> None:
        while self.running:
            r = self.running.pop()
            try:
                r.stop()
                self.echo(f"  stopped {r.name}")
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                self.echo(f"  failed to stop {r.name}: {exc}")


def _interrupt(signum: int, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def stop_stale(run_dir: Path) -> int:
    """Stop processes recorded in pid files under run_dir (left by a crashed supervisor)."""
    return sum(kill_from_pidfile(p) for p in run_dir.rglob("*.pid"))
