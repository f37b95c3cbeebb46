"""Usage metering: the programs around the rules.

Rooms (each package lists its public names in `__all__`):

- `metering.stream`: the Faust app and its agents (`metering worker`);
- `metering.api`: the read API and `metering serve`;
- `metering.producer`: `BatchingEmitter` and the line senders of emit and backfill;
- `metering.cli`: the `metering` command line, its report and the demo;
- `metering.local`: local services (broker, ClickHouse, Prometheus) on loopback.

Shared modules: `settings`, `logs`, `metrics`, `kafka_io`, `runtime` (settings -> store and
catalog), `closing` (run a close and publish). This module imports nothing, so that
`metering.producer` stays installable without the worker's packages.
"""

__all__: list[str] = []
