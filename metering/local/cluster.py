"""A real replicated ClickHouse cluster on loopback for the tests: Debian's ZooKeeper plus
shards x replicas clickhouse-server processes, each on free ports with data in its own
sub-folder of one root, all stopped by PID.

Every node gets a config.d file naming the whole cluster (`remote_servers`), the ZooKeeper,
its own `macros` (shard "01", replica "s1r1", ...) and the distributed DDL queue, so
ReplicatedMergeTree('/clickhouse/tables/{shard}/t', '{replica}') and Distributed tables work.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from xml.sax.saxutils import escape

from metering.local.services import (
    DEFAULT_START_TIMEOUT,
    LocalClickHouse,
    ManagedProcess,
    ServiceError,
    _Service,
    _wait_until,
    clickhouse_binary,
    free_port,
)

__all__ = [
    "LocalCluster",
    "LocalZooKeeper",
    "node_config",
    "start_cluster",
    "start_node",
    "start_zookeeper",
]

DEFAULT_CLUSTER_TIMEOUT = 90.0
# Short enough that a killed replica's session (and its is_active node) soon expires, long
# enough to survive a loaded 2-core machine. ZooKeeper accepts 2 to 20 ticks.
DEFAULT_SESSION_TIMEOUT_MS = 5000
# How often each replicated table checks its ZooKeeper session (ClickHouse: 60 s). Every table
# of every node wakes this often: a short period speeds recovery after ZooKeeper returns.
DEFAULT_SESSION_CHECK_SECONDS = 10
_TICK_MS = 500
_JAVA_DIR = Path("/usr/share/java")
_INSTALL_HINT = "install Debian's zookeeper (make test does)"


def java_binary() -> str:
    found = shutil.which("java")
    if found is None:
        raise ServiceError(f"java not found, ZooKeeper needs it: {_INSTALL_HINT}")
    return found


def zookeeper_classpath(java_dir: Path = _JAVA_DIR) -> str:
    """zookeeper.jar (its manifest lists its other jars) plus a plain slf4j logger."""
    jar = java_dir / "zookeeper.jar"
    if not jar.is_file():
        raise ServiceError(f"ZooKeeper jars not found ({jar} is missing): {_INSTALL_HINT}")
    jars = [jar] + [path for path in (java_dir / "slf4j-simple.jar",) if path.is_file()]
    return os.pathsep.join(str(path) for path in jars)


def four_letter_word(port: int, word: str, timeout: float = 1.0) -> str:
    """ZooKeeper's answer to a 4-letter command on 127.0.0.1:`port`, "" when unreachable."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(word.encode())
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode(errors="replace")


