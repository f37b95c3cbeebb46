"""Root logging from Settings: one JSON object per line (log_format json) or plain text.

JSON lines carry time, level, logger, message and every `extra` field of the call
(`log.warning("...", extra={"partition": 3, "offset": 41})`). The same dictConfig is
applied by `configure` and handed to Faust's worker, which replaces the root handlers
with its own configuration when it starts.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from metering.settings import Settings

__all__ = ["JsonFormatter", "configure", "logging_config"]

# Client libraries log each refused connection with a traceback; the commands report the
# failure themselves in one line.
QUIET_LOGGERS = ("kafka", "clickhouse_driver")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("debug", "info", "warning", "error", "critical")
# Attributes every LogRecord has; anything else on a record came in through `extra`.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; values JSON cannot hold are written as their str()."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def logging_config(settings: Settings) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the root logger: stderr, level and format from
    `settings`, the client libraries above silenced. ValueError for an unknown level."""
    if settings.log_level.lower() not in LEVELS:
        raise ValueError(f"unknown level {settings.log_level!r}: use one of {', '.join(LEVELS)}")
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if settings.log_format == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"metering": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "metering",
            },
        },
        "loggers": {name: {"level": "CRITICAL"} for name in QUIET_LOGGERS},
        "root": {"level": settings.log_level.upper(), "handlers": ["stderr"]},
    }


def configure(settings: Settings) -> None:
    logging.config.dictConfig(logging_config(settings))
