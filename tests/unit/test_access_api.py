"""The lifecycle surfaces of the read API (metering/api/app.py) on the in-memory store:
`GET /v1/teams/{team}/access` (what a product service asks before a login), the teams of a
billing account, and credit notes and payment terms passing through the invoice endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from aggregation import MemoryStore, StoredInvoice, StoredPayment, StoreError
from invoicing import read_access
from metering.api.app import create_api
from metering.settings import Settings
from schemas import Catalog, CreditedInvoice, Invoice, InvoiceLine, LineKind, PaymentEvent
from tests.builders import account, catalog, rfc3339

Client = httpx.AsyncClient
AUGUST = date(2026, 8, 4)
NOW = datetime(2026, 8, 12, 9, tzinfo=UTC)
TOKEN = "tok-access"  # noqa: S105 - a test token
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# team-a pays on NET 30 terms and is in good standing; team-b's card failed four times
# (the first charge and the default policy's three retries): suspended. team-c is billed
# to nobody else.
CATALOG = catalog(
    account("team-a", "2026-07-04", billing_account="acme-corp", payment_terms="NET 30"),
    account("team-b", "2026-07-04", billing_account="acme-corp"),
    account("team-c", "2026-07-04"),
)
FAILURES = [datetime(2026, 8, day, 0, 5, tzinfo=UTC) for day in (4, 7, 9, 11)]
# invoicing/credit_notes.py: "refund/" + the refund change's "source/id"
CREDIT_NOTE_REFERENCE = "refund/crm/r1"


def _line(kind: LineKind, amount: str, start: date, end: date) -> InvoiceLine:
    return InvoiceLine(kind=kind, description=f"{kind} {start} to {end}",
                       quantity="1", unit_price=amount, amount=amount, service_start=start,
                       service_end=end)


def _stored(invoice: Invoice) -> StoredInvoice:
    return StoredInvoice(team=invoice.team, invoice_date=invoice.invoice_date,
                         body=invoice.canonical_json(), reference=invoice.reference,
                         usage=invoice.usage)


def _base_invoice(team: str, **fields: Any) -> Invoice:
    return Invoice(team=team, invoice_date=AUGUST, currency="USD",
                   lines=(_line("base", "10.00", AUGUST, date(2026, 9, 4)),),
                   subtotal="10.00", tax="0.00", total="10.00", **fields)


def _credit_note(reference: str = CREDIT_NOTE_REFERENCE) -> Invoice:
    """team-a's August base fee refunded (seed 000 "Refunds"): its own document."""
    return Invoice(team="team-a", invoice_date=date(2026, 8, 10), currency="USD",
                   reference=reference, document="credit_note", number="CN-0001",
                   credits=CreditedInvoice(invoice_date=AUGUST),
                   lines=(_line("credit", "-10.00", AUGUST, date(2026, 9, 4)),),
                   subtotal="-10.00", tax="0.00", total="-10.00")


def _failed(team: str, attempt: int, at: datetime) -> StoredPayment:
    return StoredPayment.of(PaymentEvent.model_validate({
        "specversion": "1.0", "id": f"pay-{team}-{attempt}", "source": "stripe",
        "type": "payment_failed", "time": rfc3339(at), "subject": team,
        "data": {"invoice": {"invoice_date": AUGUST.isoformat(), "reference": ""},
                 "attempt": attempt, "amount": "10.00", "currency": "USD",
                 "failure": "card_declined"},
    }))


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.ensure_schema()
    store.add_invoices([
        _stored(_base_invoice("team-a", payment_terms="NET 30", due_date=date(2026, 9, 3))),
        _stored(_credit_note()),
        _stored(_base_invoice("team-b")),
    ])
    store.add_payments([_failed("team-b", n, at) for n, at in enumerate(FAILURES, start=1)])
    return store


def _client(store: MemoryStore, catalog: Catalog = CATALOG) -> Client:
    """The app in process (starlette's TestClient warns that it is deprecated with httpx)."""
    settings = Settings(api_tokens=(SecretStr(TOKEN),))
    app = create_api(settings=settings, store=store, catalog=catalog,
                     registry=CollectorRegistry(), clock=lambda: NOW)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api",
                             headers=AUTH)


@pytest.fixture
async def client(store: MemoryStore) -> AsyncIterator[Client]:
    async with _client(store) as opened:
        yield opened


ACCESS_FIELDS = {"team", "state", "since", "why", "login_allowed", "billing_paused_until"}


async def _json(client: Client, path: str) -> Any:
    answer = await client.get(path)
    assert answer.status_code == 200, (path, answer.text)
    return answer.json()


async def test_an_active_team_may_log_in(client: Client, store: MemoryStore) -> None:
    body = await _json(client, "/v1/teams/team-a/access")
    assert set(body) == ACCESS_FIELDS
    assert (body["team"], body["state"], body["login_allowed"]) == ("team-a", "active", True)
    assert (body["since"], body["billing_paused_until"]) == (None, None)
    assert body["why"] == read_access(store, CATALOG, "team-a", NOW).why
    assert body["why"] and "\n" not in body["why"]


async def test_a_suspended_team_may_not(client: Client, store: MemoryStore) -> None:
    body = await _json(client, "/v1/teams/team-b/access")
    assert (body["state"], body["login_allowed"]) == ("suspended", False)
    assert body["since"] == "2026-08-11T00:05:00Z"  # the fourth failure, RFC 3339 in UTC
    assert "2026-08-04" in body["why"]
    access = read_access(store, CATALOG, "team-b", NOW)
    assert body["why"] == access.why and access.since == FAILURES[-1]


