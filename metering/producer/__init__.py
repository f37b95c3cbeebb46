"""What a product service needs to send events: `BatchingEmitter` and `cloud_event`
(kafka-python only), and the validated line senders behind `metering emit` and
`metering backfill`.

`pip install usage-metering` is enough for the emitter; the line senders validate with the
wire contract and need the `worker` extra, so they load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metering.producer.emitter import BatchingEmitter
from metering.producer.events import cloud_event

if TYPE_CHECKING:
    from metering.producer.lines import (
        EmitReport,
        LineRejection,
        emit_change_lines,
        emit_lines,
        emit_payments,
        event_records,
    )

__all__ = [
    "BatchingEmitter",
    "EmitReport",
    "LineRejection",
    "cloud_event",
    "emit_change_lines",
    "emit_lines",
    "emit_payments",
    "event_records",
]

_LINE_NAMES = frozenset({"EmitReport", "LineRejection", "emit_change_lines", "emit_lines",
                         "emit_payments", "event_records"})


def __getattr__(name: str) -> Any:
    if name in _LINE_NAMES:
        from metering.producer import lines

        return getattr(lines, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
