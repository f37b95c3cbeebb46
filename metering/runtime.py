"""From settings to the parts every program opens: the catalog and a ready store."""

from __future__ import annotations

from aggregation import Store, open_store
from metering.settings import Settings
from schemas import Catalog, load_catalog

__all__ = ["SetupError", "load_settings_catalog", "open_ready_store"]


class SetupError(Exception):
    """The settings name something that cannot be used: printed as one line, exit code 1."""


def load_settings_catalog(settings: Settings, *, required: bool) -> Catalog:
    """The catalog file of the settings; without one, an empty catalog unless `required`."""
    if settings.catalog is None:
        if required:
            raise SetupError("no catalog: set METERING_CATALOG or pass --catalog FILE")
        return Catalog()
    return load_catalog(settings.catalog)


def open_ready_store(settings: Settings) -> Store:
    """The settings' store, with their timeouts and pool size, and its schema in place."""
    try:
        store = open_store(settings.store_url, settings.store_options)
    except ValueError as exc:
        raise SetupError(str(exc)) from exc
    store.ensure_schema()
    return store
