"""Publish each crossing of a catalog usage threshold once on `billing-alerts`.

`check_alerts` reads, for the accounts with `alerts`, the open period's active users (and
the previous period's, while its late events still count: its end plus the grace), and, for
an account with an `estimate` threshold not yet recorded as crossed, the running estimate
(invoicing.estimate, the close's own rating); it finds the crossings
(invoicing/alerts.py) whose notice the store does not hold, and publishes them as CloudEvents
keyed by team. As lifecycle notices (metering/lifecycle.py): a crossing is published at
least once and recorded once, in the store's `billing_notices` under an id that is a
function of the team, the threshold and the period (`acme/alert/mau>=100/2026-12-01`);
one whose (team, id) is stored is never sent again, and one is recorded only after the
broker acknowledged it (a process killed in between sends it again, under the same id).

Workers check on a timer, and `metering serve` beside its periodic close: whichever gets the
`alerts` lease (metering/lease.py, tried once, never waited for) re-reads what is recorded,
publishes and records; the others skip the round. The lease is taken only when a round
found something to publish, so a quiet catalog writes nothing.

A round publishes only while it holds the lease, so two processes never publish one
crossing at once: it checks the lease right before publishing (CloseLease.check: more than
a third of it left, on the store's clock, which counts whole seconds, so more than
`lease_seconds // 3` seconds), and waits for the broker's acknowledgement at most
`alert_flush_timeout(lease_seconds)`, three quarters of that (and at most
ALERT_FLUSH_TIMEOUT_SECONDS). A publish not acknowledged by then is purged from the
producer, so nothing of it is sent later, and the round records nothing and ends; the next
holder sends those crossings again, under the same ids. `alert_check` builds the check of
a worker and of serve alike.

```json
{"specversion": "1.0", "id": "acme/alert/mau>=100/2026-12-01", "source": "metering",
 "type": "com.metering.usage.alert", "subject": "acme", "time": "2026-12-14T09:30:10Z",
 "datacontenttype": "application/json",
 "data": {"team": "acme", "period_start": "2026-12-01", "period_end": "2027-01-01",
          "threshold": {"kind": "mau", "id": "mau>=100", "value": "100"},
          "observed": {"mau": 104}}}
```
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from aggregation import Store, StoredNotice, StoreError
from invoicing import CloseError, Crossing, Running, crossing_id, crossings, estimate
from metering.charges import ChargePublisher
from metering.kafka_io import BrokerError
from metering.lease import CloseLease, LeaseBusy
from metering.metrics import AlertMetrics
from metering.settings import Settings
from schemas import Account, AlertKind, Catalog, Period, UsageAlert

__all__ = [
    "ALERT_EVENT_TYPE",
    "ALERT_FLUSH_TIMEOUT_SECONDS",
    "ALERT_LEASE",
    "AlertCheck",
    "AlertData",
    "AlertEvent",
    "AlertPublisher",
    "AlertRun",
    "Publish",
    "alert_check",
    "alert_event",
    "alert_flush_timeout",
    "check_alerts",
    "find_crossings",
]

log = logging.getLogger(__name__)

ALERT_LEASE: Final = "alerts"
ALERT_EVENT_TYPE: Final = "com.metering.usage.alert"
# The longest a round waits for the broker's acknowledgement, whatever the lease.
ALERT_FLUSH_TIMEOUT_SECONDS: Final = 30.0
# Alert accounts read per set query (consecutive in byte order); a run of fewer than
# _FEW_TEAMS is read team by team, so a few alerting teams never read a range of others.
DEFAULT_TEAMS_PER_READ: Final = 1000
_FEW_TEAMS: Final = 16

# Sends (key, value) records and returns once the broker acknowledged all of them
# (metering/charges.py ChargePublisher.send); raises otherwise.
Publish = Callable[[Sequence[tuple[str, str]]], None]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlertThreshold(_Frozen):
    kind: AlertKind
    id: str
    value: str  # active users, a share of the included users, or an amount
    users: int | None = None  # included_share: the active users it takes
    currency: str | None = None  # estimate


class AlertObserved(_Frozen):
    mau: int | None = None  # mau, included_share: active users in the period so far
    estimate: str | None = None  # estimate: the running estimate's total
    currency: str | None = None


class AlertData(_Frozen):
    team: str
    period_start: date
    period_end: date
    threshold: AlertThreshold
    observed: AlertObserved


class AlertEvent(_Frozen):
    """One crossing, as published on the alerts topic (key = team)."""

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: Literal["metering"] = "metering"
    type: Literal["com.metering.usage.alert"] = ALERT_EVENT_TYPE
    subject: str
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    data: AlertData

    def body(self) -> str:
        return self.model_dump_json(exclude_none=True)


@dataclass(frozen=True, slots=True)
class AlertRun:
    found: int  # crossings not recorded when the round began
    published: int  # published and recorded by this round
    skipped: bool = False  # another process held the alerts lease


def alert_flush_timeout(lease_seconds: int) -> float:
    """How long a round waits for the broker's acknowledgement under a lease of
    `lease_seconds`: three quarters of the time CloseLease.check guarantees is left (more than
    `lease_seconds // 3` whole seconds), the last quarter for sending, and at most
    ALERT_FLUSH_TIMEOUT_SECONDS. So a publish ends before the lease can pass to another."""
    if lease_seconds < 3:
        raise ValueError(f"a lease lasts at least 3 seconds, got {lease_seconds}")
    return min(ALERT_FLUSH_TIMEOUT_SECONDS, lease_seconds // 3 * 0.75)


class _AlertProducer(ChargePublisher):
    """The close's producer, which drops what the broker did not acknowledge in time."""

    def send(self, records: Sequence[tuple[str, str]], *, noun: str) -> None:
        try:
            super().send(records, noun=noun)
        except BrokerError:
            # Not acknowledged in time: the lease may pass on, so none of it may be sent
            # (or retried) later; the next holder sends it again, under the same ids.
            self._producer.purge()
            self._producer.poll(0)
            raise


