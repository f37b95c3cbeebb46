"""The `metering` console script on user mistakes (README "Command line"): one clear line
on stderr starting `metering: error:`, a non-zero exit, never a traceback.

Each test runs the real console script in a subprocess. METERING_* variables from the
calling environment are dropped; the broker URL points at a closed port unless a test
needs the command to get past the broker, and then it uses the `broker` fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from aggregation import open_store
from metering.local.services import LocalBroker, free_port
from tests.builders import POWER_PLAN_YAML

METERING = str(Path(sys.executable).with_name("metering"))
# Text, not catalog_yaml: the cases below edit it, and an impossible date must stay a YAML
# date (unquoted) for the YAML loader to refuse it.
GOOD_CATALOG = POWER_PLAN_YAML + """accounts:
  - team: team-daniel
    plan: power
    start_date: 2026-07-04
    timezone: UTC
"""


def bad(old: str, new: str) -> str:
    assert old in GOOD_CATALOG
    return GOOD_CATALOG.replace(old, new, 1)


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
    env["METERING_BROKER_URL"] = f"kafka://127.0.0.1:{free_port()}"  # nothing listens there
    env["METERING_STORE_URL"] = f"chdb://{tmp_path / 'unused-store'}"
    return env


def run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [METERING, *args], env=env if env is not None else base_env(tmp_path), cwd=tmp_path,
        capture_output=True, text=True, timeout=120, check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The single stderr line of a failed command; it must mention every needle."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("metering: error: "), line
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture
def broker_env(broker: LocalBroker, tmp_path: Path) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    env = base_env(tmp_path)
    env.update({
        "METERING_BROKER_URL": broker.url,
        "METERING_EVENTS_TOPIC": f"cli-events-{tag}",
        "METERING_REJECTED_TOPIC": f"cli-rejected-{tag}",
        "METERING_CHARGES_TOPIC": f"cli-charges-{tag}",
        "METERING_PARTITIONS": "1",
    })
    return env


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        pytest.param(bad("    overage_price: '2.00'\n", "    overage_price: '2.00'\n"
                         "    bas_fee: '1.00'\n"), ["plans.power.bas_fee"], id="extra-field"),
        pytest.param(bad("base_fee: '10.00'", "base_fee: '-10.00'"), ["plans.power.base_fee"],
                     id="negative-price"),
        pytest.param(bad("currency: USD", "currency: XYZ"), ["plans.power.currency"],
                     id="unknown-currency"),
        pytest.param(bad("plan: power", "plan: gold"), ["accounts.0.plan", "gold"],
                     id="unknown-plan"),
        pytest.param(GOOD_CATALOG + "  - {team: team-daniel, plan: power, "
                     "start_date: 2026-01-01}\n", ["accounts.1.team"], id="duplicate-team"),
        pytest.param(bad("timezone: UTC", "timezone: Mars/Olympus"), ["accounts.0.timezone"],
                     id="unknown-zone"),
        pytest.param(bad("timezone: UTC", "timezone: America"), ["accounts.0.timezone"],
                     id="zone-is-a-folder"),
        pytest.param("plans:\n  power:\n\tname: x\n", ["line 3", "YAML"], id="invalid-yaml"),
        pytest.param("- just\n- a list\n", ["mapping"], id="not-a-mapping"),
        pytest.param(bad("start_date: 2026-07-04", "start_date: 2026-02-30"), ["bad.yaml"],
                     id="impossible-date"),
    ],
)
def test_close_with_bad_catalog(tmp_path: Path, text: str, needles: list[str]) -> None:
    (tmp_path / "bad.yaml").write_text(text, encoding="utf-8")
    result = run(tmp_path, "close", "--as-of", "2026-08-04", "--catalog", "bad.yaml")
    one_line_error(result, "bad.yaml", *needles)


def test_close_with_catalog_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_bytes(GOOD_CATALOG.replace("Power", "Pl\xe4n").encode("latin-1"))
    result = run(tmp_path, "close", "--as-of", "2026-08-04", "--catalog", "bad.yaml")
    one_line_error(result, "bad.yaml")


def test_close_with_missing_catalog_file(tmp_path: Path) -> None:
    result = run(tmp_path, "close", "--as-of", "2026-08-04", "--catalog", "nope.yaml")
    one_line_error(result, "nope.yaml", "cannot read")


def test_catalog_from_the_environment_is_checked_the_same_way(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(bad("currency: USD", "currency: XYZ"), encoding="utf-8")
    env = base_env(tmp_path)
    env["METERING_CATALOG"] = str(tmp_path / "bad.yaml")
    for args in (["close", "--as-of", "2026-08-04"], ["worker"], ["usage", "--team", "t"]):
        one_line_error(run(tmp_path, *args, env=env), "plans.power.currency")


def test_close_without_catalog(tmp_path: Path) -> None:
    result = run(tmp_path, "close", "--as-of", "2026-08-04")
    one_line_error(result, "catalog")


@pytest.mark.parametrize("value", ["2026-13-04", "tomorrow", "2026-08-04T25:00", ""])
def test_bad_as_of_is_a_usage_error(tmp_path: Path, value: str) -> None:
    (tmp_path / "good.yaml").write_text(GOOD_CATALOG, encoding="utf-8")
    result = run(tmp_path, "close", "--as-of", value, "--catalog", "good.yaml")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: metering close")
    assert "--as-of" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    "url", ["http://x", "kafka://hostonly", "kafka://h:notaport", "kafka://h:99999", ""]
)
def test_bad_broker_url_from_the_environment(tmp_path: Path, url: str) -> None:
    (tmp_path / "good.yaml").write_text(GOOD_CATALOG, encoding="utf-8")
    env = base_env(tmp_path)
    env["METERING_BROKER_URL"] = url
    result = run(tmp_path, "close", "--as-of", "2026-08-04", "--catalog", "good.yaml", env=env)
    one_line_error(result, "broker")


def test_bad_broker_url_flag(tmp_path: Path) -> None:
    result = run(tmp_path, "emit", "-", "--broker", "http://x")
    one_line_error(result, "broker", "http://x")


def test_bad_setting_from_the_environment(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    env["METERING_PARTITIONS"] = "many"
    one_line_error(run(tmp_path, "usage", "--team", "t", env=env), "partitions")


@pytest.mark.parametrize(
    "url", ["foo://x", "chdb://relative/path", "clickhouse://h:port/db", "clickhouse://h/bad-db"]
)
def test_bad_store_url(tmp_path: Path, url: str) -> None:
    result = run(tmp_path, "usage", "--team", "t", "--store", url)
    one_line_error(result, "store URL")


def test_bad_store_url_from_the_environment(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    env["METERING_STORE_URL"] = "foo://x"
    one_line_error(run(tmp_path, "usage", "--team", "t", env=env), "foo://x")


def test_unreachable_clickhouse_is_one_line(tmp_path: Path) -> None:
    """The driver logs a traceback for a refused connection unless logging is set up."""
    result = run(tmp_path, "usage", "--team", "t", "--store",
                 f"clickhouse://127.0.0.1:{free_port()}/db")
    one_line_error(result, "clickhouse")


def test_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_text("{}\n", encoding="utf-8")
    one_line_error(run(tmp_path, "emit", "events.jsonl"), "127.0.0.1")


def test_close_with_bad_store_url_after_the_broker(
    tmp_path: Path, broker_env: dict[str, str]
) -> None:
    (tmp_path / "good.yaml").write_text(GOOD_CATALOG, encoding="utf-8")
    result = run(tmp_path, "close", "--as-of", "2026-08-04", "--catalog", "good.yaml",
                 "--store", "foo://x", env=broker_env)
    one_line_error(result, "foo://x")


def test_emit_missing_file(tmp_path: Path, broker_env: dict[str, str]) -> None:
    result = run(tmp_path, "emit", "missing-file.jsonl", env=broker_env)
    one_line_error(result, "missing-file.jsonl")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["close", "--as-of", "9999-12-31"], "--as-of"),
        (["usage", "--team", "t", "--at", "0001-01-01"], "--at"),
    ],
)
def test_a_date_the_store_cannot_hold_is_a_usage_error(
    tmp_path: Path, args: list[str], flag: str
) -> None:
    (tmp_path / "good.yaml").write_text(GOOD_CATALOG, encoding="utf-8")
    result = run(tmp_path, *args, "--catalog", "good.yaml")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith(f"usage: metering {args[0]}")
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"metering {args[0]}: error: argument {flag}: date "), last
    assert "outside 1971-01-01..2104-12-31" in last, last
    assert not (tmp_path / "unused-store").exists()


def charges_end(broker: LocalBroker, topic: str) -> dict[int, int]:
    """The end offset of each partition of `topic`: a publish would move one."""
    consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{broker.port}")
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return {part.partition: offset for part, offset in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def test_a_close_ahead_of_now_is_refused_and_a_rehearsal_stores_nothing(
    tmp_path: Path, broker: LocalBroker, broker_env: dict[str, str]
) -> None:
    (tmp_path / "good.yaml").write_text(GOOD_CATALOG, encoding="utf-8")
    store_url = f"chdb://{tmp_path / 'store'}"
    env = {**broker_env, "METERING_STORE_URL": store_url, "METERING_CATALOG": "good.yaml"}
    closed = run(tmp_path, "close", "--as-of", "2026-08-04", "--json", env=env)
    assert closed.returncode == 0, closed.stderr
    issued = [json.dumps(invoice, separators=(",", ":")) for invoice in json.loads(closed.stdout)]
    assert len(issued) == 2  # 2026-07-04 and 2026-08-04
    topic = env["METERING_CHARGES_TOPIC"]
    published = charges_end(broker, topic)
    assert sum(published.values()) > 0

    refused = run(tmp_path, "close", "--as-of", "2104-12-31", "--json", env=env)
    line = one_line_error(refused, "--as-of 2104-12-31", "later than now", "--rehearsal")
    assert refused.returncode == 2, line
    assert refused.stdout == ""

    rehearsal = run(tmp_path, "close", "--as-of", "2027-12-31", "--rehearsal", "--json", env=env)
    assert rehearsal.returncode == 0, rehearsal.stderr
    assert "Traceback" not in rehearsal.stderr
    shown = json.loads(rehearsal.stdout)
    assert rehearsal.stdout.startswith("[" + ", ".join(issued) + ", ")  # the stored bytes
    assert [invoice["invoice_date"] for invoice in shown[-2:]] == ["2027-11-04", "2027-12-04"]
    assert rehearsal.stderr == (
        f"rehearsal, nothing stored or published: would issue {len(shown) - 2} new invoices; "
        f"{len(shown)} due as of 2027-12-31T23:59:59.999999+00:00; 1 teams in "
        f"{rehearsal.stderr.split(' teams in ')[1]}")

    assert charges_end(broker, topic) == published
    store = open_store(store_url)  # after the last command: one process owns a chdb path
    try:
        assert [invoice.body for invoice in store.invoices()] == issued
        assert len(store.leases("close")) == 1  # the real close's lease rows, no other holder
    finally:
        store.close()