class LocalZooKeeper(_Service):
    """A standalone ZooKeeper (Debian's jars, run with java); stop() and start() keep the port
    and the data."""

    def __init__(self, *, root: Path, java: str | None = None, classpath: str | None = None):
        self.root = root
        self.port = free_port()
        (root / "data").mkdir(parents=True, exist_ok=True)
        config = [
            f"tickTime={_TICK_MS}",
            f"dataDir={root / 'data'}",
            f"clientPort={self.port}",
            "clientPortAddress=127.0.0.1",
            "maxClientCnxns=0",
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,srvr,stat,mntr",
            "forceSync=no",  # throwaway data: no fsync per write
        ]
        (root / "zoo.cfg").write_text("\n".join(config) + "\n")
        self.proc = ManagedProcess(
            name=f"zookeeper :{self.port}",
            argv=[
                java or java_binary(),
                "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData",
                "-Djava.net.preferIPv4Stack=true",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp", classpath or zookeeper_classpath(),
                "org.apache.zookeeper.server.ZooKeeperServerMain", str(root / "zoo.cfg"),
            ],
            log_path=root / "zookeeper.log",
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ready(self) -> bool:
        """Serving requests: `srvr` names a mode (a starting server says it is not serving)."""
        return "Mode:" in four_letter_word(self.port, "srvr")

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        self.proc.spawn()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        _wait_until(self.ready, self.proc, timeout)

    def __enter__(self) -> LocalZooKeeper:
        return self


def start_zookeeper(root: Path, *, timeout: float = DEFAULT_START_TIMEOUT) -> LocalZooKeeper:
    zookeeper = LocalZooKeeper(root=root)
    zookeeper.start(timeout)
    return zookeeper


def node_config(
    *,
    name: str,
    shards: Sequence[Sequence[int]],
    zookeeper_port: int,
    shard: int = 1,
    replica: int = 1,
    macros: bool = True,
    session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
    session_check_seconds: int = DEFAULT_SESSION_CHECK_SECONDS,
) -> str:
    """The config.d text of one node: cluster `name` of `shards` ([shard][replica] TCP ports
    on 127.0.0.1), the ZooKeeper, and, unless `macros` is false, the macros of the node at
    1-based (`shard`, `replica`): shard "01", replica "s1r1"."""
    remote = "".join(
        "<shard><internal_replication>true</internal_replication>"
        + "".join(
            f"<replica><host>127.0.0.1</host><port>{port}</port></replica>" for port in ports
        )
        + "</shard>"
        for ports in shards
    )
    lines = [
        '<?xml version="1.0"?>',
        "<yandex>",
        f"    <remote_servers><{escape(name)}>{remote}</{escape(name)}></remote_servers>",
        f"    <zookeeper><node><host>127.0.0.1</host><port>{zookeeper_port}</port></node>"
        f"<session_timeout_ms>{session_timeout_ms}</session_timeout_ms></zookeeper>",
        "    <interserver_http_host>127.0.0.1</interserver_http_host>",
        "    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>",
        # Notice a lost ZooKeeper session within a second, not a minute.
        "    <merge_tree><zookeeper_session_expiration_check_period>"
        f"{session_check_seconds}</zookeeper_session_expiration_check_period></merge_tree>",
    ]
    if macros:
        lines.append(
            f"    <macros><shard>{shard:02d}</shard><replica>s{shard}r{replica}</replica></macros>"
        )
    lines.append("</yandex>")
    return "\n".join(lines) + "\n"


def _start_all(nodes: Sequence[LocalClickHouse], timeout: float) -> None:
    """Spawn every node, then wait for each: they start concurrently, within `timeout`."""
    deadline = time.monotonic() + timeout
    for node in nodes:
        node.spawn()
    for node in nodes:
        node.wait_ready(max(deadline - time.monotonic(), 0.1))


def _stop_all(services: Sequence[_Service]) -> None:
    if services:
        with ThreadPoolExecutor(max_workers=len(services)) as pool:
            list(pool.map(lambda service: service.stop(), services))


class LocalCluster:
    """ZooKeeper plus `nodes[shard][replica]` ClickHouse servers; stop() stops them all."""

    def __init__(
        self, *, name: str, zookeeper: LocalZooKeeper, nodes: list[list[LocalClickHouse]]
    ) -> None:
        self.name = name
        self.zookeeper = zookeeper
        self.nodes = nodes

    def node(self, shard: int, replica: int) -> LocalClickHouse:
        """0-based, as `nodes`."""
        return self.nodes[shard][replica]

    @property
    def all_nodes(self) -> list[LocalClickHouse]:
        return [node for replicas in self.nodes for node in replicas]

    @property
    def url(self) -> str:
        return self.url_for(self.nodes[0][0].database)

    def url_for(self, database: str) -> str:
        """The store URL of `database` on this cluster, entered through its first node."""
        first = self.nodes[0][0]
        return f"clickhouse://127.0.0.1:{first.tcp_port}/{database}?cluster={self.name}"

    def pids(self) -> list[int]:
        """The PIDs of every running process of the cluster, ZooKeeper last."""
        services: list[_Service] = [*self.all_nodes, self.zookeeper]
        return [service.pid for service in services if service.proc.alive()]

    def stop(self) -> None:
        """Stop every node (concurrently), then ZooKeeper."""
        _stop_all(self.all_nodes)
        self.zookeeper.stop()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_cluster(
    root: Path,
    *,
    name: str = "metering",
    shards: int = 2,
    replicas: int = 2,
    timeout: float = DEFAULT_CLUSTER_TIMEOUT,
    binary: str | None = None,
    session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
    session_check_seconds: int = DEFAULT_SESSION_CHECK_SECONDS,
) -> LocalCluster:
    """Start ZooKeeper in `root/zookeeper`, then shards x replicas nodes in `root/s1r1`, ..."""
    if shards < 1 or replicas < 1:
        raise ServiceError(f"a cluster needs shards and replicas >= 1, not {shards}x{replicas}")
    binary = binary or clickhouse_binary()
    zookeeper = LocalZooKeeper(root=root / "zookeeper")
    nodes = [
        [
            LocalClickHouse(binary=binary, root=root / f"s{shard}r{replica}")
            for replica in range(1, replicas + 1)
        ]
        for shard in range(1, shards + 1)
    ]
    ports = [[node.tcp_port for node in row] for row in nodes]
    for shard, row in enumerate(nodes, start=1):
        for replica, node in enumerate(row, start=1):
            node.add_config("cluster", node_config(
                name=name, shards=ports, zookeeper_port=zookeeper.port, shard=shard,
                replica=replica, session_timeout_ms=session_timeout_ms,
                session_check_seconds=session_check_seconds,
            ))
    cluster = LocalCluster(name=name, zookeeper=zookeeper, nodes=nodes)
    deadline = time.monotonic() + timeout
    try:
        # ZooKeeper first: an 18.16 node that started without it segfaults on ON CLUSTER DDL.
        zookeeper.start(timeout)
        _start_all(cluster.all_nodes, max(deadline - time.monotonic(), 0.1))
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_node(
    root: Path,
    *,
    zookeeper: LocalZooKeeper,
    name: str = "metering",
    macros: bool = True,
    timeout: float = DEFAULT_START_TIMEOUT,
    binary: str | None = None,
) -> LocalClickHouse:
    """One node forming cluster `name` alone (1 shard x 1 replica) on `zookeeper`; with
    `macros=False` it has no shard/replica macros, which a replicated store must refuse."""
    node = LocalClickHouse(binary=binary or clickhouse_binary(), root=root)
    node.add_config("cluster", node_config(
        name=name, shards=[[node.tcp_port]], zookeeper_port=zookeeper.port, macros=macros,
    ))
    node.start(timeout)
    return node
