"""The lifecycle commands as real processes: `metering status --team T --json` on a ClickHouse
server holding an invoice and its failed payments, and `metering emit --payments` sending
the good line of a file to the payments topic and reporting the bad one by its number."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from aggregation import StoredInvoice, StoredPayment, open_store
from metering.local.services import LocalBroker, LocalClickHouse, free_port
from schemas import Invoice, InvoiceLine, PaymentEvent
from tests.builders import account, catalog_yaml, rfc3339
from tests.integration.pipeline import METERING, consume_all

AUGUST = date(2026, 8, 4)


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
    env["METERING_BROKER_URL"] = f"kafka://127.0.0.1:{free_port()}"  # nothing listens there
    env.update({f"METERING_{name.upper()}": value for name, value in settings.items()})
    return env


def _run(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([METERING, *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)


def _payment(attempt: int, at: datetime, **data: object) -> dict[str, object]:
    return {"specversion": "1.0", "id": f"pay-{attempt}", "source": "stripe",
            "type": "payment_failed", "time": rfc3339(at), "subject": "team-b",
            "data": {"invoice": {"invoice_date": AUGUST.isoformat()}, "attempt": attempt,
                     "amount": "10.00", "currency": "USD", "failure": "card_declined", **data}}


def test_status_of_a_suspended_team_from_a_clickhouse_server(
    tmp_path: Path, clickhouse_server: LocalClickHouse
) -> None:
    url = f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/test_{uuid.uuid4().hex}"
    line = InvoiceLine(kind="base", description="Power plan", quantity="1", unit_price="10.00",
                       amount="10.00", service_start=AUGUST, service_end=date(2026, 9, 4))
    invoice = Invoice(team="team-b", invoice_date=AUGUST, currency="USD", lines=(line,),
                      subtotal="10.00", tax="0.00", total="10.00")
    # four failures (the default policy suspends at four) ending a day ago: suspended now
    last = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    failures = [last - timedelta(days=days) for days in (7, 4, 2, 0)]
    store = open_store(url)
    try:
        store.ensure_schema()
        store.add_invoices([StoredInvoice(team="team-b", invoice_date=AUGUST,
                                          body=invoice.canonical_json())])
        store.add_payments([StoredPayment.of(PaymentEvent.model_validate(_payment(n, at)))
                            for n, at in enumerate(failures, start=1)])
    finally:
        store.close()
    (tmp_path / "catalog.yaml").write_text(catalog_yaml(account("team-b", "2026-07-04")),
                                           encoding="utf-8")
    env = _env(tmp_path, store_url=url, catalog="catalog.yaml")

    shown = _run(tmp_path, env, "status", "--team", "team-b", "--json")
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""
    body = json.loads(shown.stdout)
    why = body.pop("why")
    assert body == {"team": "team-b", "state": "suspended", "since": rfc3339(last),
                    "login_allowed": False, "billing_paused_until": None}
    assert "4 failed payments" in why and "2026-08-04" in why, why

    unknown = _run(tmp_path, env, "status", "--team", "nobody")
    assert (unknown.returncode, unknown.stdout) == (2, "")
    assert unknown.stderr == "metering: error: unknown team 'nobody': not in the catalog\n"


def test_emit_payments_sends_the_good_line_and_reports_the_bad_one(
    tmp_path: Path, broker: LocalBroker
) -> None:
    tag = uuid.uuid4().hex[:8]
    topic = f"cli-payments-{tag}"
    good = json.dumps(_payment(1, datetime(2026, 8, 4, 0, 5, tzinfo=UTC)))
    bad = json.dumps(_payment(2, datetime(2026, 8, 7, 0, 5, tzinfo=UTC), amount="ten"))
    (tmp_path / "outcomes.jsonl").write_text(f"{good}\n{bad}\n", encoding="utf-8")
    # every topic emit makes sure of is this test's own
    topics = {f"{name}_topic": f"cli-{name}-{tag}" for name in (
        "events", "rejected", "charges", "changes", "changes_rejected", "payments_rejected",
        "notices")}
    env = _env(tmp_path, broker_url=broker.url, payments_topic=topic, partitions="1",
               **topics)

    sent = _run(tmp_path, env, "emit", "--payments", "outcomes.jsonl")
    assert sent.returncode == 1, sent.stderr  # a line was rejected
    assert sent.stdout == "sent 1 payments; rejected 1 lines\n"
    line, = sent.stderr.splitlines()
    assert line.startswith("line 2: invalid_payment: ") and "ten" in line, line
    assert [(key, value) for key, value, _ in consume_all(broker.bootstrap, topic)] == [
        (b"team-b", good.encode())]
