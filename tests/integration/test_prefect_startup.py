"""The fixed cost of a `redflags` command: no import it does not need, Prefect's server early.

Each check runs in a fresh Python process (imports are per process).
"""

from __future__ import annotations

import os
import subprocess
import sys


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
        check=False,
    )


def test_a_command_does_not_import_the_iri_grammar_that_jsonschema_would_build():
    done = python(
        "import sys\n"
        "from pipelines.prefect_server import skip_unused_imports\n"
        "skip_unused_imports()\n"
        "import prefect.flows, jsonschema\n"
        "jsonschema.validate({'a': 1}, {'properties': {'a': {'type': 'integer'}}})\n"
        "print(sys.modules.get('rfc3987_syntax', 'absent'))\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] in ("None", "absent")


def test_with_a_configured_server_nothing_is_started_early():
    done = python(
        "from pipelines.prefect_server import start_server_early\n"
        "wait = start_server_early()\n"
        "wait()\n"
        "from prefect.server.api.server import SubprocessASGIServer\n"
        "print(SubprocessASGIServer().running)\n",
        PREFECT_API_URL="http://127.0.0.1:9/api",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "False"


def test_the_temporary_server_started_early_is_the_one_flows_use_and_it_stops_at_exit():
    done = python(
        "from pipelines.prefect_server import start_server_early\n"
        "wait = start_server_early()\n"
        "wait()\n"
        "import httpx\n"
        "from prefect.server.api.server import SubprocessASGIServer\n"
        "server = SubprocessASGIServer()\n"
        "print(server.running, httpx.get(server.api_url + '/health').status_code,"
        " server.server_process.pid)\n"
        "from prefect import flow\n"
        "@flow\n"
        "def f():\n"
        "    return 3\n"
        "print(f(), SubprocessASGIServer().server_process.pid)\n",
        PREFECT_API_URL="",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = done.stdout.splitlines()[-2:]
    running, status, pid = first.split()
    assert (running, status) == ("True", "200")
    assert second.split() == ["3", pid]  # the flow ran against the server started early
    assert not os.path.exists(f"/proc/{pid}")  # Prefect stopped it at exit
