"""The fixed cost of a `redflags` command: no import it does not need, Prefect's server early.

Each check runs in a fresh Python process (imports are per process).
"""

from __future__ import annotations

import os
import subprocess
import sys

# Script text for the test's subprocess: the Prefect server processes it started itself.
_SERVER_CHILDREN = (
    "def server_child(p):\n"
    "    try:\n"
    "        ppid = open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[1]\n"
    "        cmd = open(f'/proc/{p}/cmdline', 'rb').read()\n"
    "    except OSError:\n"
    "        return False\n"
    "    return ppid == str(os.getpid()) and b'server.api.server:create_app' in cmd\n"
    "children = [p for p in os.listdir('/proc') if p.isdigit() and server_child(p)]\n"
)


def python(code: str, unset: str = "", **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={name: v for name, v in {**os.environ, **env}.items() if name != unset},
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
    """The server started early records the flow run, its state and its task run, is the
    only server started, costs this process no import of Prefect's server modules, and is
    stopped when the process exits."""
    done = python(
        "import sys\n"
        "from pipelines.prefect_server import start_server_early\n"
        "wait = start_server_early()\n"
        "wait()\n"
        "from prefect.settings import PREFECT_API_URL\n"
        "url = PREFECT_API_URL.value()\n"
        "from prefect import flow, task\n"
        "from prefect.runtime import flow_run\n"
        "@task\n"
        "def t():\n"
        "    return 3\n"
        "@flow\n"
        "def f():\n"
        "    return t(), flow_run.id\n"
        "value, run_id = f()\n"
        "import httpx\n"
        "run = httpx.get(f'{url}/flow_runs/{run_id}').json()\n"
        "tasks = httpx.post(f'{url}/task_runs/filter',"
        " json={'flow_runs': {'id': {'any_': [str(run_id)]}}}).json()\n"
        "import os\n" + _SERVER_CHILDREN + "print(url, value, run['state_type'], len(tasks),"
        " 'prefect.server.api.server' in sys.modules, ','.join(children))\n",
        PREFECT_API_URL="",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    url, value, state, tasks, imported, children = done.stdout.splitlines()[-1].split(" ", 5)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
    assert (value, state, tasks) == ("3", "COMPLETED", "1")  # the flow run and its task run
    assert imported == "False"  # the server's modules stay in the server's process
    assert len(children.split(",")) == 1  # one server: the flow did not start its own
    assert not os.path.exists(f"/proc/{children}")  # stopped at exit


def test_the_dead_view_at_link_of_the_temporary_server_is_hidden_and_a_real_one_kept(
    monkeypatch,
):
    """Prefect logs "View at <server>/runs/..." for a server it did not start; the temporary
    server the command starts serves no UI, so that line is hidden without -v. A configured
    server's link (another address) still shows."""
    import logging

    from pipelines import prefect_server
    from pipelines.cli import _OnlyOurInfo

    monkeypatch.setattr(prefect_server, "TEMPORARY_ADDRESS", "http://127.0.0.1:5000")

    def shown(message: str) -> bool:
        record = logging.LogRecord("prefect.flow_runs", logging.INFO, "", 0, message, None, None)
        return _OnlyOurInfo().filter(record)

    assert not shown("View at http://127.0.0.1:5000/runs/flow-run/1")
    assert shown("View at http://127.0.0.1:4200/runs/flow-run/1")
    assert shown("[ingest] started")


# A flow run with one task run and one log line through the server started early; prints the
# API address, the run's state, its task runs, its log lines that came from the flow, the
# server children started, and the environment the server (the first child) was started with.
RUN_ON_EARLY_SERVER = (
    "import json, os\n"
    "from pipelines.prefect_server import start_server_early\n"
    "wait = start_server_early()\n"
    "wait()\n"
    "from prefect.settings import PREFECT_API_URL\n"
    "url = PREFECT_API_URL.value()\n"
    "from prefect import flow, get_run_logger, task\n"
    "from prefect.runtime import flow_run\n"
    "@task\n"
    "def t():\n"
    "    return 3\n"
    "@flow\n"
    "def f():\n"
    "    get_run_logger().info('a line from the flow')\n"
    "    return t(), flow_run.id\n"
    "value, run_id = f()\n"
    "import httpx, time\n"
    "run = httpx.get(f'{url}/flow_runs/{run_id}').json()\n"
    "tasks = httpx.post(f'{url}/task_runs/filter',"
    " json={'flow_runs': {'id': {'any_': [str(run_id)]}}}).json()\n"
    "for _ in range(50):  # logs are sent in batches, every 2 s by default\n"
    "    logs = httpx.post(f'{url}/logs/filter',"
    " json={'logs': {'flow_run_id': {'any_': [str(run_id)]}}}).json()\n"
    "    if any(l['message'] == 'a line from the flow' for l in logs):\n"
    "        break\n"
    "    time.sleep(0.2)\n"
    + _SERVER_CHILDREN
    + "env = dict(v.split('=', 1) for v in open(f'/proc/{children[0]}/environ').read().split('\\0')"
    " if '=' in v)\n"
    "print(json.dumps({'url': url, 'state': run['state_type'], 'tasks': len(tasks),"
    " 'logs': sum(l['message'] == 'a line from the flow' for l in logs),"
    " 'servers': len(children), 'env': env}))\n"
)


def run_on_early_server(**env: str) -> dict:
    import json

    done = python(
        RUN_ON_EARLY_SERVER, PREFECT_API_URL="", PREFECT_LOGGING_TO_API_ENABLED="true", **env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_the_early_server_runs_without_the_services_one_run_does_not_need():
    """Automations, the event feed's database copy, the UI streams and the usage heartbeat
    are off in the temporary server; the flow run, its state, its task run and its logs
    are still recorded. A setting the user gave wins."""
    from pipelines.prefect_server import SINGLE_RUN_SERVER_SETTINGS

    seen = run_on_early_server(PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED="true")
    assert (seen["state"], seen["tasks"], seen["logs"], seen["servers"]) == ("COMPLETED", 1, 1, 1)
    expected = {**SINGLE_RUN_SERVER_SETTINGS, "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true"}
    # lower case: Prefect passes the values it parsed on as "True"/"False"
    assert {name: str(seen["env"].get(name)).lower() for name in expected} == expected
    assert seen["env"]["PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED"] == "false"


def test_an_early_server_slower_than_prefects_timeout_is_waited_for_not_replaced():
    """On a loaded machine the early server took longer than Prefect's start-up timeout;
    it was stopped and Prefect started a second server from nothing. A server still
    starting is now waited for: one server, the one started early."""
    seen = run_on_early_server(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1")
    assert seen["url"].startswith("http://127.0.0.1:")
    assert (seen["state"], seen["tasks"], seen["servers"]) == ("COMPLETED", 1, 1)


def test_the_early_server_process_does_not_import_the_iri_grammar_either():
    """The server process imports prefect, and so jsonschema, as the command does: it skips
    the same unused IRI grammar (about 1.3 CPU s of its start) and still serves the API.
    Seen through Python's import log (PYTHONPROFILEIMPORTTIME, inherited by the server)."""
    done = python(
        "from pipelines.prefect_server import skip_unused_imports, start_server_early\n"
        "skip_unused_imports()\n"
        "wait = start_server_early()\n"
        "wait()\n"
        "from prefect.settings import PREFECT_API_URL\n"
        "import httpx\n"
        "print(httpx.get(f'{PREFECT_API_URL.value()}/health').status_code)\n",
        PREFECT_API_URL="",
        PYTHONPROFILEIMPORTTIME="1",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "200"
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "uvicorn" in imported  # the server's imports are logged here
    assert "jsonschema._format" in imported
    # rfc3987_syntax itself is logged (the failed import, a few microseconds); the grammar
    # library it builds with is not imported at all
    assert "lark" not in imported


def test_the_early_server_starts_before_this_process_imports_prefect():
    """The server's start (the longest wait of a short run) overlaps this process's import
    of Prefect (about 1.5 s) instead of following it."""
    done = python(
        "import os, sys\n"
        "from pipelines.prefect_server import start_server_early\n"
        "wait = start_server_early()\n"
        "before = 'prefect' in sys.modules\n" + _SERVER_CHILDREN + "wait()\n"
        "from prefect.settings import PREFECT_API_URL\n"
        "import httpx\n"
        "ok = httpx.get(f'{PREFECT_API_URL.value()}/health').status_code\n"
        "print(before, len(children), ok)\n",
        PREFECT_API_URL="",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["False", "1", "200"]


def test_a_server_configured_in_prefects_profile_is_used_and_the_early_one_stopped(tmp_path):
    """PREFECT_API_URL in Prefect's profile (not the environment) is only known once Prefect
    is imported: the server started early is then stopped unused, and Prefect keeps the
    configured address."""
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        'active = "remote"\n[profiles.remote]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n'
    )
    done = python(
        "import os\n"
        "from pipelines import prefect_server\n"
        "wait = prefect_server.start_server_early()\n"
        "server = prefect_server.TEMPORARY_SERVER.process\n"
        "wait()\n"
        "from prefect.settings import PREFECT_API_URL\n"
        "print(PREFECT_API_URL.value(), server.poll() is not None, prefect_server.TEMPORARY_ADDRESS)\n",
        PREFECT_PROFILES_PATH=str(profiles),
        unset="PREFECT_API_URL",  # the profile's value, not an empty one from the environment
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["http://127.0.0.1:9/api", "True", "None"]


def test_redflags_ingest_waits_for_its_early_server_past_prefects_timeout(tmp_path):
    """`redflags ingest` left the temporary server to Prefect, whose own start gives up after
    its start-up timeout (20 s by default): on a busy machine (load 20, 2026-12-08) the
    ingest of a 1,130-patient OMOP sample ended in "internal error (RuntimeError: Timed out
    while attempting to connect to ephemeral Prefect API server.)" before reading a row.
    It now starts its server early, as `redflags run` does, and waits for it (a timeout of
    0 s stands in for the busy machine: Prefect's own start then gives up at once)."""
    export, warehouse = tmp_path / "export", tmp_path / "w.duckdb"
    made = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "-q", "generate", "--patients", "60",
         "--out", str(export)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "-q", "ingest", "--source", str(export),
         "--warehouse", str(warehouse)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "0"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.patients").fetchone()[0] == 60


def test_prefects_own_start_timeout_is_one_clear_line_not_an_internal_error():
    from pipelines.cli import classify

    code, message = classify(
        RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")
    )
    assert code == 2 and "internal error" not in message
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in message
    assert "PREFECT_API_URL" in message and "unchanged" in message
