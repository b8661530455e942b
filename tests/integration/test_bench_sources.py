"""The source layouts' benchmark (bench/bench_sources.py): a stage's peak memory is its own,
sampled over its process tree, not this process's; the ratio is given in CPU time too."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import bench_sources


@pytest.fixture(scope="module")
def fhir_export(tmp_path_factory) -> Path:
    from pipelines.generator import generate
    from pipelines.generator.convert import convert

    root = tmp_path_factory.mktemp("sources")
    generate(root / "synthea", patients=50, seed=3)
    convert(root / "synthea", root / "fhir", "fhir")
    return root / "fhir"


def test_a_source_stage_peak_is_its_own_not_this_process(fhir_export, tmp_path):
    """A child's ru_maxrss counts this process's memory at fork; sampling its tree does not."""
    ballast = b"x" * (600 * 2**20)  # this process now holds 600 MB more
    m = bench_sources.measure("fhir_plain", fhir_export, tmp_path)
    assert len(ballast) and m["status"] == "ok"
    assert 20 < m["peak_rss_mb"] < 400
    assert m["cpu_seconds"] > 0 and m["process_cpu_seconds"] >= m["cpu_seconds"]


def test_the_source_summary_gives_the_cpu_ratio_beside_wall():
    report = {
        "patients": 10,
        "exports": {"fhir_mb": 1.0, "omop_mb": 1.0},
        "stages": {
            "fhir_plain": {"status": "ok", "seconds": 2.0, "cpu_seconds": 3.0},
            "fhir_ingest": {"status": "ok", "seconds": 6.0, "cpu_seconds": 12.0},
        },
        "fhir_ingest_over_plain": 3.0,
        "fhir_ingest_over_plain_cpu": 4.0,
    }
    assert "fhir ingest / plain read: 3.0x wall, 4.0x CPU" in bench_sources.summary(report)
