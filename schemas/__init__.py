"""Contracts and the pure calendar: wire formats (events, changes, the one decoder), the
invoice JSON, the catalog with its plan kinds, billing periods and calendars."""

__all__: list[str] = []
