"""`metering demo` shows the way: the next commands it prints run as printed on the data it
kept, and `metering demo --serve` keeps the API on that data until Ctrl-C, which exits 0
and leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from metering.local.services import free_port, http_answers
from tests.integration.pipeline import METERING, worker_env
from tests.integration.test_demo import DEFAULT_DEMO_TIMEOUT, _processes_using

DEMO_TEAMS = 2
DEMO_USERS = 50
# A command on the demo's data, the embedded store opening included, on a 2-core machine.
DEFAULT_COMMAND_TIMEOUT = 120.0
DEFAULT_POLL_SECONDS = 0.5
NEXT = re.compile(r"^next, on the demo's data in (?P<root>.+) \(its store opens in one process "
                  r"at a time\):\n(?P<lines>(?:  .+\n)+)", re.MULTILINE)
USAGE = re.compile(r"^team-01: (?P<mau>\d+) active users from \d{4}-\d{2}-\d{2} to ",
                   re.MULTILINE)


def _shell_env() -> dict[str, str]:
    """No METERING_* settings (the printed lines must name what they need), and `metering`
    on the PATH as after `pip install`."""
    env = worker_env()
    env["PATH"] = f"{Path(METERING).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _shell(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", line], cwd=cwd, env=_shell_env(),
                          capture_output=True, text=True, timeout=DEFAULT_COMMAND_TIMEOUT,
                          check=False)


def _wait_for(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + DEFAULT_DEMO_TIMEOUT
    while not http_answers(url):
        assert proc.poll() is None, f"exited with {proc.returncode} before answering {url}"
        assert time.monotonic() < deadline, f"no answer from {url}"
        time.sleep(DEFAULT_POLL_SECONDS)


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=DEFAULT_COMMAND_TIMEOUT) as answer:  # noqa: S310
        return json.load(answer)


def _command_pid(proc: subprocess.Popen[str]) -> int:
    """The command a shell runs (its child), or the process itself when it has none (the
    command, or a shell that replaced itself with it)."""
    children = Path("/proc", str(proc.pid), "task", str(proc.pid), "children")
    try:
        found = children.read_text().split()
    except OSError:
        found = []
    return int(found[0]) if found else proc.pid


def _stop(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str]:
    """Send `sig` to the command `proc` runs (as a user's Ctrl-C or kill would) and return its
    exit code and output; its process group is killed if it does not exit."""
    try:
        os.kill(_command_pid(proc), sig)
        out, _ = proc.communicate(timeout=DEFAULT_COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"did not exit on {sig.name}: {out}") from None
    return proc.returncode, out


def test_the_printed_next_commands_run_as_printed(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    port = free_port()
    result = _shell(f"{METERING} demo --teams {DEMO_TEAMS} --users {DEMO_USERS} "
                    f"--workdir {workdir} --port {port}", cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    found = NEXT.search(result.stdout)
    assert found, result.stdout
    assert Path(found["root"]) == workdir
    usage, serve, period, invoices, page = (line.strip()
                                            for line in found["lines"].splitlines())
    where = f"--store chdb://{workdir / 'chdb'} --catalog {workdir / 'catalog.yaml'}"
    assert re.fullmatch(rf"metering usage --team team-01 --at \d{{4}}-\d{{2}}-\d{{2}} {where}",
                        usage), usage
    assert serve == f"metering serve --port {port} {where}"
    api = f"http://127.0.0.1:{port}/v1/teams/team-01"
    assert re.fullmatch(rf"curl -s {api}/periods/\d{{4}}-\d{{2}}-\d{{2}}  # while serve runs",
                        period), period
    assert invoices == f"curl -s {api}/invoices  # while serve runs"
    page_address = f"http://127.0.0.1:{port}/ui/teams/team-01"
    assert page == f"# and in a browser, while serve runs: {page_address}"
    assert "metering demo --serve" in result.stdout[found.end():]

    ran = _shell(usage, cwd)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    counted = USAGE.search(ran.stdout)
    assert counted and int(counted["mau"]) > 0, ran.stdout

    server = subprocess.Popen(["/bin/sh", "-c", serve], cwd=cwd, env=_shell_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        _wait_for(f"http://127.0.0.1:{port}/healthz", server)
        ran = _shell(period, cwd)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert json.loads(ran.stdout)["mau"] == int(counted["mau"]), ran.stdout
        ran = _shell(invoices, cwd)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        listed = json.loads(ran.stdout)
        assert listed["team"] == "team-01" and listed["invoices"], ran.stdout
        with urllib.request.urlopen(page_address, timeout=DEFAULT_COMMAND_TIMEOUT  # noqa: S310
                                    ) as shown:
            assert "<html" in shown.read().decode().lower()
    finally:
        code, out = _stop(server, signal.SIGTERM)
    assert code == 0, out
    left = {pid: Path("/proc", pid, "cmdline").read_bytes() for pid in _processes_using(tmp_path)}
    assert not left, f"still running: {left}"


def test_demo_serve_answers_until_ctrl_c(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    port = free_port()
    demo = subprocess.Popen(
        [METERING, "demo", "--serve", "--port", str(port), "--teams", str(DEMO_TEAMS),
         "--users", str(DEMO_USERS), "--workdir", str(workdir)],
        cwd=cwd, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/healthz", demo)
        listed = _get_json(f"http://127.0.0.1:{port}/v1/teams/team-01/invoices")
        assert isinstance(listed, dict) and listed["invoices"], listed
    finally:
        code, out = _stop(demo, signal.SIGINT)
    assert code == 0, out
    assert "Traceback" not in out, out
    assert f"serving the demo's data on http://127.0.0.1:{port} " in out, out
    assert f"  http://127.0.0.1:{port}/v1/teams/team-01/invoices\n" in out, out
    assert f"  http://127.0.0.1:{port}/ui/teams/team-01\n" in out, out
    assert out.rstrip().endswith(f"stopped serving; data kept in {workdir}"), out
    left = {pid: Path("/proc", pid, "cmdline").read_bytes() for pid in _processes_using(tmp_path)}
    assert not left, f"still running after Ctrl-C: {left}"
