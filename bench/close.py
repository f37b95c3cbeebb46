"""The period close at scale: `metering close` over N catalog teams, against one plain query.

Starts a local tansu broker (and, with `--store server`, a clickhouse-server; with `--store
chdb` the store is `chdb:///<run folder>/chdb`), writes a catalog of N accounts on the
`power` plan of deploy/examples/catalog.yaml (kind mau: 10.00 a period, 5 users included,
2.00 per extra MAU), one per line, with start dates 2026-10-01..28 and four time zones, and
writes their first period's active users straight into the store (no events rows: the
close reads `active_users` only). Each team has 1..2x`--users-mean`-1 distinct users (mean
`--users-mean`), first seen inside [start date, start date + 1 month) on the team's clock.

Then it runs `metering close --as-of 2026-11-29T12:00:00Z --quiet` twice (a billing job:
charges on the topic, the summary line on stderr), then a third time with `--json` into
/dev/null (`printed_close_seconds`: every due invoice read back and printed), each in its own
process
through the command line (the contract, so the bench holds whatever the close's inside),
timing each (wall, start-up and catalog load included) and reading each close's peak RSS
(ru_maxrss from os.wait4 in a small launcher process, see `_LAUNCHER`). As of that instant
every team has two invoices due (its start date and one month later): the first close issues
2N, the second and third none. Checked afterwards: 2N invoice keys in the store, their billed totals
(10.00 + 10.00 + 2.00 per user above 5, per team), and 2N messages on the charges topic
after each close. Exit status 1 when a check fails or a close exits non-zero (its stderr is
printed).

The baseline is the same usage read in one plain query on the same engine, fetched whole
into this process (`SELECT team, period_start, uniqExact(user_id) ... GROUP BY team,
period_start`: clickhouse-driver's NumPy columns, or a chdb Arrow table), run after the
closes; `ratio_to_plain_query` = first close seconds / plain query seconds.

    .venv/bin/python bench/close.py --teams N [--store server|chdb] [--users-mean 8]
        [--seed S] [--keep DIR] [--setup-only] [--json]

`--setup-only` stops once the store and catalog are built and prints the setup figures;
`--keep DIR` builds in DIR (created if missing) and leaves catalog, store folder and logs
there (the services are stopped either way).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import yaml
from baseline import BenchError
from clickhouse_driver import Client
from clickhouse_driver import errors as clickhouse_errors
from kafka.errors import KafkaError

from aggregation import ActiveUserColumns, StoreError, day_number, open_store
from metering.kafka_io import BrokerError, group_lag
from metering.local import (
    LocalBroker,
    LocalClickHouse,
    ServiceError,
    start_broker,
    start_clickhouse,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CATALOG = REPO / "deploy" / "examples" / "catalog.yaml"
PLAN = "power"
FIRST_MONTH = (2026, 10)  # start dates 2026-10-01..28; the usage period ends a month later
ANCHOR_DAYS = 28
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
AS_OF = "2026-11-29T12:00:00Z"  # both billing dates of every team, plus grace, are past
INVOICES_PER_TEAM = 2
EVENT_TYPES = ("clock_in", "clock_out", "login", "bot_command", "api_call")
SOURCE = "bench-close"
CHARGES_TOPIC = "bench-charges"
CHDB_DATABASE = "metering"  # the database chdb:/// stores use (not configurable)
DEFAULT_USERS_MEAN = 8
DEFAULT_SEED = 20261001
CHUNK_ROWS = 500_000
# Invoice keys and their totals in cents. visitParamExtractString reads the first "total" key
# (the invoice's own: lines carry "amount") on both ClickHouse 18.16 and chdb's 26.9.
KEYS_SQL = ("SELECT count(), sum(cents) FROM (SELECT team, invoice_date, reference, "
            "any(toUInt64(round(toFloat64(visitParamExtractString(body, 'total')) * 100))) "
            "AS cents FROM {db}.invoices GROUP BY team, invoice_date, reference)")
PLAIN_SQL = ("SELECT team, period_start, uniqExact(user_id) FROM {db}.active_users "
             "GROUP BY team, period_start")

Ints = npt.NDArray[np.int64]


class _Session(Protocol):
    """The part of chdb's untyped Session used here."""

    def query(self, sql: str, fmt: str) -> Any: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Plan:
    """The example catalog's `power` plan, as written into the bench's catalog."""

    raw: dict[str, Any]
    base_cents: int
    included_users: int
    overage_cents: int

    @classmethod
    def from_example(cls) -> Plan:
        raw = yaml.safe_load(EXAMPLE_CATALOG.read_text())["plans"][PLAN]
        return cls(raw, _cents(raw["base_fee"]), int(raw["included_users"]),
                   _cents(raw["overage_price"]))


