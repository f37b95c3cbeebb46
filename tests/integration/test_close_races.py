"""Closes racing each other, late events, a SIGKILL and a store outage, as real processes on
the real ClickHouse server and the tansu broker: one key, one invoice, whatever runs at once.

Each test has its own database and charges topic, a catalog of 2,000 Power-plan teams that
started between 1 and 28 October 2026, and their first-period users written straight to the
store; as of 2026-11-29 12:00 UTC every team has two due invoices (4,000 keys). The closes
run with their lease at its 3 s minimum and 50 teams per batch (40 batches a run), so a kill
lands mid-run and a killed close blocks the next only briefly.

Every test ends with the same invariant (close_race_tools.assert_invariant): every expected
key has exactly one stored invoice and nothing else is stored; on the server no key holds two
bodies; every charge on the topic is byte for byte the stored body of the key it names; every
stored invoice was published; no key was published with two bodies. (Rows of a void batch
may hold a second body until a close purges them: the stalled-close test checks the server's
rows only after that purge.) What each test proves beyond it:

- two `metering close` started together both succeed, issue 4,000 invoices between them,
  print the same bytes, and publish each charge exactly once (no re-publishing in a clean
  run);
- the same race while new active users keep arriving for the teams' first periods: a late
  user never gives a key a second body;
- `metering serve`'s periodic close (every second, as of the wall clock) beside a manual close
  of a later moment: serve skips its turns while the manual close holds the lease, neither
  run fails, and the keys both see are issued once;
- a close SIGKILLed at three points (right after it took the lease; midway; paused right
  after storing a batch, before publishing it) is finished by the next close after the
  lease lapses: the keys stored before the kill keep their bodies although late users arrived
  for those teams, and what the killed close stored but did not publish is published;
- a close whose ClickHouse server stops mid-run exits non-zero with one line on stderr and no
  traceback; once the server is back, the next close completes every key exactly once;
- a close that stalls past its lease between declaring a batch and storing it publishes
  nothing of that batch: the next close voids it and rates its keys again (with the users
  that arrived meanwhile), the stalled close's late insert is never read and its run ends
  with one line on the lease, and a later close purges its rows from the server.

Waits poll with deadlines only, to fail with a diagnostic instead of hanging; nothing asserts
how long anything took.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregation import InvoiceKey
from metering.local.services import LocalBroker, LocalClickHouse, start_clickhouse
from schemas import DEFAULT_MAX_FUTURE_SKEW
from tests.integration.close_race_tools import (
    AS_OF,
    LEASE_SECONDS,
    TEAM_COUNT,
    Closer,
    LateUsers,
    Race,
    Team,
    assert_invariant,
    charge_key,
    consume_charges,
    duplicates,
    expected_keys,
    new_race,
    succeeded,
    two_bodies,
    user_rows,
    wait_for,
)

SUMMARY = re.compile(r"issued (\d+) new invoices; (\d+) due as of ")
LATE_TEAMS = 100  # teams given late users after a kill
LATE_NAMES = ("late-a", "late-b", "late-c")


@pytest.fixture
def race(broker: LocalBroker, clickhouse_server: LocalClickHouse,
         tmp_path: Path) -> Iterator[Race]:
    made = new_race(tmp=tmp_path, tcp_port=clickhouse_server.tcp_port,
                    bootstrap=broker.bootstrap, broker_url=broker.url)
    try:
        yield made
    finally:
        made.stop_all()


def summary(closer: Closer) -> tuple[int, int]:
    """(issued, due) from the close's last stderr line."""
    found = SUMMARY.search(closer.stderr.strip().splitlines()[-1])
    assert found, closer.describe()
    return int(found[1]), int(found[2])


def printed_json(stored: dict[InvoiceKey, str]) -> str:
    """What `metering close --json` prints when `stored` is everything due: the bodies in key
    order, as a JSON array."""
    return "[" + ", ".join(stored[key] for key in sorted(stored)) + "]\n"