class AlertPublisher:
    """`Publish` on the alerts topic with the close's producer (metering/charges.py), made
    at the first alert: a process whose catalog never crosses a threshold opens no producer.
    It waits for the broker at most `alert_flush_timeout(lease_seconds)`, then purges what
    is not acknowledged and raises BrokerError."""

    def __init__(self, bootstrap: str, topic: str, *, lease_seconds: int) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.flush_timeout = alert_flush_timeout(lease_seconds)
        self._publisher: ChargePublisher | None = None
        self._lock = threading.Lock()

    def __call__(self, records: Sequence[tuple[str, str]]) -> None:
        with self._lock:
            if self._publisher is None:
                self._publisher = _AlertProducer(self.bootstrap, self.topic,
                                                 flush_timeout=self.flush_timeout)
            self._publisher.send(records, noun="alerts")


@dataclass(frozen=True, kw_only=True, slots=True)
class AlertCheck:
    """What a process checks alerts with; calling it runs one round as of `now`."""

    store: Store
    catalog: Catalog
    publish: Publish
    lease_seconds: int
    grace: timedelta = timedelta(0)  # the worker's: how long a period's late events count
    metrics: AlertMetrics | None = None

    def __post_init__(self) -> None:
        if (isinstance(self.publish, AlertPublisher)
                and self.publish.flush_timeout > alert_flush_timeout(self.lease_seconds)):
            raise ValueError(f"alerts wait {self.publish.flush_timeout} s for the broker, "
                             f"longer than a lease of {self.lease_seconds} s allows")

    def __call__(self, now: datetime) -> AlertRun:
        return check_alerts(self.store, self.catalog, self.publish, now,
                            lease_seconds=self.lease_seconds, grace=self.grace,
                            metrics=self.metrics)


