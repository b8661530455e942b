"""Prefect's temporary server: started early, stopped on every exit path of a `redflags` command.

Without PREFECT_API_URL, Prefect 3 starts a temporary API server for the first flow run:
`prefect.server.api.server.SubprocessASGIServer`, a `python -m uvicorn` child process that
Prefect stops from an `atexit` handler. A process killed by SIGKILL (or SIGTERM, or the OOM
killer) runs no exit handler, so the server outlived it. The commands that run flows start
a small watchdog process first, which stops the server once the command's process is gone,
however it ended. Not prctl(PR_SET_PDEATHSIG) in the server: Prefect starts it with its own
Popen (no preexec hook), and that signal fires when the *thread* that started the child
ends, which in Prefect may be a worker thread.

`redflags run` and `demo` start that same child themselves, early (`start_server_early`,
`TemporaryServer`), and stop it from their own exit handler; the watchdog covers both.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import suppress

# Runs in its own small process, started before the flow: every half second it notes the
# command's child processes that are Prefect's server; once the command is gone (this
# process re-parented: getppid() changed), it stops those still running as Prefect would
# (SIGTERM, then SIGKILL after 5 s) and ends. On a normal exit Prefect has stopped them.
WATCHDOG = r"""
import os, signal, sys, time
parent, me = int(sys.argv[1]), os.getpid()
# Spelt in two parts so that this watchdog's own command line (this code) does not match.
MARK = b"prefect.server.api.server" + b":create_app"

def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""

def servers_of(ppid):
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        pid = int(name)
        if pid != me and int(stat.rsplit(b")", 1)[1].split()[1]) == ppid and MARK in cmdline(pid):
            found.add(pid)
    return found

seen = set()
while os.getppid() == parent:
    seen = {p for p in seen if MARK in cmdline(p)} | servers_of(parent)
    time.sleep(0.5)
alive = [p for p in seen if MARK in cmdline(p)]
for pid in alive:
    os.kill(pid, signal.SIGTERM)
for _ in range(50):
    if not any(MARK in cmdline(p) for p in alive):
        break
    time.sleep(0.1)
for pid in alive:
    if MARK in cmdline(pid):
        os.kill(pid, signal.SIGKILL)
