"""Quirks of real exports are flagged, not fatal (issue 13 items 3-4, issue 11 item 8).

A generated export with the quirks planted (medication STOP before START, condition dates in
year 2999 and 1850) and real Synthea exports with STOP-before-START medication rows run the
whole study to the end; the rows stay in raw, are listed by file and line in the published
`dq.data_quality_issues`, counted in `dq.data_quality_profile`, and change no study result.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from conftest import SHARED

from pipelines.generator import Quirks, generate
from pipelines.settings import StudySettings
from pipelines.study import run_study

SETTINGS = StudySettings(sensitivity_analyses=())  # the variants add nothing here
STUDY_TABLES = ("cohort", "red_flags", "flag_accuracy")


def quiet(_message: str) -> None:
    pass


def run(export: Path, warehouse: Path, report: Path | None = None):
    return run_study(export, warehouse, SETTINGS, say=quiet, report=report)


def rows(warehouse: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def study_results(warehouse: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {
            t: con.execute(f"SELECT * EXCLUDE (run_id) FROM mart.{t} ORDER BY ALL").fetchall()
            for t in STUDY_TABLES
        }


def test_generated_export_with_quirks_runs_to_the_end_with_the_rows_flagged(tmp_path):
    clean = generate(tmp_path / "clean", patients=400, seed=21).out_dir
    quirky = generate(tmp_path / "quirky", patients=400, seed=21, quirks=Quirks(4, 2))
    planted = quirky.summary["quirks"]["lines"]

    result = run(quirky.out_dir, tmp_path / "quirky.duckdb", report=tmp_path / "report.html")
    assert result.status == "succeeded"
    warehouse = tmp_path / "quirky.duckdb"
    issues = rows(
        warehouse,
        "SELECT source_file, source_line, check_name FROM dq.data_quality_issues ORDER BY ALL",
    )
    stops = [(f, n) for f, n, c in issues if c == "dates_in_order"]
    assert stops == [
        ("medications.csv", n) for n in planted["medications.csv"]["stop_before_start"]
    ]
    out_of_range = [(f, n) for f, n, c in issues if c == "date_in_range"]
    assert out_of_range == [
        ("conditions.csv", n) for n in planted["conditions.csv"]["date_out_of_range"]
    ]
    # the 1850 row is also before its patient's birth; nothing else is flagged
    assert {c for _, _, c in issues} == {"dates_in_order", "date_in_range", "after_birth"}

    # kept in raw (nothing lost) ...
    n_raw = rows(warehouse, "SELECT count(*) FROM raw.conditions")[0][0]
    # the generator repeats some lines exactly: ingest keeps one copy (duplicate_record)
    quarantined = rows(
        warehouse,
        "SELECT reason, count(*) FROM meta.quarantine WHERE table_name = 'conditions' GROUP BY ALL",
    )
    assert {reason for reason, _ in quarantined} <= {"duplicate_record"}
    assert n_raw + sum(n for _, n in quarantined) == quirky.rows["conditions"]
    # ... and excluded only where they would corrupt: the study is that of the clean export
    run(clean, tmp_path / "clean.duckdb")
    assert study_results(warehouse) == study_results(tmp_path / "clean.duckdb")

    profile = rows(
        warehouse,
        "SELECT table_name, check_name, rows_failed, status FROM dq.data_quality_profile"
        " WHERE rows_failed > 0 ORDER BY ALL",
    )
    assert ("medications", "dates_in_order", 4, "pass") in profile  # 4 of thousands: < 1%
    assert all(status != "fail" for *_, status in profile)

    # the report shows the profile's flagged checks, counts only
    html = result.report.read_text()
    section = html[html.index("Input data quality") :]
    assert "plausibility" in section and "conformance" in section
    flagged = section[section.index("Input checks with flagged rows") :]
    assert "dates_in_order" in flagged and "date_in_range" in flagged and "after_birth" in flagged
    assert "2999" not in html and "1850" not in html


def plant_stop_before_start(export: Path, n: int) -> list[int]:
    """Give the first `n` medication rows that have a STOP a STOP six days before their START
    (Synthea's quirk: clopidogrel START 2004-12-26, STOP 2004-12-20); returns their lines."""
    path = export / "medications.csv"
    lines = path.read_text().split("\n")
    header = lines[0].split(",")
    start, stop = header.index("START"), header.index("STOP")
    changed = []
    for i in range(1, len(lines)):
        fields = lines[i].split(",")
        if len(changed) == n:
            break
        if len(fields) > stop and fields[stop] and fields[start][:4] > "1901":
            year = int(fields[start][:4]) - 1  # a year earlier: before START, still plausible
            fields[stop] = f"{year}{fields[start][4:]}"
            lines[i] = ",".join(fields)
            changed.append(i + 1)
    path.write_text("\n".join(lines))
    return changed


# None of the real exports in ../shared carries the quirk as copied (checked: 0 medication
# rows with STOP < START in all four Synthea CSV exports), so it is planted into copies of a
# Synthea 3.2 export (2 rows, as the 3.2 export of issue 13) and a 3.0 one (4 rows).
@pytest.mark.parametrize(("name", "n"), [("jijones12_synthea", 2), ("OHDSI_dbt-synthea", 4)])
def test_real_export_with_stop_before_start_runs_the_full_study(name, n, tmp_path):
    export = shutil.copytree(SHARED / "synthea" / name, tmp_path / "export")
    planted = plant_stop_before_start(export, n)
    assert len(planted) == n

    warehouse = tmp_path / "w.duckdb"
    result = run(export, warehouse)
    assert result.status == "succeeded"
    assert rows(
        warehouse,
        "SELECT source_file, source_line, column_name, severity, detail"
        " FROM dq.data_quality_issues WHERE check_name = 'dates_in_order' ORDER BY ALL",
    ) == [("medications.csv", line, "start_at/stop_at", "warn", "stop_at before start_at")
          for line in planted]  # fmt: skip
    (profiled,) = rows(
        warehouse,
        "SELECT rows_failed, severity FROM dq.data_quality_profile"
        " WHERE table_name = 'medications' AND check_name = 'dates_in_order'",
    )
    assert profiled == (n, "warn")
    # kept in raw; in staging the stop is unknown
    assert rows(warehouse, "SELECT count(*) FROM raw.medications WHERE stop_at < start_at") == [
        (n,)
    ]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        runs = con.execute("SELECT status, output_row_counts FROM meta.runs").fetchall()
    assert runs[-1][0] == "succeeded"
    assert json.loads(runs[-1][1])["dq.data_quality_issues"] == n


def test_the_profile_is_published_with_the_run_and_a_failed_run_keeps_it(tmp_path):
    export = shutil.copytree(SHARED / "synthea" / "jijones12_synthea", tmp_path / "export")
    plant_stop_before_start(export, 2)
    warehouse = tmp_path / "w.duckdb"
    first = run(export, warehouse)
    before = rows(warehouse, "SELECT * FROM dq.data_quality_issues ORDER BY ALL")
    assert len(before) == 2

    conditions = export / "conditions.csv"  # an error-severity failure: the run stops
    lines = conditions.read_text().split("\n")
    fields = lines[1].split(",")
    fields[lines[0].split(",").index("CODE")] = "not-a-code"
    lines[1] = ",".join(fields)
    conditions.write_text("\n".join(lines))
    from pipelines.errors import ContractError

    with pytest.raises(ContractError):
        run(export, warehouse)
    assert rows(warehouse, "SELECT * FROM dq.data_quality_issues ORDER BY ALL") == before
    assert {
        r[0] for r in rows(warehouse, "SELECT DISTINCT run_id FROM dq.data_quality_profile")
    } == {first.run_id}


def test_the_generator_plants_quirks_deterministically_in_gzipped_split_exports(tmp_path):
    args = dict(patients=60, seed=3, split=2, gzip=True, quirks=Quirks(3, 2))
    first = generate(tmp_path / "a", **args)
    second = generate(tmp_path / "b", **args)
    for name in ("medications-1.csv.gz", "conditions-1.csv.gz"):
        assert (first.out_dir / name).read_bytes() == (second.out_dir / name).read_bytes()
    lines = first.summary["quirks"]["lines"]
    assert len(lines["medications-1.csv.gz"]["stop_before_start"]) == 3
    assert len(lines["conditions-1.csv.gz"]["date_out_of_range"]) == 2
    con = duckdb.connect()
    path = str(first.out_dir / "medications-1.csv.gz")
    stops = con.execute(
        "SELECT count(*) FROM read_csv(?, all_varchar = true) WHERE STOP < START", [path]
    ).fetchone()[0]
    assert stops == 3
    with pytest.raises(ValueError, match="negative"):
        Quirks(-1, 0)


# --- staging: flagged records are left out only of what they would corrupt -----------------

PATIENTS = """
    patient_id | birth_date | sex | death_date
    p1         | 1960-05-01 | F   |
    p2         | 1850-01-01 | M   |
    p3         | 1970-01-01 | F   | 2999-01-01
    p4         | 1970-01-01 | F   | 1969-01-01
"""
ENCOUNTERS = """
    encounter_id | patient_id | start_at            | reason_code
    e0           | p1         | 2014-01-10 09:00:00 |
    e1           | p1         | 2016-03-01 09:00:00 |
    e9           | p1         | 2017-06-01 09:00:00 |
    e8           | p1         | 2999-01-01 09:00:00 |
    e7           | p1         | 1850-01-01 09:00:00 |
"""
CONDITIONS = """
    patient_id | start_date | stop_date  | code_system            | code
    p1         | 2016-03-01 | 2016-02-20 | http://snomed.info/sct | 279039007
    p1         | 2016-04-01 | 2016-04-10 | http://snomed.info/sct | 279039007
    p1         | 2999-01-01 |            | http://snomed.info/sct | 279039007
"""
MEDICATIONS = """
    patient_id | start_at            | stop_at             | code
    p1         | 2004-12-26 10:00:00 | 2004-12-20 10:00:00 | 309362
    p1         | 2005-01-26 10:00:00 | 2005-02-20 10:00:00 | 309362
    p1         | 2005-03-01 10:00:00 | 2999-01-01 10:00:00 | 309362
    p1         | 1850-03-01 10:00:00 |                     | 309362
"""


def test_staging_nulls_or_leaves_out_only_what_a_quirk_would_corrupt():
    from model_spec import assert_rows, build_study

    con = build_study(
        patients=PATIENTS, encounters=ENCOUNTERS, conditions=CONDITIONS, medications=MEDICATIONS
    )
    # a medication STOP before START or in the future is unknown; a START in 1850 is left out
    assert_rows(
        con,
        "select started_at, stopped_at from staging.stg_synthea__medications order by 1",
        """
        started_at          | stopped_at
        2004-12-26T10:00:00 |
        2005-01-26T10:00:00 | 2005-02-20T10:00:00
        2005-03-01T10:00:00 |
        """,
    )
    # a condition STOP before START ends the day it starts; a 2999 START is left out
    assert_rows(
        con,
        "select start_date, stop_date from staging.stg_synthea__conditions order by 1",
        """
        start_date | stop_date
        2016-03-01 | 2016-03-01
        2016-04-01 | 2016-04-10
        """,
    )
    assert_rows(
        con,
        "select encounter_id from staging.stg_synthea__encounters order by 1",
        """
        encounter_id
        e0
        e1
        e9
        """,
    )
    # implausible birth and death dates are unknown (a death before birth too)
    assert_rows(
        con,
        "select patient_id, birth_date, death_date from staging.stg_synthea__patients order by 1",
        """
        patient_id | birth_date | death_date
        p1         | 1960-05-01 |
        p2         |            |
        p3         | 1970-01-01 |
        p4         | 1970-01-01 |
        """,
    )
    # so the year-2999 records move neither the data extract date nor anyone's follow-up
    assert_rows(
        con,
        "select data_extract_date from intermediate.int_data_extract_date",
        """
        data_extract_date
        2017-06-01
        """,
    )