def alert_check(settings: Settings, store: Store, catalog: Catalog,
                metrics: AlertMetrics | None = None) -> AlertCheck | None:
    """The usage alerts check of a worker or of serve, for a catalog with alerts (else
    None): published on `alerts_topic` under the alerts lease of `close_lease_seconds`,
    waiting for the broker as long as that lease allows (alert_flush_timeout)."""
    if not catalog.alert_accounts():
        return None
    publish = AlertPublisher(settings.bootstrap_servers, settings.alerts_topic,
                             lease_seconds=settings.close_lease_seconds)
    return AlertCheck(store=store, catalog=catalog, publish=publish,
                      lease_seconds=settings.close_lease_seconds, grace=settings.grace,
                      metrics=metrics)


def alert_event(crossing: Crossing, now: datetime) -> AlertEvent:
    """The CloudEvent of `crossing`, seen at `now`."""
    alert = crossing.alert
    threshold = AlertThreshold(
        kind=alert.kind, id=alert.id,
        value=str(alert.included_share if alert.included_share is not None else crossing.limit),
        users=int(crossing.limit) if alert.included_share is not None else None,
        currency=alert.estimate.currency if alert.estimate is not None else None)
    observed = (AlertObserved(estimate=str(crossing.observed), currency=crossing.currency)
                if alert.estimate is not None else AlertObserved(mau=int(crossing.observed)))
    return AlertEvent(
        id=crossing.id, subject=crossing.team, time=now.astimezone(UTC).replace(microsecond=0),
        data=AlertData(team=crossing.team, period_start=crossing.period_start,
                       period_end=crossing.period_end, threshold=threshold, observed=observed))


def _runs(accounts: Sequence[Account], size: int) -> Iterator[Sequence[Account]]:
    for start in range(0, len(accounts), size):
        yield accounts[start : start + size]


def _counts(store: Store, accounts: Sequence[Account], wanted: dict[str, list[Period]]
            ) -> dict[tuple[str, date], int]:
    """Active users so far of each account's `wanted` periods (accounts in byte order)."""
    if len(accounts) < _FEW_TEAMS:
        return {(account.team, period.start): store.mau(account.team, period.start)
                for account in accounts for period in wanted[account.team]}
    counts = {(row.team, row.period_start): row.active_users
              for row in store.period_mau(accounts[0].team, accounts[-1].team)}
    return {(account.team, period.start): counts.get((account.team, period.start), 0)
            for account in accounts for period in wanted[account.team]}


def _periods(account: Account, now: datetime, grace: timedelta) -> list[Period]:
    """The open period, and the one before it while its late events still count (its end
    plus grace, as the worker counts them)."""
    calendar = account.calendar
    current = calendar.period_containing(now)
    before = calendar.period_for_date(current.start - timedelta(days=1))
    return ([current] if calendar.closed(before.start, now=now, grace=grace)
            else [current, before])


def _running(store: Store, catalog: Catalog, team: str, now: datetime) -> Running | None:
    """The team's running estimate, or None (nothing more billed, or a history that cannot
    apply: logged, and its estimate thresholds wait)."""
    try:
        invoice = estimate(store=store, catalog=catalog, team=team, now=now)
    except CloseError as exc:
        log.warning("usage alerts of %s: no estimate: %s", team, exc)
        return None
    return None if invoice is None else Running(Decimal(invoice.total), invoice.currency)


