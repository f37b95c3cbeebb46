"""The close's lifecycle step on the real broker and embedded chdb (metering/closing.py,
metering/lifecycle.py): a declined card runs the dunning schedule to a pause, each notice is
published once across reruns, a paused team is not invoiced, a refund's credit note is
recorded and published beside the invoices it credits, and a deletion removes that team's
usage and nothing else."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregation import StoredChange, StoredPayment, open_store
from aggregation.store import ActiveUserRow, Store
from invoicing import read_access
from metering.closing import run_close
from metering.local.services import LocalBroker
from metering.runtime import load_settings_catalog
from metering.settings import Settings
from schemas import BillingChange, Catalog, PaymentEvent
from tests.builders import account, billing_change, catalog_yaml
from tests.integration.pipeline import consume_all

CATALOG = catalog_yaml(account("team-late", "2026-07-04"), account("team-ok", "2026-07-04"),
                       account("team-gone", "2026-07-04"))
AUG4 = datetime(2026, 8, 4, tzinfo=UTC)


@pytest.fixture
def settings(broker: LocalBroker, tmp_path: Path) -> Settings:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG, encoding="utf-8")
    tag = uuid.uuid4().hex[:8]
    return Settings(broker_url=broker.url, store_url=f"chdb://{tmp_path / 'chdb'}",
                    catalog=catalog, charges_topic=f"charges-{tag}",
                    notices_topic=f"notices-{tag}", partitions=1)


def _store(settings: Settings) -> Store:
    store = open_store(settings.store_url)
    store.ensure_schema()
    return store


def _payment(team: str, kind: str, at: datetime, ident: str, amount: str = "10.00",
             attempt: int = 1) -> StoredPayment:
    return StoredPayment.of(PaymentEvent.model_validate({
        "specversion": "1.0", "id": ident, "source": "stripe", "type": kind,
        "time": at.isoformat(), "subject": team,
        "data": {"invoice": {"invoice_date": "2026-07-04"}, "attempt": attempt,
                 "amount": amount, "currency": "USD"}}))


def _close(settings: Settings, as_of: datetime) -> list[dict[str, Any]]:
    issued: list[dict[str, Any]] = []
    run_close(settings, catalog=load_settings_catalog(settings, required=True), as_of=as_of,
              team=None, on_due=lambda invoice, new: issued.append(json.loads(invoice.body))
              if new else None)
    return issued


def _records(settings: Settings, topic: str) -> list[dict[str, Any]]:
    return [json.loads(value) for _key, value, _headers in consume_all(settings.broker_url,
                                                                       topic)]


def test_dunning_refund_and_deletion_through_the_close(settings: Settings) -> None:
    store = _store(settings)
    try:
        at = datetime(2026, 7, 10, tzinfo=UTC)
        store.add_active_users([ActiveUserRow(team, date(2026, 7, 4), f"u{n}", at, f"e{n}",
                                              "t", "login")
                                for team in ("team-ok", "team-gone") for n in range(3)])
        first = _close(settings, datetime(2026, 7, 5, tzinfo=UTC))
        assert sorted(i["team"] for i in first) == ["team-gone", "team-late", "team-ok"]
        # team-late's card is declined four times (the first charge and three retries);
        # team-ok pays and later asks for 4.00 back; team-gone asks to be deleted.
        july = datetime(2026, 7, 4, 0, 5, tzinfo=UTC)
        store.add_payments([_payment("team-late", "payment_failed", july + timedelta(days=d),
                                     f"f{n}", attempt=n)
                            for n, d in ((1, 0), (2, 3), (3, 5), (4, 7))])
        store.add_payments([_payment("team-ok", "payment_succeeded", july, "ok1")])
        refund: BillingChange = billing_change(
            "team-ok", "r1", "2026-07-20T10:00:00Z", "refund_requested", source="support",
            invoice={"invoice_date": "2026-07-04"}, amount="4.00")
        gone = billing_change("team-gone", "d1", "2026-07-20T10:00:00Z", "delete_requested",
                              by="owner")
        store.add_changes([StoredChange.of(refund), StoredChange.of(gone)])

        # 4 Aug + grace: team-late was paused on 25 July (suspended 11 July + 14 days).
        second = _close(settings, AUG4 + timedelta(hours=2))
        issued = sorted((i["team"], i["invoice_date"], i.get("document", "invoice"))
                        for i in second)
        assert issued == [("team-ok", "2026-07-20", "credit_note"),
                          ("team-ok", "2026-08-04", "invoice")]
        note = next(i for i in second if i.get("document") == "credit_note")
        assert (note["total"], note["credits"], note["number"]) == (
            "-4.00", {"invoice_date": "2026-07-04", "reference": ""},
            "CN-team-ok-20260720-1")
        charges = _records(settings, settings.charges_topic)
        assert note in charges

        notices = _records(settings, settings.notices_topic)
        assert [(n["subject"], n["type"]) for n in notices] == [
            ("team-gone", "team_deleted"),
            ("team-late", "payment_failed_notice"),
            ("team-late", "payment_retry_due"),
            ("team-late", "payment_retry_due"),
            ("team-late", "payment_retry_due"),
            ("team-late", "team_suspended"),
            ("team-late", "team_paused"),
        ]
        # Deleted: team-gone's usage is gone, team-ok's intact; invoices kept.
        assert store.mau("team-gone", date(2026, 7, 4)) == 0
        assert store.mau("team-ok", date(2026, 7, 4)) == 3
        assert [i.team for i in store.invoices("team-gone")] == ["team-gone"]

        catalog: Catalog = load_settings_catalog(settings, required=True)
        access = read_access(store, catalog, "team-late", AUG4)
        assert (access.state, access.login_allowed) == ("paused", False)

        # A rerun publishes nothing again and issues nothing again.
        assert _close(settings, AUG4 + timedelta(hours=3)) == []
        assert len(_records(settings, settings.notices_topic)) == len(notices)

        # The late payment settles the invoice: reactivated, and invoiced again from then.
        store.add_payments([_payment("team-late", "payment_succeeded",
                                     datetime(2026, 8, 10, tzinfo=UTC), "p5", attempt=5)])
        third = _close(settings, datetime(2026, 9, 4, 2, tzinfo=UTC))
        assert ("team-late", "2026-09-04") in {(i["team"], i["invoice_date"]) for i in third}
        assert ("team-late", "2026-08-04") not in {(i["team"], i["invoice_date"])
                                                   for i in third}
        last = _records(settings, settings.notices_topic)[-1]
        assert (last["subject"], last["type"]) == ("team-late", "team_reactivated")
    finally:
        store.close()
