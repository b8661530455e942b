"""The results dashboard (pipelines/dashboard): every page renders from the release tables
alone, in Streamlit's headless AppTest and in a real browser, and hidden values say so."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pytest
from history_fixtures import two_runs
from report_fixtures import study_warehouse
from streamlit.testing.v1 import AppTest
from test_report import chromium  # noqa: F401 - the Debian chromium fixture, shared

from pipelines.dashboard import data
from pipelines.dashboard.app import PAGES
from pipelines.dashboard.display import value_text, with_status

APP = Path(data.__file__).resolve().parent / "app.py"
# page -> element kinds it must show with content (`image` = a figure)
EXPECTED = {
    "overview": ("metric", "image", "dataframe"),
    "time_to_diagnosis": ("selectbox", "image", "dataframe"),
    "accuracy": ("selectbox", "image", "table", "dataframe"),
    "model": ("selectbox", "image", "dataframe"),
    "sensitivity": ("selectbox", "dataframe"),
    "data_quality": ("dataframe",),
    "run_history": ("table", "image", "dataframe"),
}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    return study_warehouse("generated", tmp_path_factory)


@pytest.fixture(scope="module")
def release_only(warehouse, tmp_path_factory) -> Path:
    """A copy of the warehouse with every schema but `release` dropped (mart, meta, raw...)."""
    copy = tmp_path_factory.mktemp("release-only") / "warehouse.duckdb"
    shutil.copy(warehouse, copy)
    with duckdb.connect(str(copy)) as con:
        schemas = con.execute(
            "SELECT DISTINCT schema_name FROM duckdb_tables() WHERE database_name = current_database()"
            " UNION SELECT DISTINCT schema_name FROM duckdb_views() WHERE NOT internal"
        ).fetchall()
        for (schema,) in schemas:
            if schema not in ("release", "main"):
                con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return copy


@pytest.fixture(scope="module")
def parquet(warehouse, tmp_path_factory) -> Path:
    from pipelines.export import export_release

    out = tmp_path_factory.mktemp("parquet")
    export_release(warehouse, out)
    return out


def render(page: str, monkeypatch, warehouse: Path | None = None, parquet: Path | None = None):
    """The app after opening `page`, with the source given by the environment."""
    monkeypatch.delenv(data.WAREHOUSE_ENV, raising=False)
    monkeypatch.delenv(data.PARQUET_ENV, raising=False)
    if warehouse is not None:
        monkeypatch.setenv(data.WAREHOUSE_ENV, str(warehouse))
    if parquet is not None:
        monkeypatch.setenv(data.PARQUET_ENV, str(parquet))
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    if page != PAGES[0][0]:
        at.switch_page(f"views/{page}.py").run()
    return at


def assert_page_shows(at, page: str) -> None:
    assert not at.exception, f"{page}: {[e.value for e in at.exception]}"
    assert not at.error, f"{page}: {[e.value for e in at.error]}"
    assert at.title and at.title[0].value, f"{page}: no title"
    for kind in EXPECTED[page]:
        elements = at.get(kind)
        assert elements, f"{page}: no {kind}"
        if kind in ("dataframe", "table"):
            assert any(len(e.value) for e in elements), f"{page}: every {kind} is empty"


@pytest.mark.parametrize("page", [name for name, _ in PAGES])
def test_every_page_renders_with_its_elements(page, warehouse, monkeypatch):
    assert set(EXPECTED) == {name for name, _ in PAGES}
    assert_page_shows(render(page, monkeypatch, warehouse=warehouse), page)


@pytest.mark.parametrize("page", [name for name, _ in PAGES])
def test_pages_need_only_the_release_schema(page, release_only, monkeypatch):
    """Never mart: the same pages render from a copy holding nothing but `release`."""
    assert_page_shows(render(page, monkeypatch, warehouse=release_only), page)


@pytest.mark.parametrize("page", ["overview", "accuracy", "model"])
def test_pages_render_from_the_parquet_export(page, parquet, monkeypatch):
    assert_page_shows(render(page, monkeypatch, parquet=parquet), page)


def test_suppressed_cells_say_so_in_the_2x2(warehouse, monkeypatch):
    """A hidden 2x2 cell reads "suppressed (<11 ...)", never 0 or blank."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rule = con.execute(
            "SELECT rule FROM release.flag_accuracy WHERE subgroup = 'all'"
            " AND tp_status LIKE 'suppressed%' ORDER BY rule LIMIT 1"
        ).fetchone()
    assert rule, "the generated study should hide at least one 2x2 cell"
    at = render("accuracy", monkeypatch, warehouse=warehouse)
    at.selectbox[1].select(rule[0]).run()
    cells = at.table[0].value.to_numpy().ravel().tolist()
    assert any(str(c).startswith("suppressed (<11") for c in cells), cells
    assert not any(str(c) in ("", "0", "nan", "None", "<NA>") for c in cells if c is not None)