def find_crossings(store: Store, catalog: Catalog, now: datetime, *,
                   grace: timedelta = timedelta(0),
                   teams_per_read: int = DEFAULT_TEAMS_PER_READ) -> list[Crossing]:
    """The crossings as of `now` whose notice the store does not hold, in byte order of
    team: in the open period, and for thresholds of active users also in the period before
    while its end plus `grace` has not passed (its late events still count). Estimates are
    computed only for accounts with an estimate threshold not recorded in the open period."""
    found: list[Crossing] = []
    for accounts in _runs(catalog.alert_accounts(), teams_per_read):
        recorded = store.notice_ids([account.team for account in accounts])
        pending: dict[str, list[tuple[Period, list[UsageAlert]]]] = {}
        for account in accounts:
            team = account.team
            for index, period in enumerate(_periods(account, now, grace)):
                alerts = [alert for alert in account.alerts
                          if (index == 0 or alert.estimate is None)
                          and (team, crossing_id(team, alert, period.start)) not in recorded]
                if alerts:
                    pending.setdefault(team, []).append((period, alerts))
        unseen = [account for account in accounts if account.team in pending]
        if not unseen:
            continue
        counts = _counts(store, unseen, {team: [period for period, _ in periods]
                                         for team, periods in pending.items()})
        for account in unseen:
            team, plan = account.team, catalog.plans[account.plan]
            for period, alerts in pending[team]:
                running = (_running(store, catalog, team, now)
                           if any(alert.estimate is not None for alert in alerts) else None)
                found.extend(crossings(account, plan, period_start=period.start,
                                       period_end=period.end, mau=counts[team, period.start],
                                       estimate=running, alerts=alerts))
    return found


def check_alerts(store: Store, catalog: Catalog, publish: Publish, now: datetime, *,
                 lease_seconds: int, grace: timedelta = timedelta(0),
                 metrics: AlertMetrics | None = None,
                 teams_per_read: int = DEFAULT_TEAMS_PER_READ) -> AlertRun:
    """One round: find the crossings not recorded; if any, take the alerts lease (or skip
    the round while another process holds it), publish those still not recorded and record
    them. StoreError, BrokerError or LeaseLost end the round with nothing recorded that was
    not published. `publish` must return (or raise) within alert_flush_timeout(lease_seconds)
    (AlertPublisher does): the lease is checked right before it, with more than that left."""
    try:
        run = _check(store, catalog, publish, now, lease_seconds=lease_seconds, grace=grace,
                     teams_per_read=teams_per_read, metrics=metrics)
    except Exception:
        if metrics is not None:
            metrics.rounds.labels(outcome="error").inc()
        raise
    if metrics is not None:
        metrics.rounds.labels(outcome="skipped" if run.skipped else "ok").inc()
    return run


def _check(store: Store, catalog: Catalog, publish: Publish, now: datetime, *,
           lease_seconds: int, grace: timedelta, teams_per_read: int,
           metrics: AlertMetrics | None = None) -> AlertRun:
    found = find_crossings(store, catalog, now, grace=grace, teams_per_read=teams_per_read)
    if not found:
        return AlertRun(found=0, published=0)
    lease = CloseLease(store, seconds=lease_seconds, name=ALERT_LEASE)
    try:
        lease.acquire(wait=0)
    except LeaseBusy:
        return AlertRun(found=len(found), published=0, skipped=True)
    try:
        # Another holder may have recorded some since they were found.
        recorded = store.notice_ids(sorted({crossing.team for crossing in found}))
        fresh = [crossing for crossing in found if (crossing.team, crossing.id) not in recorded]
        if fresh:
            events = [alert_event(crossing, now) for crossing in fresh]
            bodies = [(event.subject, event.body()) for event in events]
            # Last before publishing: a round that stalled must not publish, and one that
            # goes on has more of the lease left than the publish may take.
            lease.check()
            publish(bodies)
            store.add_notices([StoredNotice(team=event.subject, notice_id=event.id,
                                            time=event.time, body=body)
                               for event, (_, body) in zip(events, bodies, strict=True)])
            if metrics is not None:
                metrics.published.inc(len(fresh))
            log.info("published %d usage alerts", len(fresh))
    finally:
        with contextlib.suppress(StoreError):  # it lapses; the round's own error is the news
            lease.release()
    return AlertRun(found=len(found), published=len(fresh))
