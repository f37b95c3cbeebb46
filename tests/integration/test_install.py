"""`pip install usage-metering` without extras: enough for a product service to emit.

Builds a fresh virtualenv, installs this checkout in it (not editable, no extras; the
dependencies come from PyPI), and checks what the base install holds: the emitter imports,
the worker's, API's and embedded packages are absent, and the `metering` script says which
extra it needs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Downloads from PyPI: generous, since a slow mirror is not a failure of the package.
DEFAULT_INSTALL_TIMEOUT = 600.0
DEFAULT_RUN_TIMEOUT = 60.0
PIP_NETWORK_TIMEOUT_SECONDS = "60"
# Local state and build output that must not reach the build: a stale build/lib would be
# packed into the wheel as is, and a virtualenv is large.
NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache",
              ".ruff_cache", ".pytest_cache", ".hypothesis")
EXTRA_PACKAGES = ("faust", "chdb", "clickhouse_driver", "fastapi", "uvicorn", "rich",
                  "aiokafka", "pydantic")


def _clean_env() -> dict[str, str]:
    """This environment without what would make the new venv see this checkout's packages."""
    return {k: v for k, v in os.environ.items()
            if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
            and not k.startswith("METERING_")}


def _run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_base_install_has_the_emitter_and_nothing_of_the_worker(tmp_path: Path) -> None:
    # The build runs in a copy: pip builds in the source tree, which would write build/ and
    # egg-info into the shared checkout and pick up whatever stale build/ lies there.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], tmp_path, DEFAULT_RUN_TIMEOUT)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = _run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-input", "--timeout", PIP_NETWORK_TIMEOUT_SECONDS, str(source)],
        tmp_path, DEFAULT_INSTALL_TIMEOUT,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    # -I: neither the working folder nor PYTHONPATH may stand in for the installed package
    probe = (
        "import importlib.util, json, metering\n"
        "from metering.producer import BatchingEmitter\n"
        f"extras = {EXTRA_PACKAGES!r}\n"
        "print(json.dumps({'module': metering.__file__, 'emitter': BatchingEmitter.__name__,\n"
        "    'present': [n for n in extras if importlib.util.find_spec(n) is not None]}))\n"
    )
    probed = _run([str(python), "-I", "-c", probe], tmp_path, DEFAULT_RUN_TIMEOUT)
    assert probed.returncode == 0, probed.stderr
    found = json.loads(probed.stdout)
    assert Path(found["module"]).is_relative_to(venv), found["module"]
    assert found["emitter"] == "BatchingEmitter"
    assert found["present"] == [], f"the base install pulls in {found['present']}"

    command = _run([str(venv / "bin" / "metering"), "--help"], tmp_path, DEFAULT_RUN_TIMEOUT)
    assert command.returncode != 0
    assert "Traceback" not in command.stdout + command.stderr, command.stderr
    lines = command.stderr.splitlines()
    assert len(lines) == 1, command.stderr
    assert lines[0].startswith("metering: error: "), lines[0]
    assert "usage-metering[" in lines[0], f"no hint about the extras: {lines[0]}"
