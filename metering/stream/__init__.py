"""The Faust app and its agents: activity events into first-seen rows, billing changes into
each team's history. Billing rules reach the change agent by injection (`ChangeCheck`)."""

from __future__ import annotations

from metering.stream.app import create_app
from metering.stream.changes import ChangeCheck

__all__ = ["ChangeCheck", "create_app"]