def test_value_text_follows_the_status():
    assert value_text(None, "suppressed_small", min_cell=11) == "suppressed (<11)"
    assert value_text(5, "suppressed_small") == "suppressed (<11)"  # a status wins over a value
    assert value_text(float("nan"), "not_estimable") == "not estimable"
    assert value_text(None, None) == "not estimable"
    assert value_text(0, "shown") == "0"
    assert value_text(45, "rounded") == "45 (rounded)"
    assert value_text(0.12345, "shown") == "0.123"


def test_with_status_never_shows_a_blank_for_a_hidden_value():
    import pandas as pd

    frame = pd.DataFrame({"n": [pd.NA, 20, 0], "n_status": ["suppressed_complement", "shown", "shown"]})  # fmt: skip
    shown = with_status(frame, min_cell=11)
    assert list(shown.columns) == ["n"]
    assert shown["n"].tolist() == ["suppressed (<11 or complementary)", "20", "0"]


def test_missing_source_is_one_line_error(tmp_path, monkeypatch):
    at = render("overview", monkeypatch, warehouse=tmp_path / "none.duckdb")
    assert not at.exception
    assert at.error and at.error[0].value.startswith(
        "redflags dashboard: error: warehouse not found"
    )


# --- the real server in headless Chromium -------------------------------------------------

# page -> Streamlit test ids that must be on it once rendered (stImage = a figure)
BROWSER_EXPECTED = {
    "overview": ("stMetric", "stImage", "stDataFrame"),
    "time_to_diagnosis": ("stImage", "stDataFrame"),
    "accuracy": ("stImage", "stTable"),
    "model": ("stImage",),
    "sensitivity": ("stDataFrame",),
    "data_quality": ("stDataFrame",),
    "run_history": ("stTable",),
}
PAGE_TIMEOUT = 90  # seconds for one page to render on a loaded machine


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_http(url: str, timeout: float, process=None) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                pytest.fail(f"{url}: the process exited with {process.returncode}")
            if time.monotonic() > deadline:
                pytest.fail(f"{url} did not answer within {timeout:.0f} s")
            time.sleep(0.5)


@pytest.fixture
def dashboard_server(warehouse, tmp_path):
    """`streamlit run` as `redflags dashboard` starts it, on a free port; always stopped."""
    import subprocess

    from pipelines.cli.dashboard import streamlit_command, streamlit_env
    from pipelines.dashboard.data import Source

    port = _free_port()
    log = open(tmp_path / "streamlit.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        streamlit_command(port), env=streamlit_env(Source(warehouse)), stdout=log, stderr=log
    )
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/_stcore/health", 90, server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(15)
        log.close()


