"""The figures of a run: rates, the steady/bare ratio, latency percentiles, memory per key
and per window id, each worker's share, the correctness checks; printed as text or as one
JSON object.

Memory (summed over the workers): RSS growth is VmRSS once the backlog is consumed minus
VmRSS when /metrics first answered. `bytes_per_window_id` is the workers'
`metering_dedupe_window_bytes` over `metering_dedupe_window_ids`; `bytes_per_key` charges
everything else the workers grew by from the group's first commit to the end to the
first-seen keys added meanwhile: (RSS growth - window growth) / keys added, so it also holds
allocator slack and, with chdb, the embedded engine's own growth, but not what start-up
costs once (modules imported on first use, the first batches' buffers: those are in
`bytes_per_key_from_start`, the same from when /metrics first answered). All are null when
the worker does not export the byte gauges (or no baseline RSS was taken).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from baseline import BareRun
from live import INSERTED_AT_RESOLUTION_SECONDS
from pipeline import WorkerOptions, WorkerRun
from workload import Population, Produced, Workload, expected_mau

KIB = 1024
KEYS_PER_MILLION = 1e6
UNSET = "default"  # a worker setting left to the worker's own default
KEYS_FOR_MEMORY_TARGETS = 1_000_000
LIVE_RATE_TOLERANCE = 0.95  # an achieved live rate below this share of the target is flagged


@dataclass(frozen=True, slots=True)
class Report:
    mode: str
    store: str
    workers: int
    events: int
    unique_events: int
    messages: int
    events_per_message: float
    teams: int
    users: int
    distinct_keys: int
    partitions: int
    worker_batch_events: str
    worker_batch_bytes: str
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
    worker_events_received: list[int]
    worker_shares: list[float | None]
    worker_rss_before_mib: float | None
    worker_rss_after_mib: float
    worker_peak_rss_mib: float
    worker_rss_growth_mib: float | None
    worker_dedupe_keys: int
    worker_window_ids: int
    worker_dedupe_bytes: int | None
    worker_window_bytes: int | None
    bytes_per_key: float | None
    bytes_per_key_from_start: float | None
    bytes_per_window_id: float | None
    dedupe_bytes_per_key: float | None
    worker_peak_growth_mib_per_million_keys: float | None
    worker_rss_growth_mib_per_million_keys: float | None
    worker_cpu_seconds: float
    live_target_events_per_s: float
    live_rate_events_per_s: float
    live_to_steady_ratio: float | None
    live_seconds: float
    live_events: int
    live_messages: int
    live_events_per_message: float
    live_drain_seconds: float
    markers_sent: int
    markers_stored: int
    latency_method: str
    latency_resolution_s: float | None
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


def _latencies(worker: WorkerRun) -> tuple[str, list[float], float | None]:
    """(method, upper bounds per marker stored, widest uncertainty); see live.py."""
    markers = worker.live.markers
    if worker.arrivals is None:
        bounds = [at + INSERTED_AT_RESOLUTION_SECONDS - markers[user].sent_wall
                  for user, at in worker.counts.marker_inserted.items() if user in markers]
        return "inserted_at", bounds, INSERTED_AT_RESOLUTION_SECONDS
    bounds, widest = [], 0.0
    for user, arrival in worker.arrivals.items():
        sent = markers[user].sent
        bounds.append(arrival.seen - sent)
        widest = max(widest, arrival.seen - max(arrival.after, sent))
    return "poll", bounds, widest if bounds else None


def _sum_or_none(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v or 0.0 for v in values)


def build_report(
    population: Population, work: Workload, produced: Produced, bare: BareRun,
    worker: WorkerRun, options: WorkerOptions,
) -> Report:
    backlog, live, counts = worker.backlog, worker.live, worker.counts
    events_total = len(work.events)
    backlog_users = {raw[1] for raw in work.events}
    expected = expected_mau(population, backlog_users | live.users,
                            {user: m.team for user, m in live.markers.items()})
    markers_stored = len(set(counts.marker_inserted) & set(live.markers))
    mau_ok = (counts.mau == {team: n for team, n in expected.items() if n}
              and markers_stored == len(live.markers))
    method, latencies, resolution = _latencies(worker)
    bare_rate = events_total / bare.seconds
    steady_rate = backlog.steady_rate

    states = backlog.workers
    metric = [s.metrics for s in states]
    keys = int(sum(m.get("metering_dedupe_keys", 0) for m in metric))
    window_ids = int(sum(m.get("metering_dedupe_window_ids", 0) for m in metric))
    dedupe_bytes = _sum_or_none([m.get("metering_dedupe_bytes") for m in metric])
    window_bytes = _sum_or_none([m.get("metering_dedupe_window_bytes") for m in metric])
    rss_before = _sum_or_none([s.rss_before_kib for s in states])
    rss_after = sum(s.rss_after_kib for s in states)
    peak = sum(s.peak_rss_kib for s in states)
    growth_kib = None if rss_before is None else rss_after - rss_before
    bytes_per_key = per_million_peak = per_million_rss = None
    if growth_kib is not None and keys:
        millions = keys / KEYS_PER_MILLION
        per_million_peak = (peak - (rss_before or 0)) / KIB / millions
        per_million_rss = growth_kib / KIB / millions
        if window_bytes is not None:
            bytes_per_key = (growth_kib * KIB - window_bytes) / keys
    # From the first commit on: RSS growth less the window's growth, per key added since
    warm = [s.warm_metrics for s in states]
    warm_rss = _sum_or_none([s.warm_rss_kib for s in states])
    warm_keys = int(sum(m.get("metering_dedupe_keys", 0) for m in warm))
    warm_window = _sum_or_none([m.get("metering_dedupe_window_bytes") for m in warm])
    steady_bytes_per_key = None
    if (warm_rss is not None and window_bytes is not None and warm_window is not None
            and keys > warm_keys):
        steady_bytes_per_key = ((rss_after - warm_rss) * KIB - (window_bytes - warm_window)
                                ) / (keys - warm_keys)
    received = [int(m.get("metering_events_received_total", 0)) for m in metric]
    shares: list[float | None] = [n / sum(received) if sum(received) else None
                                  for n in received]
    distinct_expected = work.unique_events + live.events
    return Report(
        mode=options.mode,
        store=options.store,
        workers=options.workers,
        events=events_total,
        unique_events=work.unique_events,
        messages=produced.messages,
        events_per_message=events_total / produced.messages,
        teams=len(population.team_names),
        users=len(population.team_of),
        distinct_keys=len(backlog_users),
        partitions=options.partitions,
        worker_batch_events=_setting(options.batch_events),
        worker_batch_bytes=_setting(options.batch_bytes),
        worker_linger_seconds=_setting(options.linger_seconds),
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
        worker_events_received=received,
        worker_shares=shares,
        worker_rss_before_mib=None if rss_before is None else rss_before / KIB,
        worker_rss_after_mib=rss_after / KIB,
        worker_peak_rss_mib=peak / KIB,
        worker_rss_growth_mib=None if growth_kib is None else growth_kib / KIB,
        worker_dedupe_keys=keys,
        worker_window_ids=window_ids,
        worker_dedupe_bytes=None if dedupe_bytes is None else int(dedupe_bytes),
        worker_window_bytes=None if window_bytes is None else int(window_bytes),
        bytes_per_key=steady_bytes_per_key,
        bytes_per_key_from_start=bytes_per_key,
        bytes_per_window_id=(window_bytes / window_ids
                             if window_bytes is not None and window_ids else None),
        dedupe_bytes_per_key=dedupe_bytes / keys if dedupe_bytes is not None and keys else None,
        worker_peak_growth_mib_per_million_keys=per_million_peak,
        worker_rss_growth_mib_per_million_keys=per_million_rss,
        worker_cpu_seconds=sum(s.cpu_seconds for s in states),
        live_target_events_per_s=live.target_rate,
        live_rate_events_per_s=live.rate,
        live_to_steady_ratio=None if not steady_rate else live.rate / steady_rate,
        live_seconds=live.seconds,
        live_events=live.events,
        live_messages=live.messages,
        live_events_per_message=live.events / live.messages,
        live_drain_seconds=worker.live_drain_seconds,
        markers_sent=len(live.markers),
        markers_stored=markers_stored,
        latency_method=method,
        latency_resolution_s=resolution,
        latency_p50_s=percentile(latencies, 0.5) if latencies else None,
        latency_p99_s=percentile(latencies, 0.99) if latencies else None,
        latency_max_s=max(latencies) if latencies else None,
        cpu_count=os.cpu_count() or 0,
        mau_stored=sum(counts.mau.values()),
        mau_expected=sum(expected.values()),
        mau_ok=mau_ok,
        distinct_events_stored=counts.distinct_events,
        distinct_events_expected=distinct_expected,
        events_ok=counts.distinct_events == distinct_expected,
    )


def _setting(value: float | None) -> str:
    return UNSET if value is None else str(value)


def _opt(value: float | None, fmt: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def _latency_line(r: Report) -> str:
    figures = (f"p50 {_opt(r.latency_p50_s, '.2f', 's')}, p99 {_opt(r.latency_p99_s, '.2f', 's')}, "
               f"max {_opt(r.latency_max_s, '.2f', 's')} ({r.markers_stored}/{r.markers_sent} "
               "markers")
    if r.latency_method == "poll":
        how = (f"upper bounds: first 50 ms poll of the server store that returned the marker; "
               f"true values at most {_opt(r.latency_resolution_s, '.3f', 's')} lower")
    else:
        how = ("upper bounds from the rows' inserted_at, read after the worker stopped "
               "(chdb cannot be read while the worker holds it); 1 s resolution: true values "
               "lie in [v-1s, v)")
    share = _opt(r.live_to_steady_ratio, ".2f")
    behind = ""
    if r.live_rate_events_per_s < LIVE_RATE_TOLERANCE * r.live_target_events_per_s:
        behind = (f"; BELOW the {r.live_target_events_per_s:,.0f} events/s asked: the bench's "
                  "producer did not keep up")
    return (f"latency produce->row   {figures}; {how}; at {r.live_rate_events_per_s:,.0f} "
            f"events/s = {share} x steady{behind})")


def _memory_lines(r: Report) -> list[str]:
    few = r.worker_dedupe_keys < KEYS_FOR_MEMORY_TARGETS
    gauges = ("n/a (worker exports no metering_dedupe_bytes / metering_dedupe_window_bytes)"
              if r.worker_window_bytes is None else
              f"{_opt(r.bytes_per_key, ',.0f')} bytes per key (RSS growth less window bytes, "
              f"from the first commit; {_opt(r.bytes_per_key_from_start, ',.0f')} from start), "
              f"{_opt(r.bytes_per_window_id, ',.0f')} bytes per window id; the gauge alone: "
              f"{_opt(r.dedupe_bytes_per_key, ',.0f')} bytes per key")
    return [
        f"worker memory          RSS {_opt(r.worker_rss_before_mib, '.0f', ' MiB')} before "
        f"consuming, {r.worker_rss_after_mib:.0f} MiB after "
        f"(growth {_opt(r.worker_rss_growth_mib, '.0f', ' MiB')}), "
        f"peak {r.worker_peak_rss_mib:.0f} MiB" + (" (sums over workers)" if r.workers > 1
                                                   else ""),
        f"  per key / window id  {gauges}",
        f"  per million keys     {_opt(r.worker_peak_growth_mib_per_million_keys, '.0f')} MiB "
        f"(peak growth; {_opt(r.worker_rss_growth_mib_per_million_keys, '.0f')} MiB from RSS "
        "after)",
        f"  state held           {r.worker_dedupe_keys:,} dedupe keys, "
        f"{r.worker_window_ids:,} window ids"
        + (" (under 1M keys: see the docstring for a 1M-key run)" if few else ""),
    ]


def _worker_line(r: Report) -> str:
    parts = [f"worker {i}: {n:,} events ({_opt(s, '.1%')})" for i, (n, s) in
             enumerate(zip(r.worker_events_received, r.worker_shares, strict=True), start=1)]
    return f"workers                {r.workers} in one group; " + ", ".join(parts)


def text_report(r: Report) -> str:
    steady = ratio = "n/a (no commit seen before the backlog was done)"
    if r.steady_events_per_s is not None and r.steady_to_bare_ratio is not None:
        steady = (f"{r.steady_events_per_s:,.0f} events/s "
                  f"({r.steady_events:,} events in {r.steady_seconds:.1f}s)")
        ratio = f"{r.steady_to_bare_ratio:.3f}"
    return "\n".join([
        f"mode / store           {r.mode} / {r.store}: {r.messages:,} messages, "
        f"{r.events_per_message:.1f} events per message",
        f"events                 {r.events:,} ({r.unique_events:,} unique, "
        f"{r.events - r.unique_events:,} re-sent)",
        f"teams / users / keys   {r.teams:,} / {r.users:,} / {r.distinct_keys:,} "
        "distinct (team, period, user)",
        f"partitions             {r.partitions} (worker batch events {r.worker_batch_events}, "
        f"bytes {r.worker_batch_bytes}, linger {r.worker_linger_seconds})",
        f"produce (kafka-python) {r.produce_events_per_s:,.0f} events/s ({r.produce_seconds:.1f}s)",
        f"bare aiokafka + json   {r.bare_events_per_s:,.0f} events/s ({r.bare_seconds:.1f}s)",
        f"pipeline incl start-up {r.pipeline_events_per_s:,.0f} events/s "
        f"({r.pipeline_seconds:.1f}s)",
        f"pipeline steady state  {steady}",
        f"steady / bare          {ratio}",
        _worker_line(r),
        _latency_line(r),
        f"  live stream          {r.live_rate_events_per_s:,.0f} events/s for "
        f"{r.live_seconds:.1f}s, {r.live_events:,} events in {r.live_messages:,} messages "
        f"({r.live_events_per_message:.1f} per message); group lag zero "
        f"{r.live_drain_seconds:.1f}s after the last send",
        *_memory_lines(r),
        f"worker CPU time        {r.worker_cpu_seconds:.1f}s (backlog)",
        f"machine                {r.cpu_count} CPUs",
        f"MAU check              {'OK' if r.mau_ok else 'MISMATCH'} "
        f"(stored {r.mau_stored:,}, expected {r.mau_expected:,}, live stream included; "
        f"{r.markers_stored}/{r.markers_sent} markers stored)",
        f"event rows check       {'OK' if r.events_ok else 'MISMATCH'} "
        f"({r.distinct_events_stored:,} distinct (source, id), "
        f"expected {r.distinct_events_expected:,})",
    ])


def render(report: Report, *, as_json: bool) -> str:
    """One JSON object (every field of `Report`), or the text table."""
    return json.dumps(asdict(report), indent=2) if as_json else text_report(report)

