"""`--engine spark` reads Synthea CSV only: an OMOP or FHIR export, named or auto-detected,
is refused with one clear line before Spark starts (no pyspark or Java needed to refuse)."""

from __future__ import annotations

import duckdb
import pytest

from pipelines.engines.spark import SparkEngine
from pipelines.errors import UserFacingError
from pipelines.generator.convert import generate_in_format
from pipelines.settings import StudySettings
from pipelines.study import run_study


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark_formats")
    for fmt in ("omop", "fhir"):
        generate_in_format(root / fmt, fmt, patients=30, seed=3)
    return root


@pytest.mark.parametrize("fmt", ["omop", "fhir"])
@pytest.mark.parametrize("named", [False, True])
def test_spark_refuses_an_export_that_is_not_synthea_csv_before_starting(
    exports, tmp_path, fmt, named
):
    warehouse = tmp_path / "w.duckdb"
    said = []
    with pytest.raises(
        UserFacingError, match=rf"--engine spark reads Synthea CSV only, not .*{fmt}"
    ):
        run_study(exports / fmt, warehouse, StudySettings(), say=said.append,
                  engine=SparkEngine("local[1]", spark_dir=tmp_path / "spark"),
                  source_format=fmt if named else "auto")  # fmt: skip
    assert not any(line.startswith("starting Spark") for line in said)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        status, error = con.execute("SELECT status, error FROM meta.runs").fetchone()
    assert status == "failed" and error.startswith("ingest: --engine spark reads Synthea CSV only")
    assert not any((tmp_path / "spark" / "runs").iterdir())  # the run's folder is removed
