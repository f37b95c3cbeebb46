"""The store on a ClickHouse cluster: shards of replicas, replicated through ZooKeeper.

Every node holds each table twice over: a replicated local table `<name>_local`
(ReplicatedReplacingMergeTree under `/clickhouse/tables/{shard}/<db>/<name>`, the node's
`shard` and `replica` macros filled in) and a Distributed table `<name>` over the cluster's
local tables, sharded by `cityHash64(team)`. The store reads and writes only the Distributed
tables, with the statements of a single server, so a team's rows all live on one shard and
every per-team read is exact.

Writes go through the Distributed table, synchronously (`insert_distributed_sync`): the
insert returns once every shard it touches has its rows on one replica, which copies them to
the others through ZooKeeper. So the caller commits only what a shard holds (nothing waits in
a local spool that a crash would lose), and ClickHouse alone decides which shard a team lives
on (no hash of ours to keep equal to `cityHash64`). A shard down fails the write, and the
caller retries it; rows written twice collapse as on a single server.

Reads and writes prefer the first replica of each shard that answers (`in_order`; the node
connected to serves its own shard itself), so a write is read back from the replica that
took it. When that replica fails both move to the next one until the node's count of its
errors decays. Another process entering through another node may choose another replica of
a shard for a while, so the rows that processes coordinate by (the close lease, void
batches) are written to every replica of their shard before the insert returns
(`insert_quorum`): whichever replica answers, it has them. Mutations (deleting a team's usage,
purging void invoices) and partition drops run on one replica of each shard's local table
(its replicas share them through ZooKeeper), and a deletion returns once every replica has
finished it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby

from clickhouse_driver.util.escape import escape_param

from aggregation._schema import Param
from aggregation._server import ServerOptions, ServerStore
from aggregation._sql import (
    LOCAL_SUFFIX,
    RAW_TABLES,
    SELECT_CLUSTER_NODES,
    SELECT_MACROS,
    SELECT_TABLE_NAMES,
    SELECT_VOID_BATCHES,
    SELECT_ZOOKEEPER_ROOT,
    USAGE_TABLES,
    check_database,
    cluster_schema_statements,
    cluster_table_names,
)
from aggregation.store import StoreError

CLUSTER_SETTINGS: Mapping[str, str | int] = {
    # an insert returns once the shards hold its rows, not once a local spool does
    "insert_distributed_sync": 1,
    # the first replica of a shard that answers takes both reads and writes
    "load_balancing": "in_order",
    # a subquery on a Distributed table inside a query on one runs once, on this node
    "distributed_product_mode": "global",
}
_MACROS = ("shard", "replica")


@dataclass(frozen=True, slots=True, order=True)
class Node:
    """One replica of one shard, as `system.clusters` lists it."""

    shard: int
    replica: int
    host: str
    port: int

    def __str__(self) -> str:
        return f"shard {self.shard} replica {self.replica} ({self.host}:{self.port})"


def _nodes(rows: Sequence[Sequence[object]]) -> list[Node]:
    return [Node(int(str(shard)), int(str(replica)), str(host), int(str(port)))
            for shard, replica, host, port in rows]


class ClusterStore(ServerStore):
    """A ServerStore connected to one node of `cluster`, reading and writing the cluster's
    Distributed tables; the nodes it needs for DDL, mutations and partition drops come from
    `system.clusters` of that node."""

    def __init__(
        self,
        host: str,
        port: int,
        database: str,
        cluster: str,
        *,
        user: str | None = None,
        password: str | None = None,
        options: ServerOptions | None = None,
        alt_hosts: str | None = None,
    ) -> None:
        super().__init__(host, port, database, user=user, password=password, options=options,
                         settings=CLUSTER_SETTINGS, alt_hosts=alt_hosts)
        self.cluster = check_cluster(cluster)
        self._node_stores: dict[Node, ServerStore] = {}
        self._node_guard = threading.Lock()

    def _where(self) -> str:
        return f"cluster {self.cluster} (via {self.host}:{self.port})"

    def nodes(self) -> list[Node]:
        """The cluster's nodes by shard, then replica; StoreError if the node connected to
        has no such cluster in its config."""
        nodes = _nodes(self._select(SELECT_CLUSTER_NODES, {"cluster": self.cluster}))
        if not nodes:
            raise StoreError(f"{self._where()}: no cluster named {self.cluster!r} in "
                             "system.clusters (remote_servers of the server's config)")
        return nodes

    def _node(self, node: Node) -> ServerStore:
        """A plain store on `node` alone (its local tables), opened once."""
        with self._node_guard:
            store = self._node_stores.get(node)
            if store is None:
                store = ServerStore(node.host, node.port, self.database, user=self.user,
                                    password=self._password, options=self.options)
                self._node_stores[node] = store
            return store.with_timeout(self.timeout)

    def ensure_schema(self) -> None:
        """Check every node first (the same cluster, its macros set and consistent, a
        working ZooKeeper), then create the database and tables on each: nothing is created
        unless every node can take it. A replica that cannot be reached is passed over only
        when another replica of its shard answers and every node that answers has every
        table already (a restart during a replica's outage); a new schema needs every node.
        Idempotent."""
        nodes = self.nodes()
        reachable = self._check_nodes(nodes)
        statements = cluster_schema_statements(self.database, self.cluster)

        def create(node: Node) -> None:
            store = self._node(node)
            for statement in statements:
                store._execute(statement)  # noqa: SLF001 - the same class family

        # Node by node, the nodes at once: a replicated table waits on ZooKeeper.
        with ThreadPoolExecutor(max_workers=len(reachable)) as pool:
            list(pool.map(create, reachable))

    def _check_nodes(self, nodes: list[Node]) -> list[Node]:
        """The nodes to create the schema on; StoreError if that is not every node and the
        rules above do not allow it, or if a node disagrees about the cluster or macros."""
        macros: dict[Node, dict[str, str]] = {}
        unreachable: dict[Node, str] = {}
        for node in nodes:
            store = self._node(node)
            try:
                seen = _nodes(store._select(SELECT_CLUSTER_NODES,  # noqa: SLF001
                                            {"cluster": self.cluster}))
                rows = store._select(SELECT_MACROS, {})  # noqa: SLF001
            except StoreError as exc:
                unreachable[node] = f"{node} cannot be reached: {exc}"
                continue
            if seen != nodes:
                raise StoreError(f"{self._where()}: {node} lists other nodes for the cluster "
                                 f"({len(seen)} against {len(nodes)}): give every node the same "
                                 "remote_servers")
            macros[node] = {str(name): str(value) for name, value in rows}
            missing = [name for name in _MACROS if name not in macros[node]]
            if missing:
                raise StoreError(f"{self._where()}: {node} has no macro {' or '.join(missing)} "
                                 "(<macros> in its config)")
            try:
                store._select(SELECT_ZOOKEEPER_ROOT, {})  # noqa: SLF001
            except StoreError as exc:
                raise StoreError(f"{self._where()}: {node} cannot use ZooKeeper (<zookeeper> in "
                                 f"its config, and ZooKeeper up): {exc}") from None
        _check_macros(self._where(), macros)
        if unreachable:
            self._check_outage(nodes, list(macros), unreachable)
        return list(macros)

    def _check_outage(self, nodes: list[Node], reachable: list[Node],
                      unreachable: Mapping[Node, str]) -> None:
        """StoreError unless every shard has a replica that answers and each node that
        answers holds every table already."""
        first = next(iter(unreachable.values()))
        shards_up = {node.shard for node in reachable}
        for node in nodes:
            if node.shard not in shards_up:
                raise StoreError(f"{self._where()}: no replica of shard {node.shard} answers: "
                                 f"{unreachable[node]}")
        wanted = set(cluster_table_names())
        for node in reachable:
            rows = self._node(node)._select(  # noqa: SLF001
                SELECT_TABLE_NAMES, {"database": self.database})
            if not wanted <= {str(name) for (name,) in rows}:
                raise StoreError(f"{self._where()}: {first}; a new schema needs every node")

    def _write_coordination(self, sql: str, params: Mapping[str, Param]) -> None:
        """A lease or void batch row is written to every replica of its shard before the
        insert returns (`insert_quorum`), so that whichever replica a process reads sees it:
        two closes entering through different nodes never both hold the lease. While a
        replica of that shard is down, the write fails and the close waits."""
        replicas = min(Counter(node.shard for node in self.nodes()).values())
        quorum = {"insert_quorum": replicas} if replicas > 1 else {}
        self._execute_with(sql, params, quorum)

    def _on_each_shard(self, sql: str, settings: Mapping[str, str | int] | None = None) -> None:
        """Run `sql` on the first replica of each shard that takes it."""
        for _, replicas in groupby(self.nodes(), key=lambda node: node.shard):
            failures: list[str] = []
            for node in replicas:
                try:
                    self._node(node)._execute_with(sql, {}, settings)  # noqa: SLF001
                    break
                except StoreError as exc:
                    failures.append(str(exc))
            else:
                raise StoreError(f"{self._where()}: no replica of a shard took the statement: "
                                 + "; ".join(failures))

    def _mutate(self, table: str, condition: str) -> None:
        """Delete the rows matching `condition` from `table` on every shard, and return once
        every replica that answers has done so, at least one of each shard (a replica that
        is down replays the mutation from ZooKeeper when it returns)."""
        local = f"{table}{LOCAL_SUFFIX}"
        self._on_each_shard(f"ALTER TABLE {self.database}.{local} DELETE WHERE {condition}")
        for shard, replicas in groupby(self.nodes(), key=lambda node: node.shard):
            failures: list[str] = []
            nodes = list(replicas)
            for node in nodes:
                try:
                    self._node(node)._await_mutations(local)  # noqa: SLF001
                except StoreError as exc:
                    failures.append(f"{node}: {exc}")
            if len(failures) == len(nodes):
                raise StoreError(f"{self._where()}: no replica of shard {shard} finished the "
                                 "deletion: " + "; ".join(failures))

    def delete_usage(self, team: str) -> int:
        counts = [int(self._select(sql, {"team": team})[0][0])
                  for sql in self._sql.count_team_rows]
        for count, table in zip(counts, USAGE_TABLES, strict=True):
            if count:
                self._mutate(table, f"team = {_literal(team)}")
        return sum(counts)

    def purge_void(self) -> None:
        if not int(self._select(self._sql.count_void_rows, {})[0][0]):
            return
        rows = self._select(SELECT_VOID_BATCHES.format(db=self.database), {})
        batches = ", ".join(_literal(str(batch)) for (batch,) in rows)
        self._mutate("invoices", f"batch IN ({batches})")

    def drop_event_months(self, months: Sequence[int]) -> None:
        # Waits for every active replica, so that no read sees the month afterwards.
        for month in months:
            for table in RAW_TABLES:
                self._on_each_shard(f"ALTER TABLE {self.database}.{table}{LOCAL_SUFFIX} "
                                    f"DROP PARTITION {int(month)}",
                                    {"replication_alter_partitions_sync": 2})

    def close(self) -> None:
        with self._node_guard:
            stores, self._node_stores = list(self._node_stores.values()), {}
        for store in stores:
            store.close()
        super().close()


def _literal(value: str) -> str:
    return str(escape_param(value, None))


def _check_macros(where: str, macros: Mapping[Node, Mapping[str, str]]) -> None:
    """Replicas of a shard share its `shard` macro, shards have distinct ones, and replicas
    of a shard have distinct `replica` macros: else two shards would share one ZooKeeper
    path, or two replicas one name."""
    shard_of: dict[str, int] = {}
    for node, values in macros.items():
        shard, replica = values["shard"], values["replica"]
        if shard_of.setdefault(shard, node.shard) != node.shard:
            raise StoreError(f"{where}: {node} has the shard macro {shard!r} of shard "
                             f"{shard_of[shard]}: give each shard its own")
        for other, other_values in macros.items():
            if other.shard == node.shard and other != node:
                if other_values["shard"] != shard:
                    raise StoreError(f"{where}: {node} and {other} are one shard but have the "
                                     f"shard macros {shard!r} and {other_values['shard']!r}")
                if other_values["replica"] == replica:
                    raise StoreError(f"{where}: {node} and {other} share the replica macro "
                                     f"{replica!r}: give each replica of a shard its own")


def check_cluster(name: str) -> str:
    """Return `name` if it can be spliced into SQL as a cluster name."""
    try:
        return check_database(name)
    except ValueError:
        raise ValueError(f"invalid cluster name {name!r}: use letters, digits and _") from None
