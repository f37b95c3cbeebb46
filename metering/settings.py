"""The one Settings object: built once at start-up from METERING_* variables and flags."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_serializer, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from aggregation import (
    DEFAULT_STORE_CONNECT_TIMEOUT_SECONDS,
    DEFAULT_STORE_POOL_SIZE,
    DEFAULT_STORE_TIMEOUT_SECONDS,
    ServerOptions,
    redact_url,
)
from invoicing import DEFAULT_BATCH_TEAMS

DEFAULT_BROKER_URL = "kafka://127.0.0.1:9092"
DEFAULT_STORE_URL = "chdb:///var/lib/metering/chdb"
DEFAULT_EVENTS_TOPIC = "activity-events"
DEFAULT_REJECTED_TOPIC = "activity-events-rejected"
DEFAULT_CHARGES_TOPIC = "billing-charges"
DEFAULT_CHANGES_TOPIC = "billing-changes"
DEFAULT_CHANGES_REJECTED_TOPIC = "billing-changes-rejected"
DEFAULT_PAYMENTS_TOPIC = "billing-payments"
DEFAULT_PAYMENTS_REJECTED_TOPIC = "billing-payments-rejected"
DEFAULT_NOTICES_TOPIC = "billing-notices"
DEFAULT_ALERTS_TOPIC = "billing-alerts"
# How often the worker checks the catalog's usage alerts (metering/alerts.py).
DEFAULT_ALERTS_INTERVAL_SECONDS = 10.0
DEFAULT_API_PORT = 8080
DEFAULT_PARTITIONS = 8
DEFAULT_GRACE = timedelta(hours=1)
# A batch ends at this many events or bytes of message values, whichever comes first, so
# memory in flight is bounded whatever the producers' batch sizes.
DEFAULT_BATCH_EVENTS = 20_000
DEFAULT_BATCH_BYTES = 8 * 1024 * 1024
DEFAULT_BATCH_LINGER_SECONDS = 0.5
DEFAULT_CLOSE_LEASE_SECONDS = 30
DEFAULT_CLOSE_LEASE_WAIT_SECONDS = 600.0
DEFAULT_SESSION_TIMEOUT_SECONDS = 10.0
# The read API's statements wait this long on a ClickHouse server, so a request on a hung
# store gets its 503 within twice the connect timeout (a free connection, then the ping or
# the handshake) plus the larger of the connect timeout and this: 11 s with the defaults.
DEFAULT_API_STORE_TIMEOUT_SECONDS = 5.0
# POST /v1/events: the largest body taken (413 beyond, before parsing), and how long a request
# waits for the broker to acknowledge its events (503 after).
DEFAULT_INGEST_MAX_BYTES = 1024 * 1024
DEFAULT_INGEST_TIMEOUT_SECONDS = 10.0

# Recent (source, id) pairs the worker remembers to drop retries without a store read.
DEFAULT_DEDUPE_WINDOW_EVENTS = 1_000_000


_URL_FIELDS = frozenset({"broker_url", "store_url"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="METERING_", extra="ignore", frozen=True)

    broker_url: str = DEFAULT_BROKER_URL
    store_url: str = DEFAULT_STORE_URL
    catalog: Path | None = None
    app_id: str = "metering"
    events_topic: str = DEFAULT_EVENTS_TOPIC
    rejected_topic: str = DEFAULT_REJECTED_TOPIC
    charges_topic: str = DEFAULT_CHARGES_TOPIC
    partitions: int = Field(default=DEFAULT_PARTITIONS, ge=1)
    grace: timedelta = DEFAULT_GRACE
    batch_events: int = Field(default=DEFAULT_BATCH_EVENTS, ge=1)
    batch_bytes: int = Field(default=DEFAULT_BATCH_BYTES, ge=1)
    batch_linger_seconds: float = Field(default=DEFAULT_BATCH_LINGER_SECONDS, gt=0)
    dedupe_window: int = Field(default=DEFAULT_DEDUPE_WINDOW_EVENTS, ge=0)
    session_timeout_seconds: float = Field(default=DEFAULT_SESSION_TIMEOUT_SECONDS, gt=0)
    log_level: str = "warning"
    # Faust keeps local state (none of ours: no tables) under here, not in the working dir
    work_dir: Path = Path(tempfile.gettempdir()) / "metering-worker"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    changes_topic: str = DEFAULT_CHANGES_TOPIC
    changes_rejected_topic: str = DEFAULT_CHANGES_REJECTED_TOPIC
    payments_topic: str = DEFAULT_PAYMENTS_TOPIC
    payments_rejected_topic: str = DEFAULT_PAYMENTS_REJECTED_TOPIC
    notices_topic: str = DEFAULT_NOTICES_TOPIC
    # usage alerts: each crossing of a catalog threshold, published once on alerts_topic; the
    # worker checks every alerts_interval_seconds, under a lease of close_lease_seconds
    alerts_topic: str = DEFAULT_ALERTS_TOPIC
    alerts_interval_seconds: float = Field(default=DEFAULT_ALERTS_INTERVAL_SECONDS, gt=0)
    # `metering serve`: the read API and its /metrics
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=DEFAULT_API_PORT, ge=0, le=65535)
    # Bearer tokens the API accepts: a comma-separated list in METERING_API_TOKENS
    api_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    # POST /v1/events (metering/api/ingest.py): body limit and broker acknowledgement wait
    ingest_max_bytes: int = Field(default=DEFAULT_INGEST_MAX_BYTES, ge=1)
    ingest_timeout_seconds: float = Field(default=DEFAULT_INGEST_TIMEOUT_SECONDS, gt=0)
    # serve runs the close every this many seconds (0: never; cron runs `metering close`)
    close_interval_seconds: float = Field(default=0, ge=0)
    # the close: teams per batch (a few set queries and one write each), how long its lease
    # lasts unrenewed (a killed close blocks the next for that long), how long a command-line
    # close waits for another to finish
    close_batch_teams: int = Field(default=DEFAULT_BATCH_TEAMS, ge=1)
    close_lease_seconds: int = Field(default=DEFAULT_CLOSE_LEASE_SECONDS, ge=3)
    close_lease_wait_seconds: float = Field(default=DEFAULT_CLOSE_LEASE_WAIT_SECONDS, ge=0)
    # Opt-in per-team MAU gauge for the N largest teams (0: off); bounded label values
    top_teams_metric: int = Field(default=0, ge=0, le=1000)
    log_format: Literal["json", "text"] = "json"
    # A ClickHouse server store (chdb waits on no server): connecting (TCP connect, handshake,
    # the ping before a pooled connection is reused, the wait for a free one) takes at most
    # store_connect_timeout_seconds in every program, so a hung server is found at the first
    # call; once connected, a statement of the worker or the close waits up to
    # store_timeout_seconds for the server to take or send data (long: a large insert or set
    # query may go quiet for a while), one of the read API up to api_store_timeout_seconds.
    # Each process keeps at most store_pool_size connections.
    store_connect_timeout_seconds: float = Field(
        default=DEFAULT_STORE_CONNECT_TIMEOUT_SECONDS, gt=0)
    store_timeout_seconds: float = Field(default=DEFAULT_STORE_TIMEOUT_SECONDS, gt=0)
    api_store_timeout_seconds: float = Field(default=DEFAULT_API_STORE_TIMEOUT_SECONDS, gt=0)
    store_pool_size: int = Field(default=DEFAULT_STORE_POOL_SIZE, ge=1)

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _token_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(token.strip() for token in value.split(",") if token.strip())
        return value

    @field_validator("broker_url")
    @classmethod
    def _kafka_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "kafka" or not parts.hostname or parts.port is None:
            raise ValueError(f"broker URL must look like kafka://host:port, got {value!r}")
        return value

    @field_serializer(*_URL_FIELDS)
    def _dump_url(self, url: str) -> str:
        """model_dump and model_dump_json show URLs without their passwords too."""
        return redact_url(url)

    def __repr_args__(self) -> Any:
        """Printouts and logs show URLs without their passwords (tokens are SecretStr)."""
        for name, value in super().__repr_args__():
            shown = name in _URL_FIELDS and isinstance(value, str)
            yield name, redact_url(value) if shown else value

    @property
    def store_options(self) -> ServerOptions:
        """How the worker and the close open a ClickHouse server store (the read API then
        shortens its statements' wait to api_store_timeout_seconds)."""
        return ServerOptions(connect_timeout=self.store_connect_timeout_seconds,
                             timeout=self.store_timeout_seconds, pool_size=self.store_pool_size)

    @property
    def bootstrap_servers(self) -> str:
        parts = urlsplit(self.broker_url)
        return f"{parts.hostname}:{parts.port}"
