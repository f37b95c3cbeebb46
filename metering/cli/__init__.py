"""The `metering` command line: argparse, the commands, the text report and the demo.

Nothing else imports from here; the commands call the other rooms through their public
names.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

EXIT_FAILURE = 1
_OWN_PACKAGES = frozenset({"metering", "aggregation", "invoicing", "schemas"})
_WORKER_EXTRA_HINT = "pip install 'usage-metering[all]'"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script."""
    try:
        from metering.cli.main import main as run
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in _OWN_PACKAGES:
            raise  # our own module is missing: a broken install, not a missing extra
        # a base install: the producer library only
        print(f"metering: error: the command line needs the worker's packages ({exc.name} is "
              f"missing): {_WORKER_EXTRA_HINT}", file=sys.stderr)
        raise SystemExit(EXIT_FAILURE) from None
    run(argv)
