"""`metering demo`: the whole pipeline on one machine with nothing but Python packages.

Local tansu broker, embedded ClickHouse (chdb), a generated month for several teams
with retries and malformed messages, the real worker in its own process until the
consumer group has caught up, then the close and the invoice table. The data stays in the
work folder (a fresh one it names, without --workdir), and the demo ends with the commands a
newcomer types next on it, runnable as printed once the demo has exited (the embedded store
opens in one process at a time). With `serve`, the demo instead runs `metering serve` in this
process on its store and catalog (loopback, no token: the API is open to this machine only)
until Ctrl-C, which exits 0; the broker and the worker have stopped by then, so no process
is left behind (POST /v1/events answers 503: there is no broker to take the events).
"""

from __future__ import annotations

import os
import random
import shlex
import signal
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from zoneinfo import ZoneInfo

import yaml

from metering.cli.demo_data import DemoTeam, generate_period, with_retries
from metering.cli.report import invoice_table
from metering.closing import run_close
from metering.kafka_io import ensure_topics, make_producer, wait_for_lag_zero
from metering.local import ManagedProcess, start_broker
from metering.producer import emit_lines
from metering.runtime import load_settings_catalog
from metering.settings import DEFAULT_API_PORT, Settings
from schemas import Invoice, anchor_date, previous_anchor_date

DEFAULT_SEED = 20260704
DEFAULT_RETRY_SHARE = 0.05
DEFAULT_CATCH_UP_TIMEOUT = 150.0
DEMO_HOST = "127.0.0.1"
DEMO_ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney",
              "America/Los_Angeles")
DEMO_ANCHORS = (4, 1, 15, 28, 20, 10)
MALFORMED = (b"{not json", b'{"specversion":"1.0","id":"x","source":"s","type":"teleport",'
             b'"time":"2026-01-01T00:00:00Z","subject":"team-x","data":{"user_id":"u"}}',
             b"\xff\xfe not utf-8")

PLANS = {
    "power": {"name": "Power plan", "currency": "USD", "base_fee": "10.00",
              "included_users": 5, "overage_price": "2.00"},
    "team-eur": {"name": "Team plan", "currency": "EUR", "base_fee": "49.00",
                 "included_users": 25, "overage_price": "1.50"},
}


def _last_closed_anchor(anchor: int, now: datetime, zone: ZoneInfo) -> date:
    """The latest billing date at least a day old in the team's zone."""
    today = (now.astimezone(zone) - timedelta(days=1)).date()
    candidate = anchor_date(today.year, today.month, anchor_day=anchor)
    return candidate if candidate <= today else previous_anchor_date(candidate, anchor)