def _cents(amount: str) -> int:
    return int(Decimal(amount) * 100)


@dataclass(frozen=True, slots=True)
class Teams:
    """The generated accounts, one entry per team in each array."""

    names: npt.NDArray[np.object_]
    day: Ints  # start date's day of month, 1..28
    zone: Ints  # index into ZONES
    users: Ints  # distinct users in the first period

    def __len__(self) -> int:
        return len(self.names)

    def billed_cents(self, plan: Plan) -> int:
        """What the two invoices of every team total: two base fees and the overage."""
        overage = int(np.maximum(self.users - plan.included_users, 0).sum())
        return len(self) * INVOICES_PER_TEAM * plan.base_cents + overage * plan.overage_cents


@dataclass(frozen=True, slots=True)
class CloseRun:
    seconds: float
    peak_rss_bytes: int
    summary: str  # the last line of the close's stderr


def _stage(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def draw_teams(rng: np.random.Generator, teams: int, users_mean: int) -> Teams:
    names = np.array([f"team-{i:07d}" for i in range(1, teams + 1)], dtype=object)
    return Teams(
        names=names,
        day=rng.integers(1, ANCHOR_DAYS + 1, teams),
        zone=rng.integers(0, len(ZONES), teams),
        users=rng.integers(1, 2 * users_mean, teams),
    )


def write_catalog(path: Path, plan: Plan, teams: Teams) -> int:
    """The catalog file: the example's `power` plan and one flow-style account per line."""
    header = yaml.safe_dump({"plans": {PLAN: plan.raw}}, sort_keys=False)
    year, month = FIRST_MONTH
    lines = [
        f"  - {{team: {name}, plan: {PLAN}, start_date: '{year}-{month:02d}-{day:02d}', "
        f"timezone: {ZONES[zone]}}}\n"
        for name, day, zone in zip(teams.names.tolist(), teams.day.tolist(),
                                   teams.zone.tolist(), strict=True)
    ]
    text = header + "accounts:\n" + "".join(lines)
    path.write_text(text)
    return len(text.encode())


def _period_bounds() -> tuple[Ints, Ints]:
    """UTC seconds of each (zone, day)'s first period: local midnight of the start date and
    of the same day a month later, as [zone, day] tables."""
    year, month = FIRST_MONTH
    starts = np.zeros((len(ZONES), ANCHOR_DAYS + 1), np.int64)
    ends = np.zeros_like(starts)
    for z, name in enumerate(ZONES):
        zone = ZoneInfo(name)
        for day in range(1, ANCHOR_DAYS + 1):
            starts[z, day] = datetime(year, month, day, tzinfo=zone).timestamp()
            ends[z, day] = datetime(year, month + 1, day, tzinfo=zone).timestamp()
    return starts, ends


def usage_chunks(rng: np.random.Generator, teams: Teams,
                 chunk_rows: int = CHUNK_ROWS) -> Iterator[ActiveUserColumns]:
    """Every team's first-period active users as columns, `chunk_rows` rows at a time."""
    total = int(teams.users.sum())
    team_of = np.repeat(np.arange(len(teams)), teams.users)
    first_row = np.cumsum(teams.users) - teams.users
    user_of = np.arange(total) - np.repeat(first_row, teams.users)
    starts, ends = _period_bounds()
    start, end = starts[teams.zone, teams.day][team_of], ends[teams.zone, teams.day][team_of]
    first_time = start + (rng.random(total) * (end - start)).astype(np.int64)
    year, month = FIRST_MONTH
    period_start = (day_number(date(year, month, 1)) - 1 + teams.day[team_of]).astype(np.int32)
    user_names = np.array([f"u-{j}" for j in range(int(teams.users.max(initial=1)))],
                          dtype=object)
    types = np.array(EVENT_TYPES, dtype=object)[rng.integers(0, len(EVENT_TYPES), total)]
    for lo in range(0, total, chunk_rows):
        hi = min(lo + chunk_rows, total)
        yield ActiveUserColumns(
            team=teams.names[team_of[lo:hi]].tolist(),
            period_start=period_start[lo:hi],
            user_id=user_names[user_of[lo:hi]].tolist(),
            first_time=first_time[lo:hi],
            event_id=[f"ev-{i}" for i in range(lo, hi)],
            source=[SOURCE] * (hi - lo),
            event_type=types[lo:hi].tolist(),
        )


def write_usage(url: str, rng: np.random.Generator, teams: Teams) -> int:
    """Write the usage into the store at `url` and close it; the number of rows."""
    store = open_store(url)
    rows = 0
    try:
        store.ensure_schema()
        for columns in usage_chunks(rng, teams):
            store.add_active_user_columns(columns)
            rows += len(columns)
    finally:
        store.close()
    return rows


def close_env(store_url: str, broker: LocalBroker, catalog: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
    env.update(
        METERING_STORE_URL=store_url, METERING_BROKER_URL=broker.url,
        METERING_CATALOG=str(catalog), METERING_CHARGES_TOPIC=CHARGES_TOPIC,
        METERING_PARTITIONS="1",
    )
    return env


# A lean parent for the close. Linux starts a child's peak RSS at its parent's RSS when
# forked (exec keeps the high-water mark of the image it replaces), so a close forked from
# this process, which holds the generated columns, NumPy and perhaps chdb, would report at
# least this process's RSS. The launcher (about 10 MiB) spawns the close, waits for it and
# writes its ru_maxrss (KiB on Linux) to the file named by argv[1].
_LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_close(env: dict[str, str], out: Path, output: str) -> CloseRun:
    """One `metering close <output>` (--quiet or --json) in a child process, stdout to
    /dev/null: wall time, its own peak RSS, its summary; its stderr is kept in
    `out`.stderr."""
    rss_path, stderr_path = out.with_suffix(".maxrss"), out.with_suffix(".stderr")
    argv = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(rss_path),
            sys.executable, "-m", "metering.cli", "close", "--as-of", AS_OF, output]
    with stderr_path.open("wb") as stderr:
        started = time.perf_counter()
        # cwd: `-m` imports from the working folder first, so the checkout beside this file
        returncode = subprocess.call(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=stderr)
        seconds = time.perf_counter() - started
    text = stderr_path.read_text(errors="replace")
    if returncode != 0:
        raise BenchError(f"metering close exited {returncode}:\n{text.rstrip()}")
    lines = text.strip().splitlines()
    peak_kib = int(rss_path.read_text())
    return CloseRun(seconds, peak_kib * 1024, lines[-1] if lines else "")


def _server_client(server: LocalClickHouse, **settings: object) -> Client:
    return Client(host="127.0.0.1", port=server.tcp_port, send_receive_timeout=3600,
                  settings=settings)


def server_checks(server: LocalClickHouse) -> tuple[int, int, float, int]:
    """Invoice keys and their billed cents, then the plain query: seconds and groups."""
    db = server.database
    plain = _server_client(server, use_numpy=True)
    reader = _server_client(server)
    try:
        (keys, cents), = reader.execute(KEYS_SQL.format(db=db))
        plain.execute("SELECT 1", columnar=True)  # loads the driver's NumPy support
        started = time.perf_counter()
        columns = plain.execute(PLAIN_SQL.format(db=db), columnar=True)
        seconds = time.perf_counter() - started
    except (clickhouse_errors.Error, OSError, EOFError) as exc:
        raise BenchError(f"reading the store: {exc}") from exc
    finally:
        plain.disconnect()
        reader.disconnect()
    return int(keys), int(cents or 0), seconds, len(columns[0]) if columns else 0


def chdb_checks(path: Path) -> tuple[int, int, float, int]:
    """The same as `server_checks`, in an embedded session on the closes' store folder."""
    # Imported here: the embedded engine is only loaded for chdb runs.
    from chdb import session as chdb_session

    open_session: Callable[[str], _Session] = chdb_session.Session
    sess = open_session(str(path))
    try:
        raw = sess.query(KEYS_SQL.format(db=CHDB_DATABASE), "JSONCompact").bytes()
        keys, cents = json.loads(raw)["data"][0]
        started = time.perf_counter()
        table = sess.query(PLAIN_SQL.format(db=CHDB_DATABASE), "ArrowTable")
        seconds = time.perf_counter() - started
    except (RuntimeError, ValueError, KeyError) as exc:
        raise BenchError(f"reading chdb://{path}: {exc}") from exc
    finally:
        sess.close()
    return int(keys), int(cents or 0), seconds, int(table.num_rows)


def charges_on_topic(broker: LocalBroker) -> int:
    """Messages on the charges topic: a fresh group with no commits lags by all of them."""
    return group_lag(broker.bootstrap, group=f"bench-close-{uuid.uuid4().hex[:8]}",
                     topic=CHARGES_TOPIC)


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    figures: dict[str, Any] = {"teams": args.teams, "store": args.store}
    with contextlib.ExitStack() as stack:
        started = time.perf_counter()
        broker = stack.enter_context(start_broker(root))
        server = (stack.enter_context(start_clickhouse(root / "clickhouse"))
                  if args.store == "server" else None)
        chdb_path = (root / "chdb").resolve()
        store_url = server.url if server is not None else f"chdb://{chdb_path}"
        services = time.perf_counter()
        _stage(f"services up in {services - started:.1f} s; writing the catalog of "
               f"{args.teams:,} teams")
        plan, teams = Plan.from_example(), draw_teams(rng, args.teams, args.users_mean)
        figures["catalog_bytes"] = write_catalog(root / "catalog.yaml", plan, teams)
        written = time.perf_counter()
        _stage(f"catalog written in {written - services:.1f} s; writing the usage")
        figures["usage_rows"] = write_usage(store_url, rng, teams)
        done = time.perf_counter()
        figures.update(
            setup_seconds=done - started, services_seconds=services - started,
            catalog_seconds=written - services, usage_seconds=done - written,
            users_mean=float(teams.users.mean()),
            teams_with_overage=int((teams.users > plan.included_users).sum()),
        )
        _stage(f"{figures['usage_rows']:,} usage rows written in {done - written:.1f} s")
        if args.setup_only:
            return figures
        figures.update(_closes(root, plan, teams, broker, server, store_url, chdb_path))
    return figures


def _closes(root: Path, plan: Plan, teams: Teams, broker: LocalBroker,
            server: LocalClickHouse | None, store_url: str, chdb_path: Path) -> dict[str, Any]:
    expected = INVOICES_PER_TEAM * len(teams)
    env = close_env(store_url, broker, root / "catalog.yaml")
    runs: list[CloseRun] = []
    charges: list[int] = []
    for n, output in ((1, "--quiet"), (2, "--quiet"), (3, "--json")):
        _stage(f"close {n}: metering close --as-of {AS_OF} {output}")
        run = run_close(env, root / f"close-{n}", output)
        _stage(f"close {n}: {run.summary} ({run.seconds:.1f} s)")
        runs.append(run)
        charges.append(charges_on_topic(broker))
    keys, cents, plain, groups = (server_checks(server) if server is not None
                                  else chdb_checks(chdb_path))
    first, second, printed = runs
    checks = {
        "invoice_keys": keys == expected,
        "billed_cents": cents == teams.billed_cents(plan),
        "charges_after_first": charges[0] == expected,
        "charges_after_second": charges[1] == expected,
        "charges_after_printed": charges[2] == expected,
        "plain_query_groups": groups == len(teams),
    }
    return {
        "invoices": expected,
        "seconds": first.seconds,
        "invoices_per_s": expected / first.seconds,
        "microseconds_per_team": first.seconds / len(teams) * 1e6,
        "second_close_seconds": second.seconds,
        "plain_query_seconds": plain,
        "ratio_to_plain_query": first.seconds / plain,
        "peak_rss_bytes": first.peak_rss_bytes,
        "second_peak_rss_bytes": second.peak_rss_bytes,
        "printed_close_seconds": printed.seconds,
        "printed_peak_rss_bytes": printed.peak_rss_bytes,
        "close_summary": first.summary,
        "second_close_summary": second.summary,
        "stored_invoice_keys": keys,
        "billed_cents": cents,
        "expected_billed_cents": teams.billed_cents(plan),
        "charges_after_first": charges[0],
        "charges_after_second": charges[1],
        "failed_checks": [name for name, ok in checks.items() if not ok],
    }


def render(figures: dict[str, Any], *, as_json: bool) -> str:
    if as_json:
        return json.dumps(figures)
    lines = []
    for name, value in figures.items():
        if isinstance(value, float):
            lines.append(f"{name:26} {value:>14,.3f}")
        elif isinstance(value, int):
            lines.append(f"{name:26} {value:>14,}")
        else:
            lines.append(f"{name:26} {value}")
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teams", type=_positive, required=True, help="catalog accounts")
    parser.add_argument("--store", choices=("server", "chdb"), default="server",
                        help="local clickhouse-server, or embedded chdb in a folder")
    parser.add_argument("--users-mean", type=_positive, default=DEFAULT_USERS_MEAN,
                        help="mean distinct users per team (uniform over 1..2x-1)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--keep", type=Path, help="build in this folder and leave it there")
    parser.add_argument("--setup-only", action="store_true",
                        help="stop once catalog and store are built")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.keep is not None and args.keep.is_dir() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: not empty (the store would hold an earlier run)")
    try:
        with contextlib.ExitStack() as stack:
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                root = args.keep.resolve()
            else:
                root = Path(stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="metering-close-")))
            figures = measure(args, root)
    except (BenchError, BrokerError, ServiceError, StoreError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KafkaError as exc:
        print(f"bench: error: broker: {exc!r}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    print(render(figures, as_json=args.json))
    return 1 if figures.get("failed_checks") else 0


if __name__ == "__main__":
    sys.exit(main())