"""


def start_watchdog() -> bool:
    """Start the watchdog of Prefect's temporary server for this process; False when there
    is nothing to watch (a Prefect server is configured, or no Linux /proc). One per
    process: True at once when `start_server_early` started it."""
    if WATCHDOG_STARTED:
        return True
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return False
    return _start_watchdog_process()


WATCHDOG_STARTED = False  # this process started its watchdog


def _start_watchdog_process() -> bool:
    global WATCHDOG_STARTED
    if not os.path.isdir(f"/proc/{os.getpid()}"):
        return False
    WATCHDOG_STARTED = True
    subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )
    return True


def skip_unused_imports() -> None:
    """Keep modules a `redflags` command never uses from being imported on the way.

    `import prefect` imports jsonschema, whose format checkers import `rfc3987_syntax` when
    it is installed (Jupyter's dependencies install it); that module builds a Lark grammar
    at import, about 1.3 s of CPU on every command, for an `iri` format no schema of ours or
    Prefect's uses. A None entry in sys.modules makes that optional import fail at once, as
    if the package were absent (jsonschema then skips that one format). Only for this
    process: call it first thing in a command, before anything imports prefect."""
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def start_server_early() -> Callable[[], None]:
    """Start Prefect's temporary server now, before this process imports Prefect, and return
    `wait()`: call it before the first flow run. The server (a uvicorn child process, 3-15 s
    to answer; more on a fresh database, which it migrates) then starts while this process
    imports Prefect and the pipeline, checks its inputs and, in `redflags demo`, generates
    the export.

    The child is the one Prefect itself would start (same command; see `TemporaryServer`),
    started without importing Prefect's server modules into this process (2 s of CPU that
    only the server needs), nor Prefect itself (about 1.5 s before the server could start).
    `wait()` then points Prefect at it through PREFECT_API_URL, so flow runs, task runs,
    states and logs go to it as they would to Prefect's own temporary server; the server is
    stopped at exit, and by the watchdog (started first, here) if the process is killed.
    Nothing is started when PREFECT_API_URL or PREFECT_SERVER_EPHEMERAL_ENABLED=false is in
    the environment; when Prefect's profile or settings files say so instead (read once
    Prefect is imported, in `wait()`), the server started is stopped unused (its watchdog
    then idles until the command ends). If the server does not answer, `wait()` stops it
    and leaves Prefect to start its own (which reports its own error)."""
    if os.environ.get("PREFECT_API_URL") or _false(
        os.environ.get("PREFECT_SERVER_EPHEMERAL_ENABLED", "true")
    ):
        return lambda: None
    global TEMPORARY_SERVER
    _start_watchdog_process()  # before the server: a kill from now on still stops it
    server = TEMPORARY_SERVER = TemporaryServer()
    server.start()
    atexit.register(server.stop)

    def wait() -> None:
        from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

        if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
            server.stop()  # a server configured outside the environment, or none wanted
            return
        _point_prefect_at(server.api_url)
        if not server.wait_ready():
            server.stop()
            _point_prefect_at(None)

    return wait


def _false(value: str) -> bool:
    return value.strip().lower() in ("0", "false", "no", "off", "f", "n")


# The address of the temporary server this process started (None: none). Prefect logs a
# "View at <address>/runs/..." link for a server it did not start itself; this one serves
# no UI, so the command hides that line (pipelines/cli/__init__.py: _OnlyOurInfo).
TEMPORARY_ADDRESS: str | None = None
TEMPORARY_SERVER: TemporaryServer | None = None  # the server itself (bench/demo_time.py)


def _point_prefect_at(api_url: str | None) -> None:
    """Make this process's Prefect client use `api_url` (None: back to Prefect's own
    temporary server). Prefect reads its settings once at import; this refreshes them."""
    from prefect.context import refresh_global_settings_context

    global TEMPORARY_ADDRESS
    if api_url is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = api_url
    TEMPORARY_ADDRESS = api_url.removesuffix("/api") if api_url else None
    refresh_global_settings_context()


# Prefect services the temporary server of one local run does not need (Prefect 3.8 setting
# names, `prefect.settings`; a value already in the environment wins). An ephemeral server
# already skips the scheduler, late runs, foreman, repossessor, cancellation clean-up and
# pause expirations; of the services it still starts, these serve other clients, not the run:
# automations (triggers and their actions), the event feed's copy in the database (and its
# vacuum), the websocket streams of events and logs to a UI (this server serves none), and
# the usage heartbeat sent to Prefect. Kept: the API itself (flow runs, their states and
# logs) and the task run recorder (task runs reach the database through it).
SINGLE_RUN_SERVER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
    "PREFECT_SERVER_EVENTS_STREAM_OUT_ENABLED": "false",
    "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}

# How long `wait_ready` keeps waiting, past Prefect's start-up timeout, for a server that is
# still running: on a loaded machine the early server took longer than the timeout (the
# 10k check of docs/benchmark.md), and giving up on it made Prefect start a second server
# from nothing, paying the whole start again on a machine already short of CPU.
PATIENCE_SECONDS = 600.0


# The server process's main: `python -m uvicorn ...` as Prefect runs it, after marking the
# imports no server uses as absent (`skip_unused_imports`: the server imports prefect, and so
# jsonschema, as the command does; the IRI grammar cost 1.2 CPU s alone, and skipping it
# took the server's start from 6.3-6.9 to 2.5-3.1 CPU s: docs/benchmark.md).
SERVER_MAIN = (
    "import sys; sys.modules.setdefault('rfc3987_syntax', None); sys.argv[0] = 'uvicorn'; "
    "from uvicorn.main import main; main(prog_name='uvicorn')"
)


class TemporaryServer:
    """Prefect's temporary API server as `prefect.server.api.server.SubprocessASGIServer`
    starts it (Prefect 3.8: `python -m uvicorn --factory
    prefect.server.api.server:create_app` on a free local port, the UI off), without
    importing that module (nor Prefect) here, and with the same unused import skipped as in
    the command (`SERVER_MAIN`). Prefect also passes the settings its own process read; this
    server reads them itself, from the same environment, profile and files."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        self.port = _free_port()
        env = {
            **SINGLE_RUN_SERVER_SETTINGS,
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop("PREFECT_API_URL", None)  # the server's own settings: no client URL
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SERVER_MAIN,
                "--app-dir",
                str(_site_packages_of("prefect")),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],  # fmt: skip
            env=env,
            stdin=subprocess.DEVNULL,
        )

    def wait_ready(self, patience: float = PATIENCE_SECONDS) -> bool:
        """Wait until the server answers /health; False when it exited, or did not answer
        within the longer of Prefect's start-up timeout and `patience` seconds. A server
        still starting is worth more than a new one (`PATIENCE_SECONDS`)."""
        import time

        import httpx
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        timeout = max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), patience)
        deadline = time.monotonic() + timeout
        with httpx.Client() as client:
            while time.monotonic() < deadline and self.process.poll() is None:
                with suppress(httpx.HTTPError):
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return True
                time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Stop the server as Prefect does: SIGTERM, SIGKILL after 5 s."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def _site_packages_of(package: str):
    """The folder `package` is installed in (what `prefect.__module_path__.parent` is),
    found without importing it."""
    import importlib.util
    from pathlib import Path

    return Path(importlib.util.find_spec(package).origin).parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
