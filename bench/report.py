"""The figures of a run: rates, the steady/bare ratio, latency percentiles, memory growth per
million keys, the correctness checks; printed as text or as one JSON object."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

from baseline import BareRun
from pipeline import WorkerOptions, WorkerRun
from workload import Population, Produced, Workload, expected_mau

KIB_PER_MIB = 1024
KEYS_PER_MILLION = 1e6
UNSET = "default"  # a worker setting left to the worker's own default


@dataclass(frozen=True, slots=True)
class Report:
    mode: str
    events: int
    unique_events: int
    messages: int
    events_per_message: float
    teams: int
    users: int
    distinct_keys: int
    partitions: int
    worker_batch_size: str
    worker_linger_seconds: str
    produce_seconds: float
    produce_events_per_s: float
    bare_seconds: float
    bare_events_per_s: float
    pipeline_seconds: float
    pipeline_events_per_s: float
    steady_seconds: float | None
    steady_events: int
    steady_events_per_s: float | None
    steady_to_bare_ratio: float | None
    worker_rss_before_mib: float | None
    worker_rss_after_mib: float
    worker_peak_rss_mib: float
    worker_dedupe_keys: int
    worker_window_ids: int
    worker_peak_growth_mib_per_million_keys: float | None
    worker_rss_growth_mib_per_million_keys: float | None
    worker_cpu_seconds: float
    live_rate_events_per_s: float
    live_seconds: float
    live_events: int
    live_messages: int
    live_events_per_message: float
    live_drain_seconds: float
    markers_sent: int
    markers_stored: int
    latency_p50_s: float | None
    latency_p99_s: float | None
    latency_max_s: float | None
    cpu_count: int
    mau_stored: int
    mau_expected: int
    mau_ok: bool
    distinct_events_stored: int
    distinct_events_expected: int
    events_ok: bool

    @property
    def ok(self) -> bool:
        """Whether the store holds exactly what was sent."""
        return self.mau_ok and self.events_ok


def percentile(values: list[float], share: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def build_report(
    population: Population, work: Workload, produced: Produced, bare: BareRun,
    worker: WorkerRun, options: WorkerOptions,
) -> Report:
    backlog, live, counts = worker.backlog, worker.live, worker.counts
    events_total = len(work.events)
    backlog_users = {raw[1] for raw in work.events}
    expected = expected_mau(population, backlog_users | live.users,
                            {user: team for user, (team, _) in live.markers.items()})
    mau_ok = counts.mau == {team: n for team, n in expected.items() if n}
    latencies = [at - live.markers[user][1] for user, at in counts.marker_inserted.items()]
    bare_rate = events_total / bare.seconds
    steady_rate = backlog.steady_rate
    keys = int(backlog.metrics.get("metering_dedupe_keys", 0))
    per_million_peak = per_million_rss = None
    if backlog.rss_before_kib is not None and keys:
        millions = keys / KEYS_PER_MILLION
        per_million_peak = (backlog.peak_rss_kib - backlog.rss_before_kib) / KIB_PER_MIB / millions
        per_million_rss = (backlog.rss_after_kib - backlog.rss_before_kib) / KIB_PER_MIB / millions
    distinct_expected = work.unique_events + live.events
    return Report(
        mode=options.mode,
        events=events_total,
        unique_events=work.unique_events,
        messages=produced.messages,
        events_per_message=events_total / produced.messages,
        teams=len(population.team_names),
        users=len(population.team_of),
        distinct_keys=len(backlog_users),
        partitions=options.partitions,
        worker_batch_size=UNSET if options.batch_size is None else str(options.batch_size),
        worker_linger_seconds=(UNSET if options.linger_seconds is None
                               else str(options.linger_seconds)),
        produce_seconds=produced.seconds,
        produce_events_per_s=events_total / produced.seconds,
        bare_seconds=bare.seconds,
        bare_events_per_s=bare_rate,
        pipeline_seconds=backlog.total_seconds,
        pipeline_events_per_s=events_total / backlog.total_seconds,
        steady_seconds=backlog.steady_seconds,
        steady_events=backlog.steady_events,
        steady_events_per_s=steady_rate,
        steady_to_bare_ratio=None if steady_rate is None else steady_rate / bare_rate,
        worker_rss_before_mib=(None if backlog.rss_before_kib is None
                               else backlog.rss_before_kib / KIB_PER_MIB),
        worker_rss_after_mib=backlog.rss_after_kib / KIB_PER_MIB,
        worker_peak_rss_mib=backlog.peak_rss_kib / KIB_PER_MIB,
        worker_dedupe_keys=keys,
        worker_window_ids=int(backlog.metrics.get("metering_dedupe_window_ids", 0)),
        worker_peak_growth_mib_per_million_keys=per_million_peak,
        worker_rss_growth_mib_per_million_keys=per_million_rss,
        worker_cpu_seconds=backlog.cpu_seconds,
        live_rate_events_per_s=live.rate,
        live_seconds=live.seconds,
        live_events=live.events,
        live_messages=live.messages,
        live_events_per_message=live.events / live.messages,
        live_drain_seconds=worker.live_drain_seconds,
        markers_sent=len(live.markers),
        markers_stored=len(latencies),
        latency_p50_s=percentile(latencies, 0.5) if latencies else None,
        latency_p99_s=percentile(latencies, 0.99) if latencies else None,
        latency_max_s=max(latencies) if latencies else None,
        cpu_count=os.cpu_count() or 0,
        mau_stored=sum(counts.mau.values()),
        mau_expected=sum(expected.values()),
        mau_ok=mau_ok and len(latencies) == len(live.markers),
        distinct_events_stored=counts.distinct_events,
        distinct_events_expected=distinct_expected,
        events_ok=counts.distinct_events == distinct_expected,
    )


def _opt(value: float | None, fmt: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def text_report(r: Report) -> str:
    steady = ratio = "n/a (no commit seen before the backlog was done)"
    if r.steady_events_per_s is not None and r.steady_to_bare_ratio is not None:
        steady = (f"{r.steady_events_per_s:,.0f} events/s "
                  f"({r.steady_events:,} events in {r.steady_seconds:.1f}s)")
        ratio = f"{r.steady_to_bare_ratio:.3f}"
    return "\n".join([
        f"mode                   {r.mode}: {r.messages:,} messages, "
        f"{r.events_per_message:.1f} events per message",
        f"events                 {r.events:,} ({r.unique_events:,} unique, "
        f"{r.events - r.unique_events:,} re-sent)",
        f"teams / users / keys   {r.teams:,} / {r.users:,} / {r.distinct_keys:,} "
        "distinct (team, period, user)",
        f"partitions             {r.partitions} (worker batch size {r.worker_batch_size}, "
        f"linger {r.worker_linger_seconds})",
        f"produce (kafka-python) {r.produce_events_per_s:,.0f} events/s ({r.produce_seconds:.1f}s)",
        f"bare aiokafka + json   {r.bare_events_per_s:,.0f} events/s ({r.bare_seconds:.1f}s)",
        f"pipeline incl start-up {r.pipeline_events_per_s:,.0f} events/s "
        f"({r.pipeline_seconds:.1f}s)",
        f"pipeline steady state  {steady}",
        f"steady / bare          {ratio}",
        f"latency produce->row   p50 {_opt(r.latency_p50_s, '.0f', 's')}, "
        f"p99 {_opt(r.latency_p99_s, '.0f', 's')}, max {_opt(r.latency_max_s, '.0f', 's')} "
        f"({r.markers_stored}/{r.markers_sent} markers; inserted_at has 1 s resolution: "
        "true values lie in [v, v+1s))",
        f"  live stream          {r.live_rate_events_per_s:,.0f} events/s for "
        f"{r.live_seconds:.1f}s, {r.live_events:,} events in {r.live_messages:,} messages "
        f"({r.live_events_per_message:.1f} per message); group lag zero "
        f"{r.live_drain_seconds:.1f}s after the last send",
        f"worker memory          RSS {_opt(r.worker_rss_before_mib, '.0f', ' MiB')} before "
        f"consuming, {r.worker_rss_after_mib:.0f} MiB after, peak {r.worker_peak_rss_mib:.0f} MiB",
        f"  per million keys     {_opt(r.worker_peak_growth_mib_per_million_keys, '.0f')} MiB "
        f"(peak growth; {_opt(r.worker_rss_growth_mib_per_million_keys, '.0f')} MiB from RSS "
        "after)",
        f"  state held           {r.worker_dedupe_keys:,} dedupe keys, "
        f"{r.worker_window_ids:,} window ids",
        f"worker CPU time        {r.worker_cpu_seconds:.1f}s (backlog)",
        f"machine                {r.cpu_count} CPUs",
        f"MAU check              {'OK' if r.mau_ok else 'MISMATCH'} "
        f"(stored {r.mau_stored:,}, expected {r.mau_expected:,}, live stream included)",
        f"event rows check       {'OK' if r.events_ok else 'MISMATCH'} "
        f"({r.distinct_events_stored:,} distinct (source, id), "
        f"expected {r.distinct_events_expected:,})",
    ])


def render(report: Report, *, as_json: bool) -> str:
    """One JSON object (every field of `Report`), or the text table."""
    return json.dumps(asdict(report), indent=2) if as_json else text_report(report)