class Browser:
    """Headless Chromium driven over the DevTools protocol: Streamlit draws a page after
    its script runs on the server (over a websocket), so a plain `--screenshot` would
    catch an empty page; this waits until the page's elements are there."""

    def __init__(self, executable: Path, profile: Path):
        import json
        import subprocess
        import urllib.request

        from test_report import CHROMIUM_FLAGS
        from websockets.sync.client import connect

        port = _free_port()
        self.process = subprocess.Popen(
            [str(executable), *CHROMIUM_FLAGS, f"--remote-debugging-port={port}",
             f"--user-data-dir={profile}", "--window-size=1280,2000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for_http(f"http://127.0.0.1:{port}/json/version", 60, self.process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.calls = 0
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=2000,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip

    def call(self, method: str, **params):
        import json

        self.calls += 1
        self.ws.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.calls:
                assert "error" not in message, message
                return message.get("result", {})

    def present(self, test_ids: tuple[str, ...]) -> dict[str, int]:
        """How many of each element the main area shows, and whether a script still runs."""
        counts = {t: f"m.querySelectorAll('[data-testid=\"{t}\"]').length" for t in test_ids}
        js = ("(() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
              " if (!m) return {}; return {" + ", ".join(f"{t}: {c}" for t, c in counts.items())
              + ", running: document.querySelectorAll('[data-testid=\"stStatusWidget\"]').length,"
              " exception: m.querySelectorAll('[data-testid=\"stException\"]').length,"
              " not_found: document.body.innerText.includes('Page not found')}; })()")  # fmt: skip
        return self.call("Runtime.evaluate", expression=js, returnByValue=True)["result"]["value"]

    def screenshot(self, url: str, expected: tuple[str, ...], out: Path) -> dict[str, int]:
        import base64
        import time

        self.call("Page.navigate", url=url)
        deadline, stable, seen = time.monotonic() + PAGE_TIMEOUT, 0, {}
        while stable < 3:  # the expected elements there, nothing running, three polls in a row
            if time.monotonic() > deadline:
                pytest.fail(f"{url} did not render {expected} within {PAGE_TIMEOUT} s: {seen}")
            time.sleep(0.5)
            seen = self.present(expected)
            done = seen and all(seen.get(t) for t in expected) and not seen["running"]
            stable = stable + 1 if done else 0
        out.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))  # fmt: skip
        return seen

    def close(self) -> None:
        self.ws.close()
        self.process.terminate()
        self.process.wait(15)


def assert_not_blank(png: Path) -> None:
    """The main area (right of the page list) holds drawn content, not just the app's frame
    (an empty frame measured variance 5 and 0.01% dark pixels; the sparsest page 200, 0.5%)."""
    from PIL import Image, ImageStat

    image = Image.open(png).convert("L")
    assert image.size == (1280, 2000)
    main = image.crop((320, 0, 1280, 2000))
    stat = ImageStat.Stat(main)
    assert stat.var[0] > 50, f"{png.name} looks blank (pixel variance {stat.var[0]:.0f})"
    dark = sum(main.histogram()[:128]) / (main.size[0] * main.size[1])
    assert dark > 0.002, f"{png.name} has almost no text or lines ({dark:.2%} dark pixels)"


@pytest.mark.browser
def test_every_page_renders_in_chromium(
    chromium,  # noqa: F811 - fixture from test_report
    dashboard_server,
    tmp_path,
):
    assert set(BROWSER_EXPECTED) == {name for name, _ in PAGES}
    browser = Browser(chromium, tmp_path / "profile")
    try:
        for page, expected in BROWSER_EXPECTED.items():
            png = tmp_path / f"{page}.png"
            path = "" if page == PAGES[0][0] else page  # the first page is the app's root
            seen = browser.screenshot(f"{dashboard_server}/{path}", expected, png)
            assert not seen["not_found"], f"{page}: Streamlit says the page does not exist"
            assert not seen["exception"], f"{page} shows an exception"
            assert_not_blank(png)
    finally:
        browser.close()


# --- the command ------------------------------------------------------------------------


def test_dashboard_command_serves_on_loopback_without_telemetry():
    from pipelines.cli.dashboard import streamlit_command

    command = streamlit_command(8600)
    assert command[1:4] == ["-m", "streamlit", "run"]
    assert "--server.address=127.0.0.1" in command and "--server.port=8600" in command
    assert "--server.headless=true" in command
    assert "--browser.gatherUsageStats=false" in command


