"""One process owns a chdb data path: a second process that opens it stops with one line
naming the path and the owner's pid (not the engine's own complaint besides ours), whether the
owner is another metering process or a bare chdb engine; once the owner is gone the path
opens again."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aggregation import open_store

# A process that opens the path, says so on stdout and holds it until its stdin closes.
_METERING_OWNER = """
import sys
from aggregation import open_store
store = open_store(sys.argv[1])
store.ensure_schema()
print("ready", flush=True)
sys.stdin.read()
store.close()
"""
_ENGINE_OWNER = """
import sys
from chdb import session
engine = session.Session(sys.argv[1].removeprefix("chdb://"))
engine.query("SELECT 1", "CSV")
print("ready", flush=True)
sys.stdin.read()
engine.close()
"""


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}


@contextmanager
def owned(url: str, program: str) -> Iterator[int]:
    """The pid of a process holding `url` until the block ends."""
    with subprocess.Popen([sys.executable, "-c", program, url], env=_environment(),
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as owner:
        assert owner.stdin is not None and owner.stdout is not None
        try:
            assert owner.stdout.readline() == "ready\n"
            yield owner.pid
        finally:
            owner.stdin.close()
            owner.wait(timeout=60)


def _usage(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "metering.cli", "usage", "--team", "acme",
                           "--store", url], env=_environment(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


def test_a_second_process_is_told_in_one_line_who_owns_the_path(tmp_path: Path) -> None:
    path = tmp_path / "chdb"
    url = f"chdb://{path}"
    for program in (_METERING_OWNER, _ENGINE_OWNER):
        with owned(url, program) as pid:
            second = _usage(url)
        assert second.returncode == 1, second.stderr
        assert second.stderr.splitlines() == [
            f"metering: error: the chdb store at {path} is in use by another process "
            f"(pid {pid})"], second.stderr
        assert second.stdout == ""
    again = _usage(url)
    assert (again.returncode, again.stderr) == (0, ""), again.stderr


def test_stores_of_one_process_share_its_hold_on_the_path(tmp_path: Path) -> None:
    path = tmp_path / "chdb"
    first = open_store(f"chdb://{path}")
    second = open_store(f"chdb://{path}")  # chdb lets one process open a path twice
    first.close()
    try:
        refused = _usage(f"chdb://{path}")
        assert refused.stderr.splitlines() == [
            f"metering: error: the chdb store at {path} is in use by another process "
            f"(pid {os.getpid()})"], refused.stderr
    finally:
        second.close()
    assert _usage(f"chdb://{path}").returncode == 0
