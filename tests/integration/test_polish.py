"""Small user-visible items of issue 15 (item 8): help, logs, make notebooks, docs, ignores."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def shell_lines(path: Path) -> list[str]:
    """The lines inside the ```sh blocks of a Markdown file."""
    lines, inside = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            inside = line.strip() in ("```sh", "```bash", "```console")
            continue
        if inside:
            lines.append(line)
    return lines


def test_top_level_help_is_a_whole_sentence():
    from pipelines.cli import build_parser

    description = build_parser().description
    assert description.endswith(".") and "Each sub-command" not in description
    assert "red flags" in description


def test_ingest_and_run_help_name_all_three_source_layouts():
    """The ingest and the run load Synthea CSV, OMOP CDM and FHIR R4 (issue 13); their help
    said "Synthea" only."""
    from pipelines.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summary = {a.dest: a.help for a in commands._choices_actions}
    texts = [summary["ingest"]]
    for name in ("ingest", "run"):
        texts += [a.help for a in commands.choices[name]._actions if "--source" in a.option_strings]
    assert len(texts) == 3
    for text in texts:
        assert all(layout in text for layout in ("Synthea", "OMOP", "FHIR")), text


def test_gx_and_prefect_info_lines_are_hidden_without_verbose():
    script = """
import logging, sys
from pipelines.cli import configure_logging
configure_logging(sys.argv[1] == "v")
import prefect.logging  # Prefect configures its logging on import
logging.getLogger("great_expectations.data_context.types.base").info("GX-INTERNAL")
logging.getLogger("prefect").info("PREFECT-SERVER")
logging.getLogger("prefect.task_runs").info("TASK-STATE")
logging.getLogger("prefect.flow_runs").info("Beginning flow run 'x' for flow 'y'")
logging.getLogger("prefect.flow_runs").info("[ingest] started")
logging.getLogger("great_expectations").warning("GX-WARNING")
"""

    def stderr(mode: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", script, mode], cwd=REPO, capture_output=True, text=True
        ).stderr

    quiet, verbose = stderr("q"), stderr("v")
    assert "[ingest] started" in quiet and "GX-WARNING" in quiet
    for hidden in ("GX-INTERNAL", "PREFECT-SERVER", "TASK-STATE", "Beginning flow run"):
        assert hidden not in quiet
        assert hidden in verbose


def test_make_notebooks_allows_root_only_as_root():
    dry = subprocess.run(
        ["make", "-n", "notebooks"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    command = [line for line in dry.splitlines() if "jupyter notebook" in line][-1]
    assert ("--allow-root" in command) == (os.geteuid() == 0)


def test_the_planted_file_the_generator_docs_use_is_shipped_and_loads():
    from pipelines.generator import load_planted

    text = (REPO / "docs" / "generator.md").read_text(encoding="utf-8")
    named = set(re.findall(r"--planted ([a-z]\S*\.toml)", text))
    named |= set(re.findall(r'load_planted\("([^"]+)"', text))
    assert named
    for name in named:
        assert (REPO / name).is_file(), name
        load_planted(REPO / name, [])


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_call_redflags_from_the_venv(doc):
    bare = [line for line in shell_lines(doc) if re.match(r"\s*(\$ )?redflags\b", line)]
    assert bare == [], f"{doc.name}: use .venv/bin/redflags"


def test_the_readme_commands_write_outside_the_repository_root():
    paths = []
    for line in shell_lines(REPO / "README.md"):
        paths += re.findall(r"--(?:warehouse|out|report|parquet-dir) (\S+)", line)
    assert paths
    loose = [p for p in paths if not p.startswith(("out/", "demo/", "/", "$"))]
    assert loose == []


@pytest.mark.parametrize(
    "path",
    ["w.duckdb", "w.duckdb.lock", "w.duckdb.wal", "w.duckdb.tmp/x", "demo/x", "out/x",
     "w.release/x.parquet"],
)  # fmt: skip
def test_warehouse_side_files_and_outputs_are_ignored(path):
    result = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
    assert result.returncode == 0, path
