"""The analyst notebooks: stored without outputs, and they run against a built warehouse."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from report_fixtures import study_warehouse

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXPECTED = ("01_cohort_and_attrition", "02_red_flag_accuracy", "03_time_to_diagnosis")


def test_the_three_notebooks_exist():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a code cell has outputs"
            assert cell.execution_count is None, f"{path.name}: a code cell has an execution count"


@pytest.mark.parametrize("kind", ["generated", "synthea"], ids=["events", "no_events"])
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_against_a_built_warehouse(name, kind, monkeypatch, tmp_path_factory):
    from nbclient import NotebookClient

    warehouse = study_warehouse(kind, tmp_path_factory)
    monkeypatch.setenv("REDFLAGS_WAREHOUSE", str(warehouse))
    monkeypatch.setenv("MPLBACKEND", "agg")
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},  # as when opened in Jupyter
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type in ("execute_result", "display_data") for o in outputs)
    assert str(warehouse) in "".join(
        o.get("text", "") for o in outputs if o.output_type == "stream"
    )