def assert_two_closes(race: Race, first: Closer, second: Closer) -> None:
    expected = expected_keys(race.teams, AS_OF)
    assert len(expected) == 2 * TEAM_COUNT
    succeeded(first, second)
    outcome = assert_invariant(race, expected)
    assert outcome.charges == len(expected), duplicates(
        consume_charges(race.bootstrap, race.topic)).most_common(5)
    (issued_a, due_a), (issued_b, due_b) = summary(first), summary(second)
    assert (due_a, due_b) == (len(expected), len(expected))
    # the lease runs them one after the other: the later finds everything issued
    assert sorted([issued_a, issued_b]) == [0, len(expected)], (first.stderr, second.stderr)
    # both print every due invoice, the stored bytes: the later one reads the earlier's
    shown = printed_json(outcome.stored)
    assert first.stdout == shown and second.stdout == shown


def test_two_closes_started_together(race: Race) -> None:
    first, second = race.close("close-a"), race.close("close-b")
    assert_two_closes(race, first, second)


def test_two_closes_while_late_users_arrive(race: Race) -> None:
    with LateUsers(race, race.teams, seed=2) as late:
        first, second = race.close("close-a"), race.close("close-b")
        for closer in (first, second):
            closer.wait()
    written = late.stop()
    assert written, "no late user was written while the closes ran"
    assert_two_closes(race, first, second)


def test_serve_periodic_close_beside_a_manual_close(race: Race) -> None:
    # serve closes as of the wall clock; the manual close as far ahead as a close may be (the
    # skew less a margin), so it sees every key serve sees while the test runs (well under
    # that margin), and nothing serve issues during the test is unexpected.
    as_of = (datetime.now(UTC).replace(microsecond=0) + DEFAULT_MAX_FUTURE_SKEW
             - timedelta(seconds=30))
    expected = expected_keys(race.teams, as_of)
    serving = race.serve("serve", close_interval_seconds="1")

    def diagnose() -> str:
        return serving.closer.describe()

    wait_for("serve's periodic close storing invoices",
             lambda: not serving.closer.alive() or race.stored_count() > 0, diagnose=diagnose)
    assert serving.closer.alive(), diagnose()
    manual = race.close("manual", as_of=as_of.isoformat())
    succeeded(manual)
    wait_for("serve's API", serving.healthy, diagnose=diagnose)
    runs = serving.metric('metering_close_runs_total{outcome="ok"}')
    wait_for("a periodic close after the manual one",
             lambda: serving.metric('metering_close_runs_total{outcome="ok"}') > runs,
             diagnose=diagnose)
    assert serving.metric('metering_close_runs_total{outcome="error"}') == 0, diagnose()
    assert "periodic close failed" not in serving.closer.stderr, diagnose()
    serve_issued = serving.metric("metering_invoices_issued_total")
    assert serving.closer.terminate() == 0, diagnose()
    assert "Traceback" not in serving.closer.stderr, diagnose()

    outcome = assert_invariant(race, expected)
    assert outcome.charges == len(expected), duplicates(
        consume_charges(race.bootstrap, race.topic)).most_common(5)
    issued, due = summary(manual)
    assert due == len(expected), manual.describe()
    assert (issued + serve_issued, serve_issued > 0) == (len(expected), True), manual.describe()


# SIGKILL mid-run


@dataclass(frozen=True)
class Kill:
    """Where a close is SIGKILLed, and what the store and topic must hold then (else the
    variant would prove less than it says)."""

    run: Callable[[Race], Closer]  # start a close and SIGKILL it at its point
    stored_some: bool  # some invoices stored before the kill
    unpublished_some: bool  # some of them not on the topic


def kill_after_lease(race: Race) -> Closer:
    """As early as a close can hold anything: once its lease row is in the store."""
    closer = race.close("killed")
    wait_for("the close's lease row", lambda: not closer.alive() or race.count("leases") > 0,
             diagnose=closer.describe, pause=0.01)
    closer.kill()
    return closer


def kill_midway(race: Race) -> Closer:
    closer = race.close("killed")
    wait_for("a quarter of the invoices stored",
             lambda: not closer.alive() or race.stored_count() >= TEAM_COUNT // 2,
             diagnose=closer.describe, pause=0.02)
    closer.kill()
    return closer


