"""`redflags dashboard`: serve the results dashboard (pipelines/dashboard) on 127.0.0.1.

Runs `streamlit run pipelines/dashboard/app.py` in a child process, headless, bound to the
loopback address only and without usage statistics; the data source (a warehouse, read
through its `release` schema only, or a Parquet folder from `redflags export`) is passed
in the environment. Stops with Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

ADDRESS = "127.0.0.1"  # never a public interface: publishing is a deliberate, separate step
DEFAULT_PORT = 8501
APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def configure_cli(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--warehouse", type=Path, help="DuckDB warehouse (schema release is read)")
    source.add_argument("--parquet", type=Path, help="folder written by `redflags export`")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8501)")


def run_cli(args: argparse.Namespace) -> int:
    from pipelines.dashboard.data import Source, SourceError, check_source
    from pipelines.errors import UserFacingError

    try:
        source = check_source(Source(warehouse=args.warehouse, parquet=args.parquet))
    except SourceError as exc:
        raise UserFacingError(str(exc)) from None
    print(f"Serving the dashboard on http://{ADDRESS}:{args.port} (Ctrl-C stops it)", flush=True)
    return serve(streamlit_command(args.port), streamlit_env(source))


def serve(command: list[str], env: dict[str, str]) -> int:
    """Run the server until it ends; stopping this process (Ctrl-C or SIGTERM, as a service
    manager sends) stops the server too, so no orphan keeps the port and the data open."""
    server = subprocess.Popen(command, env=env)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return server.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def streamlit_command(port: int) -> list[str]:
    """The `streamlit run` command line: loopback only, headless, no usage statistics."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        f"--server.address={ADDRESS}",
        f"--server.port={port}",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        "--client.toolbarMode=viewer",  # no "Deploy" button: this app is not for the cloud
        "--server.fileWatcherType=none",
        "--global.developmentMode=false",
    ]  # fmt: skip


def streamlit_env(source) -> dict[str, str]:
    """This process's environment plus the dashboard's source (and nothing else of ours)."""
    from pipelines.dashboard.data import PARQUET_ENV, WAREHOUSE_ENV

    env = {k: v for k, v in os.environ.items() if k not in (WAREHOUSE_ENV, PARQUET_ENV)}
    if source.warehouse is not None:
        env[WAREHOUSE_ENV] = str(Path(source.warehouse).resolve())
    else:
        env[PARQUET_ENV] = str(Path(source.parquet).resolve())
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    return env
