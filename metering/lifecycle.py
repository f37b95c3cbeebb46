"""The close's lifecycle step: derive each team's state, keep paused teams from being
invoiced, issue the credit notes of refunds, remove deleted teams' usage, publish each step
once on `billing-notices`.

Only teams whose state can differ from active are derived (`lifecycle_accounts`): accounts
on payment terms, teams with a failed payment or a new card on record, and teams with a
change that ends, resumes, takes over or deletes a subscription. Every other team is active,
and costs the close nothing.

Notices are published at least once and recorded once: a notice whose (team, id) is in the
store's `billing_notices` is never sent again; one is recorded only after the broker
acknowledged it, so a close killed in between sends it again on its next run, under the same
id (ids are functions of the team, the step and its moment), which consumers take once.
A deleted team's usage is removed before its `team_deleted` notice is recorded: a killed
run removes it again (nothing left to remove) and then records it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from aggregation import Store, StoredInvoice, StoredNotice
from invoicing import (
    BillingRuleError,
    CloseError,
    Lifecycle,
    due_credit_notes,
    in_effect_order,
    read_lifecycle,
)
from metering.charges import ChargePublisher
from schemas import Account, Catalog, Invoice

__all__ = [
    "LifecycleRun",
    "carry_out",
    "credit_notes_due",
    "derive",
    "lifecycle_accounts",
    "not_invoiced",
]

# Changes after which a team's state may differ from active (billing changes of other kinds
# only change what is billed).
_STATE_CHANGES = frozenset({"cancel", "resume", "leave", "take_over", "delete_requested"})
_DUNNING_PAYMENTS = ('"type":"payment_failed"', '"type":"payment_method_updated"')


@dataclass(frozen=True, slots=True)
class LifecycleRun:
    notices: int  # published by this run
    deleted: tuple[str, ...]  # teams whose usage this run removed


def _accounts(catalog: Catalog, team: str | None) -> Sequence[Account]:
    if team is None:
        return catalog.accounts
    return tuple(account for account in (catalog.account(team),) if account is not None)


def _found(catalog: Catalog, teams: set[str]) -> list[Account]:
    found = (catalog.account(name) for name in sorted(teams))
    return [account for account in found if account is not None]


def lifecycle_accounts(store: Store, catalog: Catalog, team: str | None = None
                       ) -> list[Account]:
    """The accounts (of `team` only, when given) whose state may differ from active, in
    byte order of team."""
    accounts = _accounts(catalog, team)
    if not accounts:
        return []
    teams = {account.team for account in accounts if account.payment_terms is not None}
    first = min(account.team for account in accounts)
    last = max(account.team for account in accounts)
    teams.update(stored.team for stored in store.payments_between(first, last)
                 if any(kind in stored.body for kind in _DUNNING_PAYMENTS))
    teams.update(stored.team for stored in store.changes_between(first, last)
                 if stored.change().type in _STATE_CHANGES)
    return _found(catalog, teams)


def credit_notes_due(store: Store, catalog: Catalog, *, as_of: datetime, grace: timedelta,
                     team: str | None = None) -> list[StoredInvoice]:
    """The credit notes of stored refunds due by `as_of` and not issued yet, team by team
    (CloseError when a refund no longer applies: only a catalog edit can do that)."""
    accounts = _accounts(catalog, team)
    if not accounts:
        return []
    first = min(account.team for account in accounts)
    last = max(account.team for account in accounts)
    refunding = {stored.team for stored in store.changes_between(first, last)
                 if '"refund_requested"' in stored.body}
    notes: list[StoredInvoice] = []
    for account in _found(catalog, refunding):
        changes = in_effect_order([stored.change() for stored in store.changes(account.team)])
        documents = [Invoice.model_validate_json(s.body) for s in store.invoices(account.team)]
        payments = [stored.payment() for stored in store.payments(account.team)]
        try:
            due = due_credit_notes(account, changes=changes, documents=documents,
                                   payments=payments, as_of=as_of, grace=grace)
        except BillingRuleError as exc:
            raise CloseError(str(exc)) from exc
        notes.extend(StoredInvoice(note.team, note.invoice_date, note.canonical_json(),
                                   note.reference) for note in due)
    return notes


def derive(store: Store, catalog: Catalog, accounts: Sequence[Account], now: datetime
           ) -> dict[str, Lifecycle]:
    """Each account's lifecycle as of `now` (CloseError for a history that cannot apply)."""
    return {account.team: read_lifecycle(store, catalog, account, now) for account in accounts}


def not_invoiced(lives: Mapping[str, Lifecycle]) -> dict[str, tuple[tuple[date, date | None],
                                                                  ...]]:
    """Per team, the local dates whose billing-date invoice the close does not issue."""
    return {team: life.not_invoiced for team, life in lives.items() if life.not_invoiced}


def carry_out(store: Store, notices: ChargePublisher, lives: Mapping[str, Lifecycle]
              ) -> LifecycleRun:
    """Remove the usage of teams deleted and not yet recorded so, then publish and record
    every notice not recorded yet."""
    recorded = store.notice_ids(sorted(lives))
    fresh = [notice for team, life in sorted(lives.items()) for notice in life.notices
             if (team, notice.id) not in recorded]
    deleted = tuple(sorted({notice.subject for notice in fresh
                            if notice.type == "team_deleted"}))
    for team in deleted:
        store.delete_usage(team)
    if fresh:
        bodies = [(notice.subject, notice.model_dump_json()) for notice in fresh]
        notices.send(bodies, noun="notices")
        store.add_notices([StoredNotice(team=notice.subject, notice_id=notice.id,
                                        time=notice.time, body=body)
                           for notice, (_, body) in zip(fresh, bodies, strict=True)])
    return LifecycleRun(notices=len(fresh), deleted=deleted)
