"""`metering demo` end to end, as a user runs it: a small month through the local broker,
the worker and the embedded store, then the invoice table; nothing it started outlives it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.integration.pipeline import METERING, worker_env

DEMO_TEAMS = 3
DEMO_USERS = 60
# Broker start, the worker's catch-up and the close on a 2-core machine, with room to spare.
DEFAULT_DEMO_TIMEOUT = 300.0
ISSUED = re.compile(r"^issued (?P<count>\d+) invoices; data kept in (?P<path>.+)$", re.MULTILINE)
INVOICE_HEADER = re.compile(r"^TEAM\s+DATE\s+KIND\s+DESCRIPTION\s+QTY\s+UNIT\s+AMOUNT$",
                            re.MULTILINE)
INVOICE_FIRST_LINE = re.compile(r"^(?P<team>team-\d+)\s+\d{4}-\d{2}-\d{2}\s", re.MULTILINE)
INVOICE_TOTAL = re.compile(r"^\s+total\s+\S+ [A-Z]{3}$", re.MULTILINE)


def _references(pid: str, folder: str) -> bool:
    """Whether the process names `folder` in its command line, environment, working folder
    or open files: the demo's broker logs there, its worker stores there."""
    proc = Path("/proc", pid)
    try:
        if folder in (proc / "cmdline").read_bytes().decode(errors="replace"):
            return True
        if folder in (proc / "environ").read_bytes().decode(errors="replace"):
            return True
        links = [proc / "cwd", *(proc / "fd").iterdir()]
        return any(folder in os.readlink(link) for link in links)
    except OSError:  # it exited while being read, or it is not ours to read
        return False


def _processes_using(folder: Path) -> list[str]:
    """PIDs of the processes, other than this one, that refer to `folder`."""
    own = str(os.getpid())
    pids = (entry.name for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [pid for pid in pids if pid != own and _references(pid, str(folder))]


def test_demo_prints_invoices_and_leaves_no_process(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = subprocess.run(
        [METERING, "demo", "--teams", str(DEMO_TEAMS), "--users", str(DEMO_USERS),
         "--workdir", str(workdir)],
        cwd=cwd, env=worker_env(), capture_output=True, text=True,
        timeout=DEFAULT_DEMO_TIMEOUT, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stderr

    issued = ISSUED.search(result.stdout)
    assert issued, result.stdout
    count = int(issued["count"])
    assert count > 0, result.stdout
    assert Path(issued["path"]) == workdir
    assert INVOICE_HEADER.search(result.stdout), result.stdout
    # A fresh store: everything due is issued now, one total line per invoice
    assert len(INVOICE_TOTAL.findall(result.stdout)) == count, result.stdout
    teams = {f"team-{index:02d}" for index in range(1, DEMO_TEAMS + 1)}
    assert set(INVOICE_FIRST_LINE.findall(result.stdout)) == teams, result.stdout

    left = {pid: Path("/proc", pid, "cmdline").read_bytes() for pid in _processes_using(tmp_path)}
    assert not left, f"still running after the demo: {left}"
