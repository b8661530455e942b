"""Faults a user or the machine causes, as the `redflags` command shows them (issue 11).

Every case runs the real command line in a subprocess and asserts the outcome class: exit
2 with one line `redflags <command>: error: ...` for what the user can fix, exit 1 with
"run with -v" for internal errors, never a traceback without -v. Plus the lock every writer
takes, and the shrink guard that keeps a truncated export from overwriting good tables.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from pipelines.cli import classify
from pipelines.errors import IngestError
from pipelines.generator import generate
from pipelines.ingest import ingest_export
from pipelines.settings import MAX_ROW_DROP_FRACTION, SettingsError, load_settings
from pipelines.study import StudySteps, publish, run_study
from pipelines.warehouse import WarehouseBusyError, connect, warehouse_lock

REPO = Path(__file__).resolve().parents[2]
REDFLAGS = [sys.executable, "-m", "pipelines.cli"]


def redflags(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real command line, in its own process (as a user runs it)."""
    return subprocess.run(
        [*REDFLAGS, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if ": error: " in line]


def assert_clear_error(result, command: str, code: int, *, only_line: bool = True) -> str:
    """Exit `code`, no traceback, exactly one error line (the only stderr line if asked)."""
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"redflags {command}: error: "), lines
    if only_line:
        assert result.stderr.strip() == lines[0], result.stderr[-3000:]
    else:  # after Prefect started: its log lines, one state record each, not the exception
        others = [line for line in result.stderr.splitlines() if line != lines[0]]
        assert all(LOG_LINE.match(line) or line.startswith("See https://") for line in others)
        assert not [line for line in others if "exception during" in line or "failed with" in line]
    return lines[0]


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR) ")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "export"
    generate(out, patients=150, seed=3)
    return out


@pytest.fixture
def loaded(export, tmp_path) -> Path:
    """A warehouse with the export ingested once (no Prefect: the plain function)."""
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    ingest_export(export, warehouse, log=lambda _: None)
    return warehouse


