"""Progress bars (issue 15 item 6): shown on a terminal, quiet under --quiet and in logs."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.generator import generate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("progress") / "export"
    generate(out, patients=200, seed=8)
    return out


def ingest_output(export: Path, warehouse: Path, *options: str, tty: bool) -> str:
    """stderr (and stdout) of `redflags ingest`, on a pseudo-terminal or a pipe."""
    command = [sys.executable, "-m", "pipelines.cli", *options, "ingest"]
    command += ["--source", str(export), "--warehouse", str(warehouse)]
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    if not tty:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout + done.stderr
    main, child = pty.openpty()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=child, stderr=child)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert process.wait(timeout=300) == 0
    return b"".join(chunks).decode("utf-8", "replace")


def test_ingest_shows_a_progress_bar_on_a_terminal_only(export, tmp_path):
    shown = ingest_output(export, tmp_path / "a.duckdb", tty=True)
    assert "ingest: landing files" in shown and "ETA" in shown and " rows" in shown
    quiet = ingest_output(export, tmp_path / "b.duckdb", "--quiet", tty=True)
    assert "ETA" not in quiet and "ingest: landing files" not in quiet
    piped = ingest_output(export, tmp_path / "c.duckdb", tty=False)
    assert "ETA" not in piped and "ingest: landing files" not in piped
    assert "files: 7 loaded" in piped  # the summary lines stay
