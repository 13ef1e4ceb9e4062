"""A real single-node Apache Kafka (KRaft) for local runs and tests.

The broker's jars come from Maven Central through ``mvn dependency:copy-dependencies`` on the
``pom.xml`` shipped beside this module, into a cache dir that is reused between runs. The
broker is the genuine ``kafka.Kafka`` main class, formatted with ``StorageTool`` first; no
emulation is involved.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

KAFKA_POM = "pom.xml"


class LocalKafkaError(RuntimeError):
    pass


def kafka_version() -> str:
    pom = resources.files("driftline.kafka").joinpath(KAFKA_POM).read_text()
    start = pom.index("<kafka.version>") + len("<kafka.version>")
    return pom[start : pom.index("</kafka.version>")]


def ensure_jars(cache_dir: Path) -> Path:
    """Resolve the broker's jars into ``cache_dir/<version>/lib`` (once) and return that dir."""
    lib = Path(cache_dir) / kafka_version() / "lib"
    marker = lib / ".complete"
    if marker.exists():
        return lib
    if shutil.which("mvn") is None:
        raise LocalKafkaError("Maven (mvn) is needed to fetch the local Kafka broker's jars")
    lib.mkdir(parents=True, exist_ok=True)
    pom = lib.parent / KAFKA_POM
    pom.write_text(resources.files("driftline.kafka").joinpath(KAFKA_POM).read_text())
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={lib}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise LocalKafkaError(f"mvn failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    marker.write_text("ok\n")
    return lib


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


# -- class-data sharing ----------------------------------------------------------------------
# Most of a JVM's start here is loading and verifying Kafka's classes. The first broker (and
# the first StorageTool run) of a JVM build writes the classes it loaded to an archive in the
# jar cache when it exits; later ones map that archive instead (JDK 13+ dynamic CDS). A JVM
# that cannot use an archive (another build, other jars) ignores it and loads classes as
# before. Archives are written under a temporary name and renamed once complete, so a reader
# never maps a half-written one.
_CDS_LOG_OFF = "-Xlog:cds=off,cds+dynamic=off,cds+map=off"


def _jvm_key() -> str:
    java = shutil.which("java")
    if java is None:
        return "none"
    real = os.path.realpath(java)
    try:
        st = os.stat(real)
    except OSError:
        return "none"
    return hashlib.sha1(f"{real}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def _cds_archive(lib: Path, main_class: str) -> Path:
    return lib.parent / "cds" / f"{main_class.rsplit('.', 1)[-1]}-{_jvm_key()}.jsa"


def _cds_flags(lib: Path, main_class: str) -> tuple[list[str], Path | None]:
    """JVM flags that use the class archive of ``main_class``, or write it at exit when there
    is none yet: (flags, the temporary file being written, to :func:`_cds_publish`)."""
    archive = _cds_archive(lib, main_class)
    if archive.exists():
        return [f"-XX:SharedArchiveFile={archive}", _CDS_LOG_OFF], None
    archive.parent.mkdir(parents=True, exist_ok=True)
    pending = archive.with_name(f"{archive.name}.{uuid.uuid4().hex}.tmp")
    return [f"-XX:ArchiveClassesAtExit={pending}", _CDS_LOG_OFF], pending


def _cds_publish(pending: Path, complete: bool) -> None:
    """Put an archive written at a JVM's exit in place (``complete``: the JVM exited by
    itself, so the file is whole); otherwise drop it."""
    final = pending.with_name(pending.name.split(".jsa.", 1)[0] + ".jsa")
    with contextlib.suppress(OSError):
        if complete and pending.stat().st_size > 0:
            os.replace(pending, final)
    pending.unlink(missing_ok=True)


@dataclass
class LocalKafka:
    """One KRaft broker+controller on loopback, its data under ``data_dir``.

    >>> # kafka = LocalKafka(Path(".driftline/kafka"), port=9092).start(); kafka.stop()
    """

    data_dir: Path
    port: int = 9092
    controller_port: int = 19093  # 9093 is Alertmanager's default port
    cache_dir: Path = Path.home() / ".cache" / "driftline" / "kafka"
    partitions: int = 4
    heap: str = "512m"
    process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    def _write_config(self) -> Path:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={logs}",
                    f"num.partitions={self.partitions}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "log.retention.hours=168",
                    "",
                ]
            )
        )
        return config

    def _format(self, lib: Path, config: Path) -> None:
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cds, pending = _cds_flags(lib, "kafka.tools.StorageTool")
        cmd = [
            "java",
            *cds,
            "-cp",
            f"{lib}/*",
            "kafka.tools.StorageTool",
            "format",
            # one argument: a random id may start with "-", which a separate value would
            # be parsed as an option (a 1-in-64 failure of every broker start)
            f"--cluster-id={cluster_id}",
            "-c",
            str(config),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if pending is not None:
            _cds_publish(pending, complete=result.returncode == 0)
        if result.returncode != 0:
            raise LocalKafkaError(f"StorageTool format failed: {result.stderr[-4000:]}")

    def start(self, timeout: float = 60.0) -> LocalKafka:
        if port_open("127.0.0.1", self.port):
            raise LocalKafkaError(f"port {self.port} is already in use (a broker running?)")
        lib = ensure_jars(self.cache_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self._format(lib, config)
        env = dict(os.environ, KAFKA_HEAP_OPTS=f"-Xmx{self.heap}")
        # The broker outlives this call; its log file handle is inherited by the child.
        with open(self.data_dir / "broker.log", "ab") as log:
            self.process = self._spawn(lib, config, log, env)
        self.pid_file.write_text(str(self.process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalKafkaError(
                    f"broker exited with {self.process.returncode}; see {self.data_dir}/broker.log"
                )
            if port_open("127.0.0.1", self.port) and self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise LocalKafkaError(f"broker did not become ready in {timeout}s")

    @property
    def _cds_pending_file(self) -> Path:
        # where the archive this broker writes at exit is named, for whichever process stops
        # it (`driftline kafka stop` is not the one that started it)
        return self.data_dir / "cds-pending"

    def _spawn(self, lib: Path, config: Path, log, env: dict) -> subprocess.Popen:
        cds, pending = _cds_flags(lib, "kafka.Kafka")
        if pending is not None:
            self._cds_pending_file.write_text(str(pending))
        return subprocess.Popen(
            [
                "java",
                *cds,
                f"-Xmx{self.heap}",
                "-Xms128m",
                "-XX:+UseG1GC",
                "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
                "-cp",
                f"{lib}/*",
                "kafka.Kafka",
                str(config),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def _ready(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            metadata = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
            return bool(metadata.brokers)
        except Exception:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.process.pid if self.process else _read_pid(self.pid_file)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            if self.process is not None:
                self.process.poll()
            time.sleep(0.05)
        killed = _alive(pid)
        if killed:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)
        self.pid_file.unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            pending = Path(self._cds_pending_file.read_text().strip())
            self._cds_pending_file.unlink()
            _cds_publish(pending, complete=not killed)

    def running(self) -> bool:
        pid = _read_pid(self.pid_file)
        return pid is not None and _alive(pid) and port_open("127.0.0.1", self.port)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
