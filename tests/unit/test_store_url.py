"""open_store: URL to store, without touching a server (the driver connects lazily), and
the settings that say how a server store waits."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from aggregation import ServerOptions, open_store
from aggregation._chdb import ChdbStore
from aggregation._cluster import ClusterStore
from aggregation._server import ServerStore
from metering.settings import Settings


def _server(url: str) -> ServerStore:
    store = open_store(url)
    assert isinstance(store, ServerStore)
    store.close()
    return store


def test_clickhouse_url_with_everything() -> None:
    store = _server("clickhouse://alice:s%40cret@db.example:9440/usage_1")
    assert (store.host, store.port, store.database, store.user) == (
        "db.example",
        9440,
        "usage_1",
        "alice",
    )


def test_clickhouse_url_defaults() -> None:
    store = _server("clickhouse://127.0.0.1")
    assert (store.host, store.port, store.database, store.user) == (
        "127.0.0.1",
        9000,
        "metering",
        "default",
    )


def test_chdb_url_opens_the_path(tmp_path: Path) -> None:
    store = open_store(f"chdb://{tmp_path / 'data'}")
    try:
        assert isinstance(store, ChdbStore)
        assert store.path == tmp_path / "data"
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "must start with clickhouse:// or chdb:///"),
        ("postgres://h/db", "must start with clickhouse:// or chdb:///"),
        ("/var/lib/metering", "must start with clickhouse:// or chdb:///"),
        ("clickhouse:///db", "has no host"),
        ("clickhouse://h:port/db", "invalid port"),
        ("clickhouse://h:99999/db", "invalid port"),
        ("clickhouse://h/db;drop", "invalid database name"),
        ("clickhouse://h/a/b", "invalid database name"),
        ("clickhouse://h/1db", "invalid database name"),
        ("clickhouse://h/db?secure=1", "the query takes cluster=NAME and alt_hosts"),
        ("clickhouse://h/db?cluster=a&cluster=b", "once each (got cluster, cluster)"),
        ("clickhouse://h/db?alt_hosts=h2", "invalid alt_hosts entry 'h2'"),
        ("clickhouse://h/db?alt_hosts=h2:9000,:9001", "invalid alt_hosts entry ':9001'"),
        ("clickhouse://h/db?alt_hosts=h2:99999", "invalid alt_hosts entry"),
        ("clickhouse://h/db?cluster=", "invalid cluster name ''"),
        ("clickhouse://h/db?cluster=a-b", "invalid cluster name 'a-b'"),
        ("clickhouse://h/db?cluster", "cannot read its query"),
        ("clickhouse://h/db#frag", "must not have a query or fragment"),
        ("chdb:///tmp/x?cluster=a", "must not have a query or fragment"),
        ("chdb://relative/path", "absolute path"),
        ("chdb:///", "absolute path"),
        ("chdb:", "absolute path"),
        ("chdb:///tmp/x%3Fverbose", "must not contain '?'"),
    ],
)
def test_bad_urls_are_value_errors(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="^[^\n]*$") as info:
        open_store(url)
    assert problem in str(info.value)


def test_a_cluster_url_opens_the_cluster_store() -> None:
    store = open_store("clickhouse://u:p@h:9001/db?cluster=metering")
    try:
        assert isinstance(store, ClusterStore)
        assert (store.host, store.port, store.database, store.cluster, store.user) == (
            "h", 9001, "db", "metering", "u")
    finally:
        store.close()


def test_alt_hosts_reach_the_driver() -> None:
    store = open_store("clickhouse://h:9001/db?cluster=c&alt_hosts=h2:9002,h3:9003")
    try:
        assert isinstance(store, ClusterStore)
        assert store._pool._options["alt_hosts"] == "h2:9002,h3:9003"  # noqa: SLF001
    finally:
        store.close()


def test_password_is_not_echoed_in_errors() -> None:
    with pytest.raises(ValueError, match=r"bob:\*\*\*@") as info:
        open_store("clickhouse://bob:hunter2@h/bad-name")
    assert "hunter2" not in str(info.value)


def test_settings_give_the_server_store_its_timeouts_and_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ("STORE_CONNECT_TIMEOUT_SECONDS", "STORE_TIMEOUT_SECONDS", "STORE_POOL_SIZE",
             "API_STORE_TIMEOUT_SECONDS")
    for name in names:
        monkeypatch.delenv(f"METERING_{name}", raising=False)
    assert Settings().store_options == ServerOptions(connect_timeout=3.0, timeout=60.0,
                                                     pool_size=4)
    assert Settings().api_store_timeout_seconds == 5.0
    monkeypatch.setenv("METERING_STORE_CONNECT_TIMEOUT_SECONDS", "1.5")
    monkeypatch.setenv("METERING_STORE_TIMEOUT_SECONDS", "120")
    monkeypatch.setenv("METERING_STORE_POOL_SIZE", "8")
    monkeypatch.setenv("METERING_API_STORE_TIMEOUT_SECONDS", "2")
    settings = Settings()
    assert settings.store_options == ServerOptions(connect_timeout=1.5, timeout=120.0,
                                                   pool_size=8)
    assert settings.api_store_timeout_seconds == 2.0


@pytest.mark.parametrize(("name", "value"), [
    ("store_connect_timeout_seconds", 0), ("store_timeout_seconds", -1),
    ("api_store_timeout_seconds", 0), ("store_pool_size", 0),
])
def test_settings_refuse_a_timeout_or_pool_that_cannot_work(name: str, value: float) -> None:
    with pytest.raises(ValidationError, match=name):
        Settings.model_validate({name: value})