async def test_the_teams_link_to_their_access(client: Client) -> None:
    links = (await _json(client, "/v1/teams/team-b"))["links"]
    assert links["access"] == "/v1/teams/team-b/access"
    assert (await _json(client, links["access"]))["team"] == "team-b"


async def test_an_unknown_team_is_404_like_the_other_team_endpoints(client: Client) -> None:
    for path in ("/v1/teams/nobody/access", "/v1/teams/nobody/invoices"):
        answer = await client.get(path)
        assert answer.status_code == 404, path
        assert answer.json() == {"detail": "unknown team 'nobody': not in the catalog"}


async def test_access_needs_a_bearer_token(client: Client) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer nope"}):
        answer = await client.get("/v1/teams/team-a/access", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
    # nor does an unauthenticated caller learn which teams or accounts exist
    for path in ("/v1/teams/nobody/access", "/v1/accounts/acme-corp", "/v1/accounts/nobody"):
        assert (await client.get(path, headers={"Authorization": ""})).status_code == 401


class _DownStore(MemoryStore):
    """A store whose reads fail, as an unreachable ClickHouse does."""

    def payments(self, team: str) -> list[StoredPayment]:
        raise StoreError("ClickHouse at 127.0.0.1:9 did not answer within 5 s (timeout)")

    def invoices(self, team: str | None = None) -> list[StoredInvoice]:
        raise StoreError("ClickHouse at 127.0.0.1:9 did not answer within 5 s (timeout)")


async def test_a_store_error_is_503() -> None:
    down = _DownStore()
    down.ensure_schema()
    async with _client(down) as client:
        for path in ("/v1/teams/team-a/access", "/v1/accounts/acme-corp"):
            answer = await client.get(path)
            assert answer.status_code == 503, path
            assert answer.json() == {"detail": "store unavailable; try again later"}
            assert answer.headers["retry-after"] == "5"


async def test_a_billing_account_lists_its_teams_each_invoiced_separately(
    client: Client,
) -> None:
    body = await _json(client, "/v1/accounts/acme-corp")
    assert body["account"] == "acme-corp"
    assert [team["team"] for team in body["teams"]] == ["team-a", "team-b"]  # not team-c
    first, second = body["teams"]
    assert first["link"] == "/v1/teams/team-a"
    assert (first["access"]["state"], first["access"]["login_allowed"]) == ("active", True)
    assert (second["access"]["state"], second["access"]["login_allowed"]) == (
        "suspended", False)
    for team in body["teams"]:
        path = f"/v1/teams/{team['team']}"
        assert team["access"] == await _json(client, f"{path}/access")
        # the same invoices and credit notes, shapes and links as the team's own list
        assert team["invoices"] == (await _json(client, f"{path}/invoices"))["invoices"]
        assert {invoice["team"] for invoice in team["invoices"]} == {team["team"]}
    assert [(inv["document"], inv["total"]) for inv in first["invoices"]] == [
        ("invoice", "10.00"), ("credit_note", "-10.00")]
    assert [inv["link"] for inv in second["invoices"]] == ["/v1/teams/team-b/invoices/2026-08-04"]


@pytest.mark.parametrize("name", ["nobody", "team-c"])
async def test_an_unknown_billing_account_is_404(client: Client, name: str) -> None:
    answer = await client.get(f"/v1/accounts/{name}")
    assert answer.status_code == 404
    assert answer.json() == {
        "detail": f"unknown billing account {name!r}: no team of the catalog has it"}


async def test_credit_notes_and_payment_terms_pass_through_the_invoice_endpoints(
    client: Client,
) -> None:
    invoice, note = (await _json(client, "/v1/teams/team-a/invoices"))["invoices"]
    assert (invoice["document"], invoice["number"], invoice["credits"]) == (
        "invoice", None, None)
    assert (invoice["payment_terms"], invoice["due_date"]) == ("NET 30", "2026-09-03")
    credited_link = "/v1/teams/team-a/invoices/2026-08-04"
    assert invoice["link"] == credited_link
    assert note["document"] == "credit_note" and note["number"] == "CN-0001"
    assert note["credits"] == {"invoice_date": "2026-08-04", "reference": "",
                               "link": credited_link}
    assert (note["payment_terms"], note["due_date"]) == (None, None)
    assert note["link"] == "/v1/teams/team-a/invoices/2026-08-10?reference=refund%2Fcrm%2Fr1"
    # every line of a credit note is there because of the invoice it credits
    assert [line["why"] for line in note["lines"]] == [credited_link]
    assert await _json(client, note["link"]) == note
    assert await _json(client, note["credits"]["link"]) == invoice


async def test_a_credit_note_of_the_longest_refund_reference_is_served(
    client: Client, store: MemoryStore,
) -> None:
    longest = f"refund/{'s' * 256}/{'i' * 256}"  # a source and an id of 256 characters
    store.add_invoices([_stored(_credit_note(longest))])
    notes = [inv for inv in (await _json(client, "/v1/teams/team-a/invoices"))["invoices"]
             if inv["reference"] == longest]
    assert len(notes) == 1
    assert (await _json(client, notes[0]["link"]))["reference"] == longest


async def test_the_api_document_describes_the_lifecycle_endpoints(client: Client) -> None:
    doc = await _json(client, "/openapi.json")
    assert {"/v1/teams/{team}/access", "/v1/accounts/{account}"} <= set(doc["paths"])
    access = doc["components"]["schemas"]["AccessOut"]
    assert set(access["properties"]) == ACCESS_FIELDS
    invoice = doc["components"]["schemas"]["InvoiceOut"]["properties"]
    assert {"document", "number", "credits", "payment_terms", "due_date"} <= set(invoice)