def test_dashboard_command_errors_are_one_line(tmp_path, capsys):
    from pipelines.cli import main

    assert main(["dashboard", "--warehouse", str(tmp_path / "none.duckdb")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"redflags dashboard: error: warehouse not found: {tmp_path / 'none.duckdb'}"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["dashboard", "--parquet", str(empty)]) == 2
    assert "no release tables" in capsys.readouterr().err


# --- labels -----------------------------------------------------------------------------


def test_release_labels_name_every_code_the_release_uses(warehouse):
    with duckdb.connect(str(warehouse), read_only=True) as con:
        labels = set(con.execute("SELECT kind, code FROM release.labels").fetchall())
        used = con.execute(
            "SELECT DISTINCT 'rule', rule FROM release.flag_accuracy"
            " UNION SELECT DISTINCT 'rule', rule FROM release.sensitivity_analyses"
            " UNION SELECT DISTINCT 'subgroup', subgroup FROM release.flag_accuracy"
            " UNION SELECT DISTINCT 'measure', measure FROM release.sensitivity_analyses"
            " UNION SELECT DISTINCT 'analysis', analysis FROM release.sensitivity_analyses"
            " UNION SELECT DISTINCT 'step', step FROM release.attrition"
            " UNION SELECT DISTINCT 'stratum', stratum_variable || '=' || stratum"
            " FROM release.time_to_diagnosis"
        ).fetchall()
    assert used and set(used) <= labels, sorted(set(used) - labels)


def test_dashboard_shows_the_runs_labels(warehouse, monkeypatch):
    """Attrition steps read with this run's parameters, from release.labels."""
    at = render("overview", monkeypatch, warehouse=warehouse)
    flow = at.dataframe[0].value
    assert "Patients with a back-pain record from 2015-01-01" in set(flow["label"])


def test_demo_ends_with_a_working_dashboard_command(tmp_path):
    """The last line `redflags demo` prints is a dashboard command the CLI accepts."""
    from pipelines.cli import build_parser
    from pipelines.cli.study import where_to_look

    last = where_to_look(tmp_path, tmp_path / "export").splitlines()[-1].split()
    assert last[0] == "dashboard" and last[1].endswith("redflags")
    args = build_parser().parse_args(last[2:])
    assert args.command == "dashboard" and args.warehouse == tmp_path / "warehouse.duckdb"


def test_stopping_the_command_stops_the_server(warehouse, tmp_path):
    """`redflags dashboard` serves on 127.0.0.1; SIGTERM to it leaves no server behind."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    command = [sys.executable, "-m", "pipelines.cli", "dashboard",
               "--warehouse", str(warehouse), "--port", str(port)]  # fmt: skip
    log = tmp_path / "dashboard.log"
    with open(log, "w") as out:
        cli = subprocess.Popen(command, stdout=out, stderr=out)
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/_stcore/health", 90, cli)
        cli.send_signal(signal.SIGTERM)
        cli.wait(30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
            except OSError:
                break  # nothing answers any more: the server went with the command
            time.sleep(0.5)
        else:
            pytest.fail(f"the server still answers on port {port} after the command stopped")
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()


# --- a warehouse that changes or is busy --------------------------------------------------


def _copy(warehouse: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(warehouse, copy)
    return copy


def test_a_new_run_shows_without_restarting(warehouse, tmp_path, monkeypatch):
    """The session's tables follow the warehouse: a rewritten release is read again."""
    copy = _copy(warehouse, tmp_path)
    before = render("run_history", monkeypatch, warehouse=copy).table[0].value
    with duckdb.connect(str(copy)) as con:
        con.execute("UPDATE release.attrition SET run_id = 'run-2'")
    os.utime(copy, (copy.stat().st_atime, copy.stat().st_mtime + 5))  # coarse file clocks
    after = render("run_history", monkeypatch, warehouse=copy).table[0].value
    assert "run-2" not in before.to_string() and "run-2" in after.to_string()


def test_two_runs_over_a_growing_export_are_two_points_of_each_trend(tmp_path_factory, monkeypatch):
    """issue 15: two consecutive runs give two rows in release.run_history and two points on
    each line of the run-history page (a hidden value is a gap, and says so)."""
    from pipelines.dashboard.views import run_history

    runs = two_runs(tmp_path_factory)
    at = render("run_history", monkeypatch, warehouse=runs.warehouse)
    assert_page_shows(at, "run_history")
    every_run = at.dataframe[0].value
    assert list(every_run["run_id"]) == list(runs.run_ids)
    assert len(at.get("image")) == len(run_history.CHARTS)
    history = data.read_table(data.Source(runs.warehouse), "run_history")
    fig = run_history.trend_figure(history, ("n_patients",), "patients")
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_ydata()) == [1500, 1540]
    hidden = every_run["n_episodes"].iloc[-1]
    assert hidden.startswith("suppressed"), hidden  # 375 -> 385: a difference of 10


def test_a_warehouse_held_by_a_run_is_a_one_line_error(warehouse, tmp_path, monkeypatch):
    """DuckDB lets no reader in while a run writes: the page says so and names --parquet."""
    import subprocess
    import sys

    copy = _copy(warehouse, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]);"
         " print('held', flush=True); time.sleep(120)", str(copy)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        at = render("accuracy", monkeypatch, warehouse=copy)
        assert not at.exception, [e.value for e in at.exception]
        message = at.error[0].value
        assert (
            message.startswith("redflags dashboard: error: cannot open") and "--parquet" in message
        )
    finally:
        holder.kill()
        holder.wait()
