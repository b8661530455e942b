"""The HTML report: self-contained, readable in a real browser, built from release + meta only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from report_fixtures import study_warehouse

from pipelines.errors import UserFacingError
from pipelines.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
FIGURES_WITH_EVENTS = 6  # cumulative incidence, forest, ROC, calibration, decision, survival


class Page(HTMLParser):
    """What the tests look at in the report: images, tables, headers, every URL."""

    def __init__(self, html: str):
        super().__init__()
        self.images: list[str] = []
        self.svgs = 0
        self.tables = 0
        self.headers: list[str] = []
        self.urls: list[str] = []
        self.notices: list[str] = []
        self._in: list[str] = []
        self.feed(html)
        self.text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
        self.urls += re.findall(r"url\(([^)]*)\)|@import\s+([^;]+)", html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._in.append(f"{tag}.{attrs.get('class', '')}")
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        self.svgs += tag == "svg"
        self.tables += tag == "table"
        for name in ("src", "href", "action", "srcset", "poster", "data"):
            if attrs.get(name) and not attrs[name].startswith("data:"):
                self.urls.append(attrs[name])

    def handle_endtag(self, tag):
        if self._in:
            self._in.pop()

    def handle_data(self, data):
        if not self._in:
            return
        if self._in[-1].startswith("th."):
            self.headers.append(data.strip())
        if self._in[-1] == "p.notice":
            self.notices.append(" ".join(data.split()))

    @property
    def embedded_figures(self) -> int:
        return sum(src.startswith("data:image/png;base64,") for src in self.images) + self.svgs


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, installed with apt-get when absent; failing to install fails the test."""
    if not CHROMIUM.exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, env=env, timeout=1200
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                pytest.fail(f"could not run {' '.join(command)} to install chromium: {exc}")
            if done.returncode != 0:
                pytest.fail(
                    f"installing Debian chromium failed: {' '.join(command)} exited "
                    f"{done.returncode}:\n{done.stderr[-3000:]}"
                )
    if not CHROMIUM.exists():
        pytest.fail(f"apt-get install chromium succeeded but {CHROMIUM} does not exist")
    return CHROMIUM


@pytest.fixture(scope="module")
def with_events(tmp_path_factory) -> Path:
    """Generated export, real pipeline: release as the protocol suppresses it."""
    return study_warehouse("generated", tmp_path_factory)


@pytest.fixture(scope="module")
def unsuppressed(tmp_path_factory) -> Path:
    """The same run, release rebuilt with min_cell = 1: every figure has data."""
    return study_warehouse("unsuppressed", tmp_path_factory)


@pytest.fixture(scope="module")
def no_events(tmp_path_factory) -> Path:
    """A real Synthea sample export: no bone metastasis anywhere."""
    return study_warehouse("synthea", tmp_path_factory)


@pytest.fixture(scope="module")
def report(with_events, tmp_path_factory) -> Path:
    return write_report(with_events, tmp_path_factory.mktemp("report") / "report.html")


@pytest.fixture(scope="module")
def no_events_report(no_events, tmp_path_factory) -> Path:
    return write_report(no_events, tmp_path_factory.mktemp("report") / "report.html")


