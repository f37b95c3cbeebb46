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
took it. When that replica fails both move to the next one, and on ClickHouse 18.16 they
stay there after it returns (the node keeps counting its past errors): the choice stays the
same for reads and writes, which is what matters. Mutations (deleting a team's usage,
purging void invoices) and partition drops run on one replica of each shard's local table
(its replicas share them through ZooKeeper), and a deletion returns once every replica has
finished it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby

from clickhouse_driver.util.escape import escape_param

from aggregation._server import ServerOptions, ServerStore
from aggregation._sql import (
    LOCAL_SUFFIX,
    SELECT_CLUSTER_NODES,
    SELECT_DATABASE_EXISTS,
    SELECT_MACROS,
    SELECT_VOID_BATCHES,
    USAGE_TABLES,
    check_database,
    cluster_schema_statements,
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
    ) -> None:
        super().__init__(host, port, database, user=user, password=password, options=options,
                         settings=CLUSTER_SETTINGS)
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
        """Check every node first (the same cluster, its macros set and consistent), then
        create the database and tables on each: nothing is created unless every node can
        take it. A replica that cannot be reached is passed over only when another replica
        of its shard answers and every node that answers has the database already (a
        restart during a replica's outage); a new schema needs every node. Idempotent."""
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
        _check_macros(self._where(), macros)
        if unreachable:
            self._check_outage(nodes, list(macros), unreachable)
        return list(macros)

    def _check_outage(self, nodes: list[Node], reachable: list[Node],
                      unreachable: Mapping[Node, str]) -> None:
        """StoreError unless every shard has a replica that answers and each of them holds
        the database already."""
        first = next(iter(unreachable.values()))
        shards_up = {node.shard for node in reachable}
        for node in nodes:
            if node.shard not in shards_up:
                raise StoreError(f"{self._where()}: no replica of shard {node.shard} answers: "
                                 f"{unreachable[node]}")
        for node in reachable:
            if not int(self._node(node)._select(  # noqa: SLF001
                    SELECT_DATABASE_EXISTS, {"database": self.database})[0][0]):
                raise StoreError(f"{self._where()}: {first}; a new schema needs every node")

    def _on_each_shard(self, sql: str) -> None:
        """Run `sql` on the first replica of each shard that takes it."""
        for _, replicas in groupby(self.nodes(), key=lambda node: node.shard):
            failures: list[str] = []
            for node in replicas:
                try:
                    self._node(node)._execute(sql)  # noqa: SLF001
                    break
                except StoreError as exc:
                    failures.append(str(exc))
            else:
                raise StoreError(f"{self._where()}: no replica of a shard took the statement: "
                                 + "; ".join(failures))

    def _mutate(self, table: str, condition: str) -> None:
        """Delete the rows matching `condition` from `table` on every shard, and return once
        every replica has done so."""
        local = f"{table}{LOCAL_SUFFIX}"
        self._on_each_shard(f"ALTER TABLE {self.database}.{local} DELETE WHERE {condition}")
        for node in self.nodes():
            self._node(node)._await_mutations(local)  # noqa: SLF001

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
        for month in months:
            self._on_each_shard(f"ALTER TABLE {self.database}.events{LOCAL_SUFFIX} "
                                f"DROP PARTITION {int(month)}")

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
