"""`metering status --team T [--json]` in process on the in-memory store: the access endpoint's
answer as a short table or the same JSON object; an unknown team is one line and exit 2, a
store error one line and exit 1; and `metering emit --payments` refuses a file it cannot
read with one line and exit 2 before it reaches for the broker."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from aggregation import MemoryStore, StoredInvoice, StoredPayment, StoreError
from metering import logs
from metering.api.app import create_api
from metering.cli import commands
from metering.cli.main import build_parser, main
from metering.producer import EmitReport
from metering.settings import Settings
from schemas import Invoice, InvoiceLine, PaymentEvent, parse_catalog
from tests.builders import account, catalog_yaml, rfc3339

AUGUST = date(2026, 8, 4)
CATALOG_TEXT = catalog_yaml(account("team-a", "2026-07-04"), account("team-b", "2026-07-04"))


def _invoice(team: str) -> StoredInvoice:
    line = InvoiceLine(kind="base", description="Power plan", quantity="1", unit_price="10.00",
                       amount="10.00", service_start=AUGUST, service_end=date(2026, 9, 4))
    body = Invoice(team=team, invoice_date=AUGUST, currency="USD", lines=(line,),
                   subtotal="10.00", tax="0.00", total="10.00")
    return StoredInvoice(team=team, invoice_date=AUGUST, body=body.canonical_json())


def _failed(team: str, attempt: int, at: datetime) -> StoredPayment:
    return StoredPayment.of(PaymentEvent.model_validate({
        "specversion": "1.0", "id": f"pay-{attempt}", "source": "stripe",
        "type": "payment_failed", "time": rfc3339(at), "subject": team,
        "data": {"invoice": {"invoice_date": AUGUST.isoformat()}, "attempt": attempt,
                 "amount": "10.00", "currency": "USD", "failure": "card_declined"},
    }))


# team-b's four failures end a day ago: suspended now (the default policy pauses after 14
# days), whatever the day the test runs.
FOURTH_FAILURE = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
FAILURES = [FOURTH_FAILURE - timedelta(days=days) for days in (7, 4, 2, 0)]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MemoryStore:
    store = MemoryStore()
    store.ensure_schema()
    store.add_invoices([_invoice("team-a"), _invoice("team-b")])
    store.add_payments([_failed("team-b", n, at) for n, at in enumerate(FAILURES, start=1)])
    monkeypatch.setattr(commands, "open_ready_store", lambda _settings: store)
    monkeypatch.setattr(logs, "configure", lambda _settings: None)  # the test's logging stays
    monkeypatch.chdir(tmp_path)
    (tmp_path / "catalog.yaml").write_text(CATALOG_TEXT, encoding="utf-8")
    for name in ("METERING_CATALOG", "METERING_STORE_URL", "METERING_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    return store


def _run(*argv: str) -> int:
    with pytest.raises(SystemExit) as caught:
        main([*argv, "--catalog", "catalog.yaml", "--broker", "kafka://127.0.0.1:1"])
    code = caught.value.code
    assert isinstance(code, int)
    return code


ACCESS_FIELDS = {"team", "state", "since", "why", "login_allowed", "billing_paused_until"}


def test_json_is_the_access_endpoints_object(
    store: MemoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run("status", "--team", "team-b", "--json") == 0
    out, err = capsys.readouterr()
    assert err == ""
    shown = json.loads(out)
    assert out.count("\n") == 1 and set(shown) == ACCESS_FIELDS
    assert (shown["team"], shown["state"], shown["login_allowed"]) == (
        "team-b", "suspended", False)
    assert shown["since"] == rfc3339(FOURTH_FAILURE)
    assert shown["billing_paused_until"] is None
    assert "failed payments" in shown["why"] and "2026-08-04" in shown["why"]


async def test_json_is_what_the_api_answers(
    store: MemoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    api = create_api(settings=Settings(), store=store, catalog=parse_catalog(CATALOG_TEXT),
                     registry=CollectorRegistry(), clock=lambda: datetime.now(UTC))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api),
                                 base_url="http://api") as client:
        for team in ("team-a", "team-b"):
            assert _run("status", "--team", team, "--json") == 0
            answer = await client.get(f"/v1/teams/{team}/access")
            assert json.loads(capsys.readouterr().out) == answer.json()


def test_an_active_team_as_json(store: MemoryStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("status", "--team", "team-a", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["state"], shown["since"], shown["login_allowed"]) == ("active", None, True)


def test_the_table_says_the_same(store: MemoryStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("status", "--team", "team-b", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert _run("status", "--team", "team-b") == 0
    out, err = capsys.readouterr()
    assert err == ""
    rows = {line[:21].strip(): line[22:] for line in out.splitlines()}
    assert rows == {
        "team": "team-b", "state": "suspended",
        "since": FOURTH_FAILURE.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "login allowed": "no", "why": shown["why"],
    }
    assert _run("status", "--team", "team-a") == 0
    out = capsys.readouterr().out
    assert "since                 since the start" in out.splitlines()
    assert "login allowed         yes" in out.splitlines()


def test_an_unknown_team_is_one_line_and_exit_2(
    store: MemoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["status", "--team", "nobody"], ["status", "--team", "nobody", "--json"]):
        assert _run(*argv) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err == "metering: error: unknown team 'nobody': not in the catalog\n"


def test_a_store_error_is_one_line_and_exit_1(
    store: MemoryStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def down(_team: str) -> list[StoredPayment]:
        raise StoreError("ClickHouse at 127.0.0.1:9 is unreachable (connection refused)")

    monkeypatch.setattr(store, "payments", down)
    assert _run("status", "--team", "team-a") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("metering: error: ClickHouse at 127.0.0.1:9 is unreachable (connection "
                   "refused)\n")


def test_status_is_listed_with_the_other_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    assert "status" in listed and "lifecycle state and whether login is allowed" in listed


def test_emit_takes_one_kind_of_line() -> None:
    args = build_parser().parse_args(["emit", "--payments", "outcomes.jsonl"])
    assert (args.payments, args.changes, args.file) == (True, False, "outcomes.jsonl")
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["emit", "--payments", "--changes", "x.jsonl"])
    assert caught.value.code == 2


def test_an_unreadable_payments_file_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(logs, "configure", lambda _settings: None)

    def no_broker(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the broker was asked before the file was read")

    monkeypatch.setattr(commands, "ensure_topics", no_broker)
    for source in (str(tmp_path / "missing.jsonl"), str(tmp_path)):
        with pytest.raises(SystemExit) as caught:
            main(["emit", "--payments", source, "--broker", "kafka://127.0.0.1:1"])
        assert caught.value.code == 2
        out, err = capsys.readouterr()
        assert out == ""
        line, = err.splitlines()
        assert line.startswith(f"metering: error: {source}: cannot read (")


def test_payments_go_to_the_payments_topic(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    sent: list[tuple[str, list[bytes]]] = []

    def fake_emit(lines: Iterable[bytes], *, producer: object, topic: str) -> EmitReport:
        sent.append((topic, list(lines)))
        return EmitReport(sent=1)

    class Producer:
        def close(self) -> None:
            pass

    monkeypatch.setattr(commands, "emit_payments", fake_emit)
    monkeypatch.setattr(commands, "ensure_topics", lambda *_args, **_kwargs: None)
    monkeypatch.setattr(commands, "make_producer", lambda _servers: Producer())
    (tmp_path / "outcomes.jsonl").write_bytes(b'{"a": 1}\n')
    settings = Settings(payments_topic="pay-topic", broker_url="kafka://127.0.0.1:1")
    args = argparse.Namespace(file=str(tmp_path / "outcomes.jsonl"), changes=False,
                              payments=True)
    assert commands.emit(args, settings) == 0
    assert sent == [("pay-topic", [b'{"a": 1}\n'])]