def _print(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class DemoData:
    """Where the demo left its data, and the team and period the next commands show."""

    root: Path
    settings: Settings
    team: str
    period_start: date


def _address(port: int, path: str) -> str:
    return f"http://{DEMO_HOST}:{port}{path}"


def _team_paths(data: DemoData) -> tuple[str, str]:
    """The API paths of the demo team's period and invoices."""
    team = data.team
    return (f"/v1/teams/{team}/periods/{data.period_start.isoformat()}",
            f"/v1/teams/{team}/invoices")


def _page_path(data: DemoData) -> str:
    """The demo team's usage page (open without a token: serve has none here)."""
    return f"/ui/teams/{data.team}"


def next_commands(data: DemoData, *, port: int) -> list[str]:
    """Shell lines a newcomer types next, runnable as printed once the demo has exited: each
    names the store and the catalog it needs (no broker: none of them sends anything)."""
    where = (f"--store {shlex.quote(data.settings.store_url)} "
             f"--catalog {shlex.quote(str(data.settings.catalog))}")
    period, invoices = _team_paths(data)
    return [
        f"metering usage --team {data.team} --at {data.period_start.isoformat()} {where}",
        f"metering serve --port {port} {where}",
        f"curl -s {_address(port, period)}  # while serve runs",
        f"curl -s {_address(port, invoices)}  # while serve runs",
        f"# and in a browser, while serve runs: {_address(port, _page_path(data))}",
    ]


def run_demo(*, teams: int, users: int, workdir: Path | None, serve: bool = False,
             port: int = DEFAULT_API_PORT) -> int:
    data = _run_pipeline(teams=teams, users=users, workdir=workdir)
    if serve:
        return _serve(data, port=port)
    _print(f"next, on the demo's data in {data.root} (its store opens in one process at a time):")
    for line in next_commands(data, port=port):
        _print(f"  {line}")
    _print("or run `metering demo --serve` to keep the API running on the demo's data "
           "until Ctrl-C")
    return 0


class _Interrupted(BaseException):
    """Ctrl-C while serving: a BaseException, so that no `except Exception` swallows it."""


def _interrupted(_signum: int, _frame: FrameType | None) -> None:
    raise _Interrupted


def _serve(data: DemoData, *, port: int) -> int:
    """`metering serve` in this process on the demo's store and catalog until Ctrl-C."""
    from metering.api import run_serve  # the web stack loads only when serving

    settings = data.settings.model_copy(update={
        "api_host": DEMO_HOST, "api_port": port, "api_tokens": (),
        "close_interval_seconds": 0.0, "top_teams_metric": 0,
    })
    _print(f"serving the demo's data on {_address(port, '')} (open to this machine only, "
           "no token) until Ctrl-C:")
    for path in (_page_path(data), *_team_paths(data), "/healthz"):
        _print(f"  {_address(port, path)}")
    # uvicorn stops gracefully on Ctrl-C, then raises SIGINT again for the handler it found:
    # this one, so the store is closed by run_serve's `finally`s and the exit code is 0.
    previous = signal.signal(signal.SIGINT, _interrupted)
    try:
        code = run_serve(settings)
    except _Interrupted:
        code = 0
    finally:
        signal.signal(signal.SIGINT, previous)
    _print(f"stopped serving; data kept in {data.root}")
    return code


def _run_pipeline(*, teams: int, users: int, workdir: Path | None) -> DemoData:
    root = workdir or Path(tempfile.mkdtemp(prefix="metering-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(DEFAULT_SEED)  # noqa: S311 - reproducible demo data, not secrets
    now = datetime.now(UTC)
    accounts: list[dict[str, object]] = []
    events: list[dict[str, object]] = []
    starts: list[date] = []
    for index in range(teams):
        zone = ZoneInfo(DEMO_ZONES[index % len(DEMO_ZONES)])
        anchor = DEMO_ANCHORS[index % len(DEMO_ANCHORS)]
        closed = _last_closed_anchor(anchor, now, zone)
        start = previous_anchor_date(closed, anchor)
        starts.append(start)
        name = f"team-{index + 1:02d}"
        plan = "team-eur" if index % 3 == 2 else "power"
        accounts.append({"team": name, "plan": plan, "start_date": start.isoformat(),
                         "timezone": zone.key})
        members = max(3, round(users / teams * rng.uniform(0.4, 1.6)))
        demo_team = DemoTeam(name, members, rng.uniform(0.3, 0.9), zone)
        events.extend(generate_period(rng, demo_team, start=start, end=closed, not_after=now))
    lines = with_retries(rng, events, DEFAULT_RETRY_SHARE)
    catalog = root / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"plans": PLANS, "accounts": accounts}, sort_keys=False))
    _print(f"workdir {root}: {teams} teams, {len(events)} events, "
           f"{len(lines) - len(events)} retried, {len(MALFORMED)} malformed")

    with start_broker(root / "logs") as broker:
        settings = Settings(broker_url=broker.url, store_url=f"chdb://{root / 'chdb'}",
                            catalog=catalog)
        env = {**os.environ, "METERING_BROKER_URL": settings.broker_url,
               "METERING_STORE_URL": settings.store_url, "METERING_CATALOG": str(catalog)}
        ensure_topics(settings.bootstrap_servers,
                      [settings.events_topic, settings.rejected_topic, settings.charges_topic],
                      partitions=settings.partitions)
        producer = make_producer(settings.bootstrap_servers)
        try:
            report = emit_lines(lines, producer=producer, topic=settings.events_topic, now=now)
            for raw in MALFORMED:
                producer.send(settings.events_topic, key=b"team-x", value=raw)
            producer.flush()
        finally:
            producer.close()
        _print(f"emitted {report.sent} events to {settings.events_topic}")

        worker = ManagedProcess(
            name="metering worker",
            argv=[sys.executable, "-m", "metering.cli", "worker"],
            log_path=root / "logs" / "worker.log", env=env,
        )
        worker.spawn()
        try:
            wait_for_lag_zero(settings.bootstrap_servers, group=settings.app_id,
                              topic=settings.events_topic, timeout=DEFAULT_CATCH_UP_TIMEOUT,
                              alive=worker.alive)
        finally:
            worker.stop()
        _print("worker caught up and stopped")

        due: list[Invoice] = []
        # run_close opens the store for its run and closes it after: the demo holds it no more
        summary = run_close(
            settings, catalog=load_settings_catalog(settings, required=True), as_of=now,
            team=None, on_due=lambda inv, new: due.append(Invoice.model_validate_json(inv.body)))
    _print(invoice_table(due))
    _print(f"issued {summary.issued} invoices; data kept in {root}")
    return DemoData(root=root, settings=settings, team="team-01", period_start=starts[0])