def kill_while_publishing(race: Race) -> Closer:
    """Between a batch's insert and its publication: the close (STALLED_CLOSE) pauses right
    after storing its tenth batch, and is killed there."""
    stall = race.stalled_close("killed", call=10, after_insert=True)
    stall.wait_held()
    stall.closer.kill()
    return stall.closer


KILLS = {
    "after-lease": Kill(kill_after_lease, stored_some=False, unpublished_some=False),
    "midway": Kill(kill_midway, stored_some=True, unpublished_some=False),
    "while-publishing": Kill(kill_while_publishing, stored_some=True, unpublished_some=True),
}


@pytest.mark.parametrize("when", sorted(KILLS))
def test_sigkill_mid_run_then_close_again(when: str, race: Race) -> None:
    kill = KILLS[when]
    expected = expected_keys(race.teams, AS_OF)
    killed = kill.run(race)
    assert killed.process.returncode == -signal.SIGKILL, (
        f"the close ended before the kill; {killed.describe()}")
    before = race.stored()
    on_topic = {charge_key(value) for _, value in consume_charges(race.bootstrap, race.topic)}
    unpublished = before.keys() - on_topic
    state = f"{len(before)} stored, {len(unpublished)} of them not on the topic"
    assert len(before) < len(expected), f"the kill came too late: {state}"
    if kill.stored_some:
        assert before, f"the kill came too early: {state}"
    if kill.unpublished_some:
        assert unpublished, f"the kill did not land between store and publish: {state}"

    # Late users for teams whose invoices are stored (they must not change) and for teams
    # still to close (they must count).
    by_name = {team.name: team for team in race.teams}
    closed = [by_name[name] for name in sorted({key.team for key in before})[:LATE_TEAMS]]
    still_open = [by_name[name] for name in
                  sorted(by_name.keys() - {key.team for key in before})[:LATE_TEAMS]]
    race.add_users([row for team in closed + still_open
                    for row in user_rows(team, LATE_NAMES, source="late")])

    again = race.close("again")
    succeeded(again)
    outcome = assert_invariant(race, expected)  # what was not published, now is
    changed = [key for key, body in before.items() if outcome.stored[key] != body]
    assert not changed, f"{len(changed)} invoices stored before the kill changed: {changed[:3]}"
    assert [billed_users(outcome.stored, team) for team in closed] == [
        team.users for team in closed]
    assert [billed_users(outcome.stored, team) for team in still_open] == [
        team.users + len(LATE_NAMES) for team in still_open]
    assert summary(again) == (len(expected) - len(before), len(expected)), again.describe()


def billed_users(stored: dict[InvoiceKey, str], team: Team) -> int:
    """The first period's active users as the team's November invoice billed them."""
    november = team.start.replace(month=11)
    usage = json.loads(stored[InvoiceKey(team.name, november, "")])["usage"]
    (record,) = [r for r in usage if r["period_start"] == team.start.isoformat()]
    return int(record["active_users"])


# The store goes away mid-close


def test_store_outage_mid_close(broker: LocalBroker, tmp_path: Path) -> None:
    with start_clickhouse(tmp_path / "clickhouse") as server:
        race = new_race(tmp=tmp_path, tcp_port=server.tcp_port, bootstrap=broker.bootstrap,
                        broker_url=broker.url)
        try:
            expected = expected_keys(race.teams, AS_OF)
            failing = race.close("failing", close_batch_teams="20")
            wait_for("the close storing invoices",
                     lambda: not failing.alive() or race.stored_count() > 0,
                     diagnose=failing.describe, pause=0.02)
            server.stop()
            assert failing.wait() == 1, failing.describe()
            stderr = failing.stderr
            assert "Traceback" not in stderr, stderr
            lines = stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("metering: error: "), stderr

            server.start()
            before = race.stored()
            assert len(before) < len(expected), "the outage came after the close's last batch"
            again = race.close("again")
            succeeded(again)
            outcome = assert_invariant(race, expected)
            assert all(outcome.stored[key] == body for key, body in before.items())
            assert summary(again) == (len(expected) - len(before), len(expected))
        finally:
            race.stop_all()


# A close stalled past its lease


