"""Prefect's temporary server: started early, stopped on every exit path of a `redflags` command.

Without PREFECT_API_URL, Prefect 3 starts a temporary API server for the first flow run:
`prefect.server.api.server.SubprocessASGIServer`, a `python -m uvicorn` child process that
Prefect stops from an `atexit` handler. A process killed by SIGKILL (or SIGTERM, or the OOM
killer) runs no exit handler, so the server outlived it. The commands that run flows start
a small watchdog process first, which stops the server once the command's process is gone,
however it ended. Not prctl(PR_SET_PDEATHSIG) in the server: Prefect starts it with its own
Popen (no preexec hook), and that signal fires when the *thread* that started the child
ends, which in Prefect may be a worker thread.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
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
    is nothing to watch (a Prefect server is configured, or no Linux /proc)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value() or not os.path.isdir(f"/proc/{os.getpid()}"):
        return False
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
    """Start Prefect's temporary server now, in a thread, and return `wait()`: call it before
    the first flow run. The server (a uvicorn child process, 5-15 s to answer) then starts
    while this process imports the pipeline and checks its inputs, instead of after.

    Nothing happens when a server is configured (PREFECT_API_URL) or the temporary server is
    disabled. Prefect's own start is not safe to call from two threads at once (it marks the
    server running before it answers), hence the wait. If the early start fails, the flow
    run starts the server itself as usual and reports Prefect's own error."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return lambda: None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()

    def start() -> None:
        with suppress(Exception):  # the flow run tries again and reports the error
            server.start()

    thread = threading.Thread(target=start, name="prefect-server-start", daemon=True)
    thread.start()
    return thread.join
