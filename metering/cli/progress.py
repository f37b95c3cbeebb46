"""Progress bars on stderr for the long commands: bytes sent (emit, backfill) and teams
closed (close). Shown when asked (--progress) or when a person watches stderr."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column

__all__ = ["counting", "progress_bar", "show_progress", "team_bar"]


def show_progress(args: argparse.Namespace) -> bool:
    """A progress bar on stderr when asked (--progress) or when a person watches it."""
    return bool(args.progress) or sys.stderr.isatty()


# A long path or team name must not push the bar off an 80-column pipe.
DEFAULT_DESCRIPTION_WIDTH = 32


def progress_bar(*columns: ProgressColumn) -> Progress:
    """A bar on stderr drawn even when stderr is not a terminal (--progress into a file)."""
    description = TextColumn("{task.description}", table_column=Column(
        max_width=DEFAULT_DESCRIPTION_WIDTH, no_wrap=True, overflow="ellipsis"))
    return Progress(description, *columns, console=Console(stderr=True, force_terminal=True))


# Advancing a rich bar costs a lock and a clock read: done per this many bytes, not per line.
DEFAULT_PROGRESS_STEP_BYTES = 64 * 1024


def counting(lines: Iterable[bytes], progress: Progress, task: TaskID) -> Iterator[bytes]:
    """`lines` as they are, advancing `task` by their bytes."""
    step = 0
    for line in lines:
        yield line
        step += len(line)
        if step >= DEFAULT_PROGRESS_STEP_BYTES:
            progress.advance(task, step)
            step = 0
    progress.advance(task, step)


def team_bar(stack: contextlib.ExitStack, teams: int) -> Callable[[int], None]:
    """A bar over `teams`, closed with `stack`; the returned callable advances it by a count
    of teams closed."""
    bar = stack.enter_context(progress_bar(BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()))
    task = bar.add_task("closing", total=teams)

    def advance(closed: int) -> None:
        bar.update(task, advance=closed, description="closed teams")

    return advance