def test_a_close_stalled_past_its_lease_publishes_nothing_of_its_own(race: Race) -> None:
    """Close A stores and publishes its first batch, renews its lease declaring the second,
    then stalls before inserting it, longer than its lease. Meanwhile late users arrive for
    that batch's teams, and close B takes the lapsed lease, voids A's declared, unstored
    batch and issues the rest, rating A's held-back keys with the late users. When A's insert
    lands after all, A stops (exit 1, one line on stderr about the lease, no traceback) and
    publishes none of it: through the store, every key has one invoice and every charge is
    its stored bytes, no key was published twice (let alone with two bodies), A's first
    batch is kept, and the held-back keys bill the late users (B's bodies, not A's, which
    the server still holds in A's void rows). A third close then purges those rows: the
    server ends with no row of a void batch and no key with two bodies."""
    expected = expected_keys(race.teams, AS_OF)
    stall = race.stalled_close("stalled")
    held = stall.wait_held()
    stalled_at = time.monotonic()
    first = race.stored()  # A's first batch, stored and published before the stall
    assert first and not first.keys() & held.keys, (sorted(first)[:3], sorted(held.keys)[:3])

    by_name = {team.name: team for team in race.teams}
    late = [by_name[name] for name in sorted({key.team for key in held.keys})]
    race.add_users([row for team in late for row in user_rows(team, LATE_NAMES, source="late")])
    taking_over = race.close("taking-over")  # waits until A's lease lapses
    succeeded(taking_over)
    assert stall.closer.alive(), f"A ended while stalled; {stall.closer.describe()}"
    assert time.monotonic() - stalled_at > LEASE_SECONDS
    stall.release()
    assert stall.closer.wait() == 1, stall.closer.describe()
    stderr = stall.closer.stderr
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    assert lines[0].startswith("metering: error: ") and "lease" in lines[0], stderr

    # B voided A's batch; A's rows landed after B's purge, with A's bodies (rated before the
    # late users): still on the server, never read. Reads must hold in every merge state:
    # the server merges in the background when it likes, so force the final one.
    database = race.database
    race.sql(f"OPTIMIZE TABLE {database}.invoices FINAL")
    assert race.sql(f"SELECT count() FROM {database}.void_batches "  # noqa: S608 - our name
                    "WHERE batch = %(batch)s", {"batch": held.batch}) == [(1,)]
    void_rows = {InvoiceKey(team, day, reference): body for team, day, reference, body in race.sql(
        "SELECT team, invoice_date, reference, body "  # noqa: S608 - our name
        f"FROM {database}.invoices WHERE batch = %(batch)s", {"batch": held.batch})}
    assert void_rows.keys() == held.keys, (len(void_rows), len(held.keys))
    assert [billed_users(void_rows, team) for team in late] == [team.users for team in late]

    outcome = assert_invariant(race, expected, raw_bodies=False)
    assert outcome.charges == len(expected), duplicates(
        consume_charges(race.bootstrap, race.topic)).most_common(5)
    assert all(outcome.stored[key] == body for key, body in first.items())
    assert [billed_users(outcome.stored, team) for team in late] == [
        team.users + len(LATE_NAMES) for team in late]
    doubled = {InvoiceKey(team, day, reference) for team, day, reference, _ in two_bodies(race)}
    assert doubled and doubled <= held.keys, (len(doubled), sorted(doubled - held.keys)[:3])
    assert not any(body in stall.closer.stdout for body in void_rows.values())
    assert summary(taking_over) == (len(expected) - len(first), len(expected))
    assert taking_over.stdout == printed_json(outcome.stored)

    purging = race.close("purging")
    succeeded(purging)
    assert summary(purging) == (0, len(expected)), purging.describe()
    void_count = (f"SELECT count() FROM {database}.invoices "  # noqa: S608 - our name
                  f"WHERE batch IN (SELECT batch FROM {database}.void_batches)")
    wait_for("the void rows purged", lambda: race.sql(void_count) == [(0,)],
             diagnose=lambda: str(race.sql(
                 "SELECT mutation_id, command, is_done, latest_fail_reason "
                 "FROM system.mutations WHERE database = %(database)s", {"database": database})))
    assert two_bodies(race) == []
    final = assert_invariant(race, expected)
    assert final.stored == outcome.stored
    assert purging.stdout == printed_json(final.stored)