def screenshot(chromium: Path, html: Path, out: Path, tmp_path: Path) -> Path:
    profile = tmp_path / "chromium-profile"
    command = [
        str(chromium),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--screenshot={out}",
        "--window-size=1280,4000",
        html.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and out.exists(), f"chromium failed:\n{done.stderr[-3000:]}"
    return out


def assert_not_blank(png: Path) -> None:
    from PIL import Image, ImageStat

    image = Image.open(png).convert("L")
    assert image.size == (1280, 4000)
    stat = ImageStat.Stat(image)
    assert stat.var[0] > 200, f"screenshot looks blank (pixel variance {stat.var[0]:.0f})"
    dark = sum(image.histogram()[:128]) / (image.size[0] * image.size[1])
    assert dark > 0.01, f"screenshot has almost no text or lines ({dark:.2%} dark pixels)"


@pytest.mark.browser
def test_report_renders_in_chromium(chromium, report, tmp_path):
    assert_not_blank(screenshot(chromium, report, tmp_path / "report.png", tmp_path))


@pytest.mark.browser
def test_no_events_report_renders_in_chromium(chromium, no_events_report, tmp_path):
    assert_not_blank(screenshot(chromium, no_events_report, tmp_path / "report.png", tmp_path))


def test_report_embeds_every_figure_and_table(unsuppressed, tmp_path):
    page = Page(write_report(unsuppressed, tmp_path / "r.html").read_text(encoding="utf-8"))
    assert page.embedded_figures == FIGURES_WITH_EVENTS
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    for header in (
        "Number at risk",  # under the cumulative incidence curves
        "Stratum",  # time-to-diagnosis table
        "Metastasis",  # STARD 2x2 tables
        "No metastasis",
        "LR+",
        "AUROC (95% CI)",
        "Rule: measure (95% CI)",  # sensitivity analyses
        "SHA-256",  # input files
        "Value set",
        "Parameter",
    ):
        assert header in page.headers, f"no table header {header!r}"
    assert page.tables >= 11 + 6  # one 2x2 per rule (subgroup all) plus the other tables
    assert "Flag present" in page.text and "Flag absent" in page.text


def test_report_is_self_contained(report, no_events_report):
    for path in (report, no_events_report):
        html = path.read_text(encoding="utf-8")
        page = Page(html)
        assert page.urls == [], f"external references: {page.urls}"
        assert not re.search(r"<(script|link|iframe|object|embed)\b", html, re.I)


def test_report_shows_provenance(report, with_events):
    text = Page(report.read_text(encoding="utf-8")).text
    with duckdb.connect(str(with_events), read_only=True) as con:
        run = con.execute(
            "SELECT run_id, started_at, code_version, parameters, input_manifest,"
            " value_set_hashes FROM meta.runs"
        ).fetchone()
    run_id, started_at, code_version, parameters, manifest, value_sets = run
    assert run_id in text and code_version in text
    assert str(started_at)[:19] in text
    for name in json.loads(parameters):
        assert name in text, f"parameter {name} not shown"
    first_file = json.loads(manifest)[0]
    assert first_file["file"] in text and first_file["sha256"] in text
    value_set, digest = next(iter(json.loads(value_sets).items()))
    assert value_set in text and digest in text


def test_suppressed_counts_are_marked_not_shown(report, with_events):
    """A NULL count in release reads 'suppressed' in the flow diagram, never a number."""
    with duckdb.connect(str(with_events), read_only=True) as con:
        remaining, excluded = con.execute(
            "SELECT count(*) FILTER (n_remaining IS NULL),"
            " count(*) FILTER (n_excluded IS NULL AND step_order > 1) FROM release.attrition"
        ).fetchone()
    assert remaining + excluded, "the generated cohort should have suppressed attrition counts"
    html = report.read_text(encoding="utf-8")
    assert html.count("n = suppressed") == remaining
    assert html.count("Excluded: <strong>suppressed</strong>") == excluded
    assert "min_cell = 11" in Page(html).text


def test_no_events_says_so_instead_of_drawing(no_events_report):
    page = Page(no_events_report.read_text(encoding="utf-8"))
    assert page.embedded_figures == 0, "a figure was drawn although there are no events"
    notices = " ".join(page.notices)
    assert notices.count("No events") >= 2  # cumulative incidence and likelihood ratios
    assert "ROC curve and AUROC not estimable (no events)" in notices
    assert "model was not fitted" in notices
    assert "not estimable (no events)" in page.text  # headline AUROC
    assert "Metastasis" in page.headers  # the 2x2 counts are still shown


def test_report_reads_only_release_and_meta(report, with_events, tmp_path):
    """With every other schema gone (mart, raw, the build schemas...), the report is unchanged.
    (Also kept: dq, whose data-quality profile the report shows as counts per check.)"""
    copy = tmp_path / "release-only.duckdb"
    shutil.copy(with_events, copy)
    with duckdb.connect(str(copy)) as con:
        schemas = con.execute(
            "SELECT schema_name FROM duckdb_schemas() WHERE database_name = current_database()"
            " AND schema_name NOT IN ('release', 'meta', 'dq', 'main')"
        ).fetchall()
        assert ("mart",) in schemas
        for (schema,) in schemas:
            con.execute(f'DROP SCHEMA "{schema}" CASCADE')
    stripped = write_report(copy, tmp_path / "stripped.html").read_text(encoding="utf-8")
    generated = re.compile(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC")
    original = report.read_text(encoding="utf-8")
    assert generated.sub("", stripped) == generated.sub("", original)


def test_report_without_run_record_still_builds(unsuppressed, tmp_path):
    copy = tmp_path / "no-runs.duckdb"
    shutil.copy(unsuppressed, copy)
    with duckdb.connect(str(copy)) as con:
        con.execute("DROP TABLE meta.runs")
    page = Page(write_report(copy, tmp_path / "r.html").read_text(encoding="utf-8"))
    assert any("No run record" in n for n in page.notices)
    assert page.embedded_figures == FIGURES_WITH_EVENTS


def test_unknown_run_and_missing_warehouse_are_user_errors(with_events, tmp_path):
    with pytest.raises(UserFacingError, match="no release tables"):
        write_report(with_events, tmp_path / "r.html", run_id="not-a-run")
    with pytest.raises(UserFacingError, match="not found"):
        write_report(tmp_path / "absent.duckdb", tmp_path / "r.html")
    assert not (tmp_path / "absent.duckdb").exists()


def test_report_command(with_events, tmp_path, capsys):
    from pipelines.cli import main

    out = tmp_path / "cli" / "report.html"
    assert main(["report", "--warehouse", str(with_events), "--out", str(out)]) == 0
    assert out.exists() and str(out) in capsys.readouterr().out
    assert main(["report", "--warehouse", str(tmp_path / "none.duckdb"), "--out", str(out)]) == 2


def test_suppressed_release_still_draws_the_model_figures(report):
    """Issue 10: with the protocol's disclosure control (min_cell 11) the generated study's
    report draws the coarsened cumulative incidence, calibration (pooled bins) and the
    decision curve. (Its ROC curve stays undrawn: with 24 cases no cut-off between the
    corners is 11 cases from both ends, see docs/statistics.md 7.)"""
    page = Page(report.read_text(encoding="utf-8"))
    notices = " ".join(page.notices)
    assert page.embedded_figures >= 3, page.notices
    assert "calibration" not in notices and "decision curve" not in notices
    assert "coarsen" in page.text and "suppressed_complement" in page.text  # the key explains


def test_the_cif_caption_says_which_time_zero_each_curve_uses():
    # PROTOCOL 6.5: curves by red-flag count start at the landmark; the report says so
    from pipelines.report.plots import time_zero_note

    cif = pd.DataFrame({"stratum_variable": ["overall", "red_flag_count"],
                        "time_zero_day": [0, 42]})  # fmt: skip
    note = time_zero_note(cif)
    assert "landmark (day 42)" in note and "other curves start at day 0" in note
    assert time_zero_note(cif.assign(time_zero_day=0)) == ""


# ---- the clinical sections (issue 14) ----------------------------------------------------------

CLINICAL_HEADINGS = (
    "Baseline characteristics (Table 1)",
    "After diagnosis",
    "Presentation and prognosis by diagnostic interval",
)


def test_report_has_table_one_care_and_prognosis(unsuppressed, tmp_path):
    """Table 1 with SMDs, care proportions, the KM figure with median, 1-year survival, the
    hazard ratio and the caution, and SRE by interval third: all from release."""
    from pipelines.stats.prognosis import CAUTION

    page = Page(write_report(unsuppressed, tmp_path / "r.html").read_text(encoding="utf-8"))
    for heading in CLINICAL_HEADINGS:
        assert heading in page.text
    for header in ("Characteristic", "SMD", "Care", "Received / diagnosed", "Measure",
                   "Diagnostic interval", "With an SRE"):  # fmt: skip
        assert header in page.headers, f"no table header {header!r}"
    assert "Median survival, days (95% CI)" in page.text
    assert "Survival at 1 year, % (95% CI)" in page.text
    assert "Hazard ratio of death per 30 days of interval, adjusted for age" in page.text
    assert "Shortest third" in page.text and "Longest third" in page.text
    assert "Endocrine therapy" in page.text  # a care category the generator plants
    assert " ".join(CAUTION.split()) in unescape(page.text)  # printed beside the figure
    with duckdb.connect(str(unsuppressed), read_only=True) as con:
        smd = con.execute(
            "SELECT smd FROM release.table_one WHERE population = 'landmark'"
            " AND comparison = 'reference_standard' AND variable = 'age_at_index'"
        ).fetchone()[0]
    assert smd is not None and f"{smd:.2f}" in page.text or f"{smd:.1f}" in page.text


def test_suppressed_report_keeps_the_clinical_sections(report, with_events):
    """With min_cell 11 the small diagnosed group hides much; the sections, the caution and
    'suppressed' (never a small number) remain, and the curve is drawn only if released."""
    page = Page(report.read_text(encoding="utf-8"))
    for heading in CLINICAL_HEADINGS:
        assert heading in page.text
    assert "Descriptive, not causal." in page.text
    with duckdb.connect(str(with_events), read_only=True) as con:
        steps = con.execute("SELECT count(*) FROM release.survival_after_diagnosis").fetchone()[0]
    if steps == 0:
        assert any("No survival curve was released" in n for n in page.notices)
    else:
        assert "Kaplan-Meier overall survival" in report.read_text(encoding="utf-8")


@pytest.mark.browser
def test_clinical_sections_render_in_chromium(chromium, report, tmp_path):
    """Chromium's DOM after loading the page holds the clinical sections, the model
    validation and the STARD checklist (issue 14)."""
    command = [str(chromium), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
               "--dump-dom", report.resolve().as_uri()]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    for anchor in ('id="table-one"', 'id="after-diagnosis"', 'id="prognosis"',
                   'id="model-validation"', 'id="stard"'):  # fmt: skip
        assert anchor in done.stdout
    assert "STARD 2015" in done.stdout


# ---- issue 14: model validation, STARD 2015 checklist -------------------------------------

STARD_ITEMS = [str(i) for i in range(1, 31) if i not in (10, 12, 13, 21)]
STARD_ITEMS += ["10a", "10b", "12a", "12b", "13a", "13b", "21a", "21b"]


def stard_rows(html: str) -> dict[str, tuple[str, str]]:
    """item -> (topic, answer) of the report's STARD checklist."""
    section = html.split('<h2 id="stard">', 1)[1].split("<h2", 1)[0]
    rows = re.findall(
        r'<tr><th scope="row">([^<]*)</th><td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td></tr>', section
    )
    return {item: (unescape(topic), unescape(answer)) for item, topic, answer in rows}


@pytest.mark.parametrize("kind", ["unsuppressed", "synthea"])
def test_stard_checklist_answers_every_item_or_says_why_not(kind, tmp_path_factory, tmp_path):
    warehouse = study_warehouse(kind, tmp_path_factory)
    html = write_report(warehouse, tmp_path / "r.html").read_text(encoding="utf-8")
    rows = stard_rows(html)
    assert sorted(rows) == sorted(STARD_ITEMS)
    for item, (topic, answer) in rows.items():
        assert len(topic) > 10 and len(answer) > 20, (item, topic, answer)
        assert "{" not in answer, (item, answer)  # every placeholder filled
    assert "retrospective" in rows["5"][1].lower()
    assert rows["18"][1].startswith("No sample size was calculated: a retrospective study")
    assert "day 42" in rows["22"][1] and "day 365" in rows["22"][1]
    if kind == "unsuppressed":  # precision and the interval from the released tables
        assert "sensitivity of 'any seed flag' is known to \u00b1" in rows["18"][1]
        with duckdb.connect(str(warehouse), read_only=True) as con:
            median = con.execute(
                "SELECT median_days FROM release.reference_interval WHERE subgroup = 'all'"
            ).fetchone()[0]
        assert f"median {median:.0f} (" in rows["22"][1]
    else:  # no events: said in words
        assert "not released" in rows["22"][1] or "no precision" in rows["18"][1]


def test_flow_diagram_gives_exclusion_reasons_and_indeterminate_results(unsuppressed, tmp_path):
    html = write_report(unsuppressed, tmp_path / "r.html").read_text(encoding="utf-8")
    page = Page(html)
    assert "(under 18 at index)" in html
    assert "(bone metastasis on or before index (prevalent))" in html
    assert "Indeterminate (not assessable)" in page.headers
    with duckdb.connect(str(unsuppressed), read_only=True) as con:
        n = con.execute(
            "SELECT n FROM release.model_performance WHERE subgroup = 'all'"
        ).fetchone()[0]
        assessed = con.execute(
            "SELECT tp + fp + fn + tn FROM release.flag_accuracy"
            " WHERE subgroup = 'all' AND rule = 'flag_night_pain'"
        ).fetchone()[0]
    figure = html.split("Figure 1.", 1)[1].split("<h2", 1)[0]
    night = re.search(r'<th scope="row">Night pain</th><td>([^<]*)</td>', figure)
    assert night and night.group(1) == f"{n - assessed:,}"


def test_report_has_the_model_validation_subsection(unsuppressed, tmp_path):
    page = Page(write_report(unsuppressed, tmp_path / "r.html").read_text(encoding="utf-8"))
    assert "Model validation" in page.text
    for header in ("Apparent", "Optimism", "Corrected (95% CI)", "Events per predictor"):
        assert header in page.headers, header
    with duckdb.connect(str(unsuppressed), read_only=True) as con:
        rows = con.execute(
            "SELECT subgroup, corrected, status, note FROM release.model_validation"
            " WHERE measure = 'auroc'"
        ).fetchall()
    assert {r[0] for r in rows} == {"all", "female", "breast_cancer_history"}
    for _subgroup, corrected, status, note in rows:
        if status == "refused_low_epv":  # the 2,000-patient export has few events
            assert corrected is None and note in page.text
        else:
            assert f"{corrected:.3f}" in page.text
    assert "Table 3b. Model validation: optimism-corrected net benefit" in page.text
