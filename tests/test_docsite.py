"""`redflags docs`: one page per SQL model with its header and lineage, and the graph."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.docsite import HeaderError, write_site
from pipelines.models import SQL_DIR, model_graph


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    assert main(["docs", "--out", str(out)]) == 0
    return out


def test_every_model_has_a_page_with_header_and_lineage(site):
    models = model_graph()
    assert len(models) > 20
    readers = {m.qualified_name: [r.qualified_name for r in models if m.qualified_name in r.depends_on] for m in models}  # fmt: skip
    for m in models:
        page = (site / "models" / f"{m.qualified_name}.html").read_text()
        purpose = m.sql.splitlines()[0].removeprefix("-- purpose:").strip()
        assert purpose and _text(purpose) in page, m.qualified_name
        upstream = page.split("<h2>Upstream</h2>")[1].split("<h2>Downstream</h2>")[0]
        downstream = page.split("<h2>Downstream</h2>")[1]
        for ref in (*m.depends_on, *m.sources):
            assert f"<code>{ref}</code>" in upstream, (m.qualified_name, ref)
        for ref in m.depends_on:  # a model upstream links to its page
            assert f"href='{ref}.html'" in upstream
        for reader in readers[m.qualified_name]:
            assert f"<code>{reader}</code>" in downstream, (m.qualified_name, reader)
        for p in m.parameters:
            assert f"${p}" in page


def test_index_links_every_model_and_draws_the_graph(site):
    index = (site / "index.html").read_text()
    svg = (site / "dag.svg").read_text()
    assert "<img src='dag.svg'" in index and svg.lstrip().startswith("<?xml")
    for m in model_graph():
        assert f"href='models/{m.qualified_name}.html'" in index
        assert re.search(rf">\s*{re.escape(m.name)}\s*<", svg), f"{m.name} not drawn"


def _sql_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "sql"
    shutil.copytree(SQL_DIR, copy)
    return copy


def test_a_model_without_its_header_fails(tmp_path):
    sql = _sql_copy(tmp_path)
    victim = sql / "marts" / "cohort.sql"
    lines = victim.read_text().splitlines(keepends=True)
    victim.write_text("".join(lines[1:]))  # purpose line gone
    with pytest.raises(HeaderError, match=r"cohort\.sql: line 1 must be '-- purpose:"):
        write_site(tmp_path / "site", sql_dir=sql)


def test_a_header_naming_the_wrong_parameters_fails(tmp_path):
    sql = _sql_copy(tmp_path)
    victim = sql / "marts" / "attrition.sql"
    text = victim.read_text().replace("-- parameters: $study_start_date", "-- parameters: none", 1)
    victim.write_text(text)
    with pytest.raises(HeaderError, match=r"attrition\.sql: header lists parameters \[\]"):
        write_site(tmp_path / "site", sql_dir=sql)


def _text(s: str) -> str:
    import html

    return html.escape(s)