def raw_counts(warehouse: Path) -> dict[str, int]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'raw' ORDER BY 1"
        ).fetchall()]  # fmt: skip
        return {t: con.execute(f'SELECT count(*) FROM raw."{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()


def truncated(export: Path, to: Path, file: str, keep_fraction: float) -> Path:
    """A copy of the export with `file` cut to its header plus a fraction of its rows."""
    shutil.copytree(export, to)
    lines = (export / file).read_text().splitlines(keepends=True)
    (to / file).write_text("".join(lines[: 1 + int((len(lines) - 1) * keep_fraction)]))
    return to


# ---------------------------------------------------------------- one lock for every writer


def test_ingest_on_a_warehouse_a_run_holds_is_a_clear_busy_error(loaded, export):
    before = raw_counts(loaded)
    with warehouse_lock(loaded):  # as a run between two of its stages
        result = redflags("ingest", "--source", export, "--warehouse", loaded)
    line = assert_clear_error(result, "ingest", 2)
    assert "another run is using" in line and "--wait" in line
    assert raw_counts(loaded) == before


def test_run_on_a_busy_warehouse_is_one_line_before_prefect_starts(loaded, export):
    with warehouse_lock(loaded):
        result = redflags("run", "--source", export, "--warehouse", loaded)
    assert "another run is using" in assert_clear_error(result, "run", 2)


def test_ingest_waits_for_the_lock_when_asked(loaded, export):
    holding, release, released = threading.Event(), threading.Event(), []

    def hold():
        with warehouse_lock(loaded):
            holding.set()
            release.wait(60)
            released.append(time.monotonic())

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30)
        with pytest.raises(WarehouseBusyError, match="another run is using"):
            ingest_export(export, loaded, log=lambda _: None)  # no wait: refused at once
        threading.Timer(1.0, release.set).start()
        ingest_export(export, loaded, log=lambda _: None, wait_seconds=60)  # waits, then runs
        done = time.monotonic()
    finally:
        release.set()
        holder.join()
    assert released and done >= released[0]


def test_a_run_and_an_ingest_racing_the_run_keeps_its_own_export(export, tmp_path):
    """A real race: a run (this process) stops between ingest and its next stage while an
    `redflags ingest` of another export (another process) tries to write the warehouse."""
    warehouse = tmp_path / "race.duckdb"
    other = tmp_path / "other"
    generate(other, patients=60, seed=4)
    outcome: dict = {}

    def contracts_while_another_ingest_tries(*_args, **_kwargs):
        outcome["ingest"] = redflags("ingest", "--source", other, "--warehouse", warehouse)
        raise RuntimeError("stop the run here")  # the rest of the run is not the point

    steps = StudySteps(input_contracts=contracts_while_another_ingest_tries)
    with pytest.raises(RuntimeError, match="stop the run here"):
        run_study(export, warehouse, load_settings(None), steps=steps, say=lambda _: None)
    assert_clear_error(outcome["ingest"], "ingest", 2)
    assert "another run is using" in outcome["ingest"].stderr
    patients = raw_counts(warehouse)["patients"]
    assert patients == len((export / "patients.csv").read_text().splitlines()) - 1


def test_a_reader_during_publish_sees_the_old_tables_then_the_new(warehouse):
    con = connect(warehouse)
    for run, values in (("old", [1, 2]), ("new", [7, 8, 9])):
        con.execute("CREATE SCHEMA IF NOT EXISTS mart__build")
        con.execute("CREATE SCHEMA IF NOT EXISTS release__build")
        con.execute("CREATE OR REPLACE TABLE mart__build.a AS SELECT unnest(?) AS n", [values])
        con.execute("CREATE OR REPLACE TABLE release__build.b AS SELECT unnest(?) AS n", [values])
        seen = {}

        def read_midway(c, seen=seen):
            reader = c.cursor()  # another connection to the same database
            seen["mart"] = reader.execute("SELECT count(*) FROM mart.a").fetchone()[0]
            seen["release"] = reader.execute("SELECT count(*) FROM release.b").fetchone()[0]
            reader.close()
            return {}

        if run == "old":
            publish(con, run)
            continue
        publish(con, run, also=read_midway)  # inside publish's transaction, after the copies
        assert seen == {"mart": 2, "release": 2}  # old, whole
        assert con.execute("SELECT count(*), min(run_id) FROM mart.a").fetchone() == (3, "new")
    con.close()


# ---------------------------------------------------------------- no sudden shrink


def test_a_header_only_required_file_is_refused_and_nothing_changes(loaded, export, tmp_path):
    before = raw_counts(loaded)
    emptied = truncated(export, tmp_path / "emptied", "conditions.csv", 0.0)
    with pytest.raises(IngestError, match=r"required table\(s\) conditions have no rows"):
        ingest_export(emptied, loaded, log=lambda _: None)
    with pytest.raises(IngestError, match="no rows"):  # --accept-shrink does not allow it
        ingest_export(emptied, loaded, log=lambda _: None, accept_shrink=True)
    assert raw_counts(loaded) == before


def test_a_first_ingest_of_an_empty_required_table_is_refused(export, tmp_path):
    emptied = truncated(export, tmp_path / "emptied", "conditions.csv", 0.0)
    with pytest.raises(IngestError, match="no rows"):
        ingest_export(emptied, tmp_path / "new.duckdb", log=lambda _: None)


def test_a_table_that_lost_most_of_its_rows_needs_accept_shrink(loaded, export, tmp_path):
    before = raw_counts(loaded)
    keep = (1 - MAX_ROW_DROP_FRACTION) / 2  # well past the threshold
    cut = truncated(export, tmp_path / "cut", "observations.csv", keep)
    with pytest.raises(IngestError) as info:
        ingest_export(cut, loaded, log=lambda _: None)
    message = str(info.value)
    assert f"observations {before['observations']:,} -> " in message
    assert "--accept-shrink" in message
    assert raw_counts(loaded) == before
    ingest_export(cut, loaded, log=lambda _: None, accept_shrink=True)
    assert raw_counts(loaded)["observations"] < before["observations"] * keep + 2


def test_a_small_drop_is_not_a_shrink(loaded, export, tmp_path):
    cut = truncated(export, tmp_path / "cut", "observations.csv", 0.9)
    summary = ingest_export(cut, loaded, log=lambda _: None)
    assert summary.table_rows["observations"] < raw_counts(loaded)["observations"] + 1


def test_run_cli_refuses_a_shrunk_export_in_one_line_after_prefect(loaded, export, tmp_path):
    """Through Prefect: its failed task and flow records carry no traceback without -v."""
    before = raw_counts(loaded)
    emptied = truncated(export, tmp_path / "emptied", "conditions.csv", 0.0)
    result = redflags("ingest", "--source", emptied, "--warehouse", loaded)
    line = assert_clear_error(result, "ingest", 2, only_line=False)
    assert "conditions have no rows" in line
    assert raw_counts(loaded) == before


# ---------------------------------------------------------------- clear errors


@pytest.mark.parametrize(
    ("command", "config", "expected"),
    [
        ("run", "washout_dayz = 10\n", "did you mean washout_days?"),
        ("run", "horizon_days = 9000000000\n", "horizon_days must be at most 36,500"),
        ("demo", "min_cell = 0\n", "min_cell must be at least 1"),
        ("run", "washout_days = [\n", "not valid TOML"),
    ],
)
def test_a_bad_config_is_one_line_before_prefect_starts(
    export, tmp_path, command, config, expected
):
    cfg = tmp_path / "study.toml"
    cfg.write_text(config)
    where = (
        ["--source", export, "--warehouse", tmp_path / "w.duckdb"]
        if command == "run"
        else ["--out", tmp_path / "demo", "--patients", "20"]
    )
    result = redflags(command, *where, "--config", cfg)
    assert expected in assert_clear_error(result, command, 2)
    assert not (tmp_path / "w.duckdb").exists() and not (tmp_path / "demo").exists()


def test_every_whole_number_setting_has_bounds():
    from pipelines.settings import INT_BOUNDS, StudySettings

    ints = [
        f.name
        for f in StudySettings.__dataclass_fields__.values()
        if isinstance(getattr(StudySettings(), f.name), int)
        and not isinstance(getattr(StudySettings(), f.name), bool)
    ]
    assert sorted(ints) == sorted(INT_BOUNDS)
    for name, (_low, high) in INT_BOUNDS.items():
        with pytest.raises(SettingsError, match=name):
            StudySettings(**{name: high + 1})


def test_a_binary_file_as_an_export_csv_is_one_line(export, tmp_path):
    broken = tmp_path / "binary"
    shutil.copytree(export, broken)
    no_newline = bytes(b for b in range(256) if b not in (10, 13))
    (broken / "conditions.csv").write_bytes(no_newline * 1000)  # 254 kB, no line end
    result = redflags("ingest", "--source", broken, "--warehouse", tmp_path / "w.duckdb")
    assert "conditions.csv" in assert_clear_error(result, "ingest", 2)


def test_a_warehouse_where_a_file_is_is_one_line(export, tmp_path):
    result = redflags(
        "ingest", "--source", export, "--warehouse", export / "patients.csv" / "w.duckdb"
    )
    assert "patients.csv" in assert_clear_error(result, "ingest", 2)


def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(
    not _can_mount(), reason="needs root and unshare to mount a private tmpfs"
)


def redflags_on_tmpfs(folder: Path, options: str, *args) -> subprocess.CompletedProcess:
    """The command with `folder` a private tmpfs (own mount namespace: gone when it ends)."""
    folder.mkdir(parents=True, exist_ok=True)
    command = " ".join(f"'{a}'" for a in (*REDFLAGS, *map(str, args)))
    script = f"mount -t tmpfs -o {options} tmpfs '{folder}' && exec {command}"
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@needs_mount
def test_a_read_only_warehouse_folder_is_one_line(export, tmp_path):
    folder = tmp_path / "ro"
    result = redflags_on_tmpfs(
        folder, "ro,size=64k", "ingest", "--source", export, "--warehouse", folder / "w.duckdb"
    )
    assert "Read-only file system" in assert_clear_error(result, "ingest", 2)


@needs_mount
def test_a_full_disk_is_one_line(export, tmp_path):
    folder = tmp_path / "full"
    result = redflags_on_tmpfs(
        folder, "size=64k", "ingest", "--source", export, "--warehouse", folder / "w.duckdb"
    )
    line = assert_clear_error(result, "ingest", 2, only_line=False)
    assert "No space left on device" in line and "previous outputs are unchanged" in line


def test_an_internal_error_is_exit_1_and_says_how_to_see_the_traceback():
    code, message = classify(KeyError("boom"))
    assert code == 1 and "run with -v for the traceback" in message and "\n" not in message
    assert classify(SettingsError("bad\nvalue")) == (2, "bad; value")
    assert classify(OSError(28, "No space left on device", "/x"))[0] == 2


def test_verbose_shows_the_traceback(loaded, export):
    with warehouse_lock(loaded):
        result = redflags("-v", "ingest", "--source", export, "--warehouse", loaded)
    assert result.returncode == 2 and "Traceback" in result.stderr


# ---------------------------------------------------------------- Prefect's temporary server


def _prefect_servers_of(pid: int) -> set[int]:
    """Live processes that are Prefect's temporary server and children of `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        if ppid == pid and b"uvicorn" in cmdline and b"server:create_app" in cmdline:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_killed_run_leaves_no_prefect_server_behind(export, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # temporary server
    command = [*REDFLAGS, "run", "--source", str(export), "--warehouse", str(tmp_path / "w.duckdb")]
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    servers: set[int] = set()
    deadline = time.monotonic() + 240
    for line in process.stderr:  # Prefect logs the flow run's start once its server is up
        servers |= _prefect_servers_of(process.pid)
        if "Beginning flow run" in line or time.monotonic() > deadline:
            break
    servers |= _prefect_servers_of(process.pid)
    assert servers, "the run started no temporary Prefect server"
    process.kill()  # SIGKILL: no exit handler runs
    process.wait(timeout=30)
    deadline = time.monotonic() + 60  # SIGTERM, then SIGKILL after 5 s, on a loaded machine
    while any(_alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [pid for pid in servers if _alive(pid)]
    for pid in left:  # do not leave them to the next test either
        os.kill(pid, 9)
    assert not left, f"Prefect's temporary server outlived the killed run: {left}"


@pytest.mark.parametrize("command", ["run", "ingest"])
@pytest.mark.parametrize("source_format", ["omop", "fhir"])
def test_a_wrong_source_creates_nothing(command, source_format, tmp_path):
    """A folder with none of the layout's files is refused before anything is opened: no
    empty warehouse, no lock file (issue 15)."""
    empty = tmp_path / "not-an-export"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an export\n")
    work = tmp_path / "work"
    work.mkdir()
    result = redflags(
        command, "--source", empty, "--source-format", source_format,
        "--warehouse", work / "w.duckdb",
    )  # fmt: skip
    expected = {"omop": "no OMOP CDM tables", "fhir": "no FHIR R4 files"}[source_format]
    assert expected in assert_clear_error(result, command, 2)
    assert list(work.iterdir()) == []
