"""How long `load_catalog` takes for a catalog of many accounts, and its peak memory.

Writes `--accounts` accounts (a million by default) to a temporary YAML file in one of the
two usual layouts, then times `load_catalog` on it:

    flow   one account per line:  - {team: team-0000001, plan: power, ...}
    block  one field per line, as in tests/unit/test_catalog.py and deploy/examples

Plans, start dates and time zones vary (seeded); about one account in four leaves its time
zone out. `--full-loader` times the YAML loader path instead (parse_catalog before the fast
accounts reader; minutes for a million). The figures are wall and CPU time of one load;
peak RSS is the process's, with the file written in chunks so the generator adds little.

    .venv/bin/python bench/catalog_load.py [--accounts 1000000] [--style flow|block] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from schemas import load_catalog
from schemas.catalog import _parse_slow

PLANS = """plans:
  power: {name: Power plan, currency: USD, base_fee: "10.00", included_users: 5,
          overage_price: "2.00"}
  attendance-pro:
    kind: mau_minimum
    name: Attendance Pro
    currency: USD
    unit_price: "2.00"
    minimum_users: 3
  yen: {name: Yen plan, currency: JPY, base_fee: 1000, included_users: 0,
        overage_price: "150"}
accounts:
"""
ZONES = ("UTC", "Europe/Berlin", "America/Los_Angeles", "Asia/Tokyo", "Australia/Sydney")
CHUNK = 10_000  # accounts written at a time


def accounts(count: int, style: str, seed: int) -> Iterator[str]:
    """The accounts list, `CHUNK` accounts of text at a time."""
    rng = random.Random(seed)
    plans = ("power", "attendance-pro", "yen")
    lines: list[str] = []
    for number in range(1, count + 1):
        team, plan = f"team-{number:07d}", rng.choice(plans)
        start = f"202{rng.randrange(7)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
        zone = rng.choice(ZONES) if rng.random() < 0.75 else None
        if style == "flow":
            tail = f", timezone: {zone}" if zone else ""
            lines.append(f"  - {{team: {team}, plan: {plan}, start_date: '{start}'{tail}}}\n")
        else:
            tail = f"    timezone: {zone}\n" if zone else ""
            lines.append(f"  - team: {team}\n    plan: {plan}\n    start_date: {start}\n{tail}")
        if len(lines) == CHUNK:
            yield "".join(lines)
            lines.clear()
    yield "".join(lines)


def measure(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="metering-catalog-") as root:
        path = Path(root) / "catalog.yaml"
        with path.open("w", encoding="utf-8") as out:
            out.write(PLANS)
            for chunk in accounts(args.accounts, args.style, args.seed):
                out.write(chunk)
        started, cpu_started = time.perf_counter(), time.process_time()
        if args.full_loader:
            catalog = _parse_slow(path.read_text(encoding="utf-8"), origin=str(path))
        else:
            catalog = load_catalog(path)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
    assert len(catalog.accounts) == args.accounts
    return {
        "accounts": args.accounts,
        "style": args.style,
        "loader": "full" if args.full_loader else "fast",
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),  # this process only: less noisy when shared
        "accounts_per_s": round(args.accounts / seconds),
        # Linux reports ru_maxrss in KiB.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--style", choices=("flow", "block"), default="flow")
    parser.add_argument("--full-loader", action="store_true",
                        help="time the YAML loader path (slow: use fewer accounts)")
    parser.add_argument("--seed", type=int, default=20260704)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    figures = measure(args)
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:16} {value:>14,}" if isinstance(value, int | float)
                  else f"{name:16} {value:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
