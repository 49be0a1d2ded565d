"""A real single-node Apache Kafka broker (KRaft: broker + controller in one JVM).

Jars come from Maven Central via infra/kafka/pom.xml (scripts/bootstrap.sh). Storage is
formatted with `kafka.tools.StorageTool format --standalone`; the broker is `kafka.Kafka`.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .paths import kafka_libs
from .ports import free_port, port_open, wait_port_closed
from .process import ManagedProcess, ProcessError

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {logdir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = {level}
logger.state.name = state.change.logger
logger.state.level = warn
"""


def _cluster_id() -> str:
    """A Kafka cluster id (base64url of 16 random bytes); never starting with '-', which the
    storage tool's argument parser would read as an option."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


@dataclass
class KafkaBroker:
    workdir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    heap: str = "512m"
    log_level: str = "INFO"
    libs: Path = field(default_factory=kafka_libs)
    # fsync every append: tests kill -9 the broker and expect nothing acknowledged to be lost. A
    # production cluster gets durability from replication and leaves flushing to the OS, as the
    # benchmarks do (False), where a flush per produce request is broker CPU the services do not pay.
    fsync_each_message: bool = True

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self._proc = ManagedProcess(
            "kafka",
            self._java(["kafka.Kafka", str(self.properties_path)]),
            log_path=self.workdir / "logs" / "stdout.log",
            pid_path=self.workdir / "kafka.pid",
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def properties_path(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def _java(self, args: list[str]) -> list[str]:
        java = shutil.which("java") or "java"
        return [
            java, f"-Xms128m", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            "-cp", f"{self.libs}/*", *args,
        ]

    def _write_config(self) -> None:
        data = self.workdir / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "3",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        if self.fsync_each_message:
            props["log.flush.interval.messages"] = "1"
        self.properties_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.workdir / "log4j2.properties").write_text(
            LOG4J2.format(logdir=self.workdir / "logs", level=self.log_level))

    def format_storage(self) -> None:
        if not any(self.libs.glob("kafka_2.13-*.jar")):
            raise ProcessError(f"Kafka jars not found in {self.libs}; run scripts/bootstrap.sh")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self._write_config()
        if (self.workdir / "data" / "meta.properties").exists():
            return  # already formatted: keep the data (restart)
        result = subprocess.run(
            self._java(["kafka.tools.StorageTool", "format", "--standalone",
                        "-t", _cluster_id(), "-c", str(self.properties_path)]),
            capture_output=True, text=True, timeout=120,
        )
        if result.returncode != 0:
            raise ProcessError(f"kafka storage format failed:\n{result.stdout}\n{result.stderr}")

    def start(self, timeout: float = 90.0) -> KafkaBroker:
        self.format_storage()
        self._proc.start()
        self._proc.wait_ready(self.ready, timeout=timeout, interval=0.5)
        return self

    def ready(self) -> bool:
        from services.common.kafka_client import list_topics
        from services.common.settings import KafkaConfig

        if not port_open(self.port):
            return False  # not listening yet: skip the client (and its connection-refused noise)
        try:
            list_topics(KafkaConfig(bootstrap_servers=self.bootstrap_servers, client_id="adrec-readiness"), 3.0)
            return True
        except Exception:  # noqa: BLE001 - listening but not serving metadata yet
            return False

    def stop(self) -> int | None:
        code = self._proc.stop(timeout=30)
        wait_port_closed(self.port)
        return code

    def kill(self) -> None:
        self._proc.kill()
        wait_port_closed(self.port)

    def running(self) -> bool:
        return self._proc.running()

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
