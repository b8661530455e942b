"""The environment `make` gives each command: `make demo` keeps the flow's logs in Prefect
(issue 16: faster start-up "without giving up the flow runs, their states and their logs"),
while the test targets do not send the log lines of their hundreds of short flows."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def echo_venv(tmp_path: Path) -> Path:
    """A venv stand-in whose python and redflags print the one setting asked about, so the
    Makefile's real recipes run without starting the pipeline."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("python", "redflags", "prefect"):
        script = venv / "bin" / name
        script.write_text('#!/bin/sh\necho "LOGS_TO_API=${PREFECT_LOGGING_TO_API_ENABLED-unset}"\n')
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    (venv / ".installed").touch()
    return venv


def logs_setting(target: str, venv: Path, prefect_home: Path) -> str:
    prefect_home.mkdir(exist_ok=True)
    (prefect_home / "prefect.db").touch()
    done = subprocess.run(
        ["make", "-s", "-C", str(REPO), target, f"VENV={venv}", f"PREFECT_HOME={prefect_home}"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_demo_keeps_its_logs_in_prefect_and_the_tests_do_not(echo_venv, tmp_path):
    home = tmp_path / "prefect"
    assert logs_setting("demo", echo_venv, home) == "LOGS_TO_API=unset"  # Prefect's default: on
    assert logs_setting("test", echo_venv, home) == "LOGS_TO_API=false"
