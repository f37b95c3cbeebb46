"""`metering backfill FILE|-` on the real broker, the real `metering worker` process and the
real ClickHouse server: archived CloudEvents go out again with their original (source, id),
so a replay changes no count, and events of a period already closed reach the next invoice
as an adjustment line while the issued invoice stays byte for byte the same.

Also the progress bar (`--progress`: a rich bar on stderr, the report still on stdout) and
bad input: a missing or unreadable file is one error line; malformed lines are reported by
line number and never sent, while the good lines go out whole, as their original bytes.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from metering.local.services import LocalBroker, LocalClickHouse
from tests.builders import account, catalog_yaml, cloud_event
from tests.integration.pipeline import METERING, Stack, consume_all, new_stack

TEAM = "team-backfill"
CATALOG = catalog_yaml(account(TEAM, "2026-07-04"))
JULY = datetime(2026, 7, 5, 8, tzinfo=UTC)  # in the period 2026-07-04 to 2026-08-04


@pytest.fixture
def stack(broker: LocalBroker, clickhouse_server: LocalClickHouse, tmp_path: Path) -> Stack:
    made = new_stack("backfill", broker=broker, clickhouse=clickhouse_server, tmp=tmp_path,
                     partitions=2)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG, encoding="utf-8")
    made.env.update({"METERING_CATALOG": str(catalog), "METERING_LOG_LEVEL": "info"})
    return made


def run(stack: Stack, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [METERING, *args], env=stack.env, cwd=stack.tmp, input=stdin, capture_output=True,
        timeout=120, check=False,
    )
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(), result.stderr.decode())


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def event(n: str, user: str, at: datetime) -> dict[str, object]:
    return cloud_event(n, TEAM, user, at, source="archive")


def write_lines(path: Path, events: list[dict[str, object]]) -> list[bytes]:
    lines = [json.dumps(e).encode() for e in events]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def usage(stack: Stack) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(
        ok(run(stack, "usage", "--team", TEAM, "--at", "2026-07-20", "--json")).stdout)
    return report


def close(stack: Stack, as_of: str) -> tuple[str, list[dict[str, Any]], str]:
    """stdout (the due invoices as JSON), the invoices, and the stderr summary."""
    result = ok(run(stack, "close", "--as-of", as_of, "--json"))
    return result.stdout, json.loads(result.stdout), result.stderr


def sent_values(stack: Stack) -> list[bytes]:
    return [value or b"" for _, value, _ in consume_all(stack.broker.bootstrap,
                                                        stack.events_topic)]


def test_backfill_changes_no_count_and_late_events_adjust_the_next_invoice(
    stack: Stack,
) -> None:
    # 8 people active in July's period, 3 events each.
    archive = stack.tmp / "archive.jsonl"
    archived = write_lines(archive, [
        event(f"jul-{u}-{d}", f"u{u}", JULY + timedelta(days=u + d, hours=d))
        for u in range(8) for d in range(3)
    ])
    assert ok(run(stack, "emit", str(archive))).stdout == "sent 24 events; rejected 0 lines\n"
    stack.run_worker()
    counted = usage(stack)
    assert (counted["period_start"], counted["period_end"], counted["mau"]) == (
        "2026-07-04", "2026-08-04", 8)
    assert sum(day["events"] for day in counted["daily"]) == 24

    august_text, august, _ = close(stack, "2026-08-04T01:00:00Z")
    assert [(i["invoice_date"], i["total"]) for i in august] == [
        ("2026-07-04", "10.00"), ("2026-08-04", "16.00")]
    assert [(ln["kind"], ln["quantity"]) for ln in august[1]["lines"]] == [
        ("base", "1"), ("overage", "3")]

    # The whole archive again: same (source, id), so nothing changes, though a fresh worker
    # process (empty dedupe window) writes every row again.
    replay = ok(run(stack, "backfill", str(archive)))
    assert replay.stdout == "sent 24 events; rejected 0 lines\n"
    assert replay.stderr == ""  # no bar: stderr is not a terminal and --progress not given
    stack.run_worker()
    assert usage(stack) == counted
    assert Counter(sent_values(stack)) == {line: 2 for line in archived}  # original bytes
    again_text, _, summary = close(stack, "2026-08-04T01:00:00Z")
    assert again_text == august_text
    assert "issued 0 new invoices" in summary

    # Late: 4 more people in July's period, found in an archive after August was invoiced,
    # mixed with events already counted.
    late = stack.tmp / "late.jsonl"
    write_lines(late, [event(f"late-{u}", f"late{u}", JULY + timedelta(days=20 + u))
                       for u in range(4)] + [json.loads(line) for line in archived[:3]])
    assert ok(run(stack, "backfill", str(late))).stdout == "sent 7 events; rejected 0 lines\n"
    log = stack.run_worker()
    late_lines = [json.loads(line) for line in log.splitlines()
                  if "events for a period past its end plus grace" in line]
    assert any(line.get("team") == TEAM and line.get("period_start") == "2026-07-04"
               for line in late_lines), late_lines
    after = usage(stack)
    assert after["mau"] == 12
    assert sum(day["events"] for day in after["daily"]) == 28

    september_text, september, summary = close(stack, "2026-09-04T01:00:00Z")
    assert "issued 1 new invoices" in summary
    assert september_text.startswith(august_text.rstrip("\n").removesuffix("]"))
    assert september[:2] == august  # issued invoices never change
    lines = [(ln["kind"], ln["quantity"], ln["amount"], ln["service_start"], ln["service_end"])
             for ln in september[2]["lines"]]
    assert lines == [
        ("base", "1", "10.00", "2026-09-04", "2026-10-04"),
        ("overage", "0", "0.00", "2026-08-04", "2026-09-04"),
        ("adjustment", "4", "8.00", "2026-07-04", "2026-08-04"),
    ]
    adjustment = september[2]["lines"][2]["description"]
    assert "4 active users reported late for 2026-07-04 to 2026-08-04" in adjustment
    assert "12 active, 8 billed, 5 included" in adjustment
    assert september[2]["total"] == "18.00"
    # on time, July would have billed 12 - 5 = 7 users: 3 in August plus 4 adjusted now
    assert int(august[1]["lines"][1]["quantity"]) + 4 == 12 - 5


def test_progress_bar_on_stderr_and_report_on_stdout(stack: Stack) -> None:
    archive = stack.tmp / "archive.jsonl"
    lines = write_lines(archive, [event(f"p-{n}", f"u{n % 50}", JULY + timedelta(minutes=n))
                                  for n in range(2000)])
    size = archive.stat().st_size
    assert size > 200_000  # several steps of the bar

    # A relative name: the description column takes the room it needs (80 columns when
    # stderr is a pipe), and a long path leaves no room for the bar.
    shown = ok(run(stack, "backfill", "--progress", archive.name))
    assert shown.stdout == "sent 2000 events; rejected 0 lines\n"
    assert f"sending {archive.name}" in shown.stderr
    assert "\x1b[" in shown.stderr  # rich drew a terminal bar although stderr is a pipe
    assert "━" in shown.stderr
    final = f"{size / 1000:.1f}/{size / 1000:.1f} kB"  # DownloadColumn: done/total, SI
    assert final in shown.stderr, shown.stderr[-500:]

    piped = ok(run(stack, "backfill", "--progress", "-", stdin=archive.read_bytes()))
    assert piped.stdout == "sent 2000 events; rejected 0 lines\n"
    assert "sending -" in piped.stderr

    quiet = ok(run(stack, "backfill", str(archive)))
    assert (quiet.stdout, quiet.stderr) == ("sent 2000 events; rejected 0 lines\n", "")
    assert Counter(sent_values(stack)) == {line: 3 for line in lines}


def test_missing_or_unreadable_file_is_one_line(stack: Stack) -> None:
    for args, needle in [
        (["backfill", "missing.jsonl"], "missing.jsonl: cannot read (No such file or directory)"),
        (["backfill", "--progress", "missing.jsonl"], "missing.jsonl: cannot read"),
        (["backfill", str(stack.tmp)], f"{stack.tmp}: cannot read"),
    ]:
        result = run(stack, *args)
        assert result.returncode == 1, result
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(f"metering: error: {needle}"), line
    assert sent_values(stack) == []


def test_malformed_lines_are_reported_by_number_and_never_sent(stack: Stack) -> None:
    good = [json.dumps(event(f"g-{n}", f"u{n}", JULY + timedelta(hours=n))).encode()
            for n in range(3)]
    batch = [event("b-1", "u-b1", JULY), dict(event("b-2", "u-b2", JULY), type="nap"),
             event("b-3", "u-b3", JULY)]
    future = event("f-1", "u-f", datetime.now(UTC) + timedelta(days=2))
    archive = stack.tmp / "archive.jsonl"
    archive.write_bytes(b"\n".join([
        good[0],                                         # 1
        b'{"specversion": "1.0", "id": "cut", "sour',    # 2 a line cut in the middle
        b"",                                             # 3 blank: skipped, still counted
        good[1],                                         # 4
        json.dumps(dict(event("t-1", "u-t", JULY), type="clock_sideways")).encode(),  # 5
        b"\xff\xfe not utf-8",                           # 6
        json.dumps(batch).encode(),                      # 7 a batch with one bad member
        json.dumps(future).encode(),                     # 8
        good[2],                                         # 9
        b'{"specversion": "1.0", "id": "tail", "type": "lo',  # 10 file cut mid-write
    ]))

    result = run(stack, "backfill", str(archive))
    assert result.returncode == 1, result.stderr
    assert result.stdout == "sent 5 events; rejected 6 lines\n"
    assert "Traceback" not in result.stderr
    reported = [line.split(": ", 2)[:2] for line in result.stderr.splitlines()]
    assert reported == [["line 2", "invalid_json"], ["line 5", "unknown_type"],
                        ["line 6", "not_utf8"], ["line 7", "unknown_type"],
                        ["line 8", "future_time"], ["line 10", "invalid_json"]]

    sent = sent_values(stack)
    assert len(sent) == 5
    assert Counter(v for v in sent if v in good) == {line: 1 for line in good}  # whole lines
    members = [json.loads(v) for v in sent if v not in good]
    assert sorted((m["id"], m["source"], m["subject"], m["data"]["user_id"]) for m in members) == [
        ("b-1", "archive", TEAM, "u-b1"), ("b-3", "archive", TEAM, "u-b3")]  # original ids
    assert not any(b"cut" in v or b"tail" in v or b"u-t" in v or b"u-f" in v for v in sent)

    keys = {key for key, _, _ in consume_all(stack.broker.bootstrap, stack.events_topic)}
    assert keys == {TEAM.encode()}
