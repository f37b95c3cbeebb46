"""The one Settings object: built once at start-up from METERING_* variables and flags."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from metering.event_window import DEFAULT_WINDOW_EVENTS

DEFAULT_BROKER_URL = "kafka://127.0.0.1:9092"
DEFAULT_STORE_URL = "chdb:///var/lib/metering/chdb"
DEFAULT_EVENTS_TOPIC = "activity-events"
DEFAULT_REJECTED_TOPIC = "activity-events-rejected"
DEFAULT_CHARGES_TOPIC = "billing-charges"
DEFAULT_PARTITIONS = 8
DEFAULT_GRACE = timedelta(hours=1)
DEFAULT_BATCH_SIZE = 5000
DEFAULT_BATCH_LINGER_SECONDS = 0.5
DEFAULT_SESSION_TIMEOUT_SECONDS = 10.0


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
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1)
    batch_linger_seconds: float = Field(default=DEFAULT_BATCH_LINGER_SECONDS, gt=0)
    dedupe_window: int = Field(default=DEFAULT_WINDOW_EVENTS, ge=0)
    session_timeout_seconds: float = Field(default=DEFAULT_SESSION_TIMEOUT_SECONDS, gt=0)
    log_level: str = "warning"
    # Faust keeps local state (none of ours: no tables) under here, not in the working dir
    work_dir: Path = Path(tempfile.gettempdir()) / "metering-worker"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    @field_validator("broker_url")
    @classmethod
    def _kafka_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "kafka" or not parts.hostname or parts.port is None:
            raise ValueError(f"broker URL must look like kafka://host:port, got {value!r}")
        return value

    @property
    def bootstrap_servers(self) -> str:
        parts = urlsplit(self.broker_url)
        return f"{parts.hostname}:{parts.port}"
