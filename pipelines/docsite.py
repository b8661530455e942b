"""`redflags docs --out DIR`: a documentation site for the SQL models in sql/.

One HTML page per model (purpose, grain and parameters from the three-line header every
SQL file starts with; output columns from sqlglot; upstream and downstream from the
dependency graph the SQL runner derives, pipelines/models.py) and an index with a picture
of the graph (an SVG drawn with matplotlib: no graphviz, nothing fetched). A model without
its header is an error, so the site cannot silently lose a model's description.
"""

from __future__ import annotations

import argparse
import html
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import UserFacingError

HEADER_KEYS = ("purpose", "grain", "parameters")  # the three header lines, in this order
DAG_FILE = "dag.svg"
LAYER_COLOURS = {"source": "#BBBBBB", "staging": "#56B4E9", "intermediate": "#E69F00", "mart": "#009E73"}  # fmt: skip


class HeaderError(UserFacingError):
    """A SQL model lacks (part of) its three-line header."""


@dataclass(frozen=True)
class ModelDoc:
    name: str  # qualified: schema.table
    path: str  # relative to the repository, e.g. sql/marts/cohort.sql
    purpose: str
    grain: str
    parameters: tuple[str, ...]
    columns: tuple[str, ...]
    upstream: tuple[str, ...]  # models and raw/meta sources it reads
    downstream: tuple[str, ...]  # models that read it


def configure_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder for the HTML site")


def run_cli(args: argparse.Namespace) -> int:
    pages = write_site(args.out)
    print(f"Wrote {len(pages) - 1} model pages, an index and {DAG_FILE} to {args.out}")
    return 0


def parse_header(path: Path, sql: str) -> dict[str, str]:
    """`-- purpose: ...`, `-- grain: ...`, `-- parameters: ...` (the file's first three lines)."""
    lines = sql.splitlines()[: len(HEADER_KEYS)]
    header = {}
    for key, line in zip(HEADER_KEYS, lines + [""] * len(HEADER_KEYS), strict=False):
        prefix = f"-- {key}:"
        if not line.startswith(prefix) or not line[len(prefix) :].strip():
            raise HeaderError(f"{path}: line {HEADER_KEYS.index(key) + 1} must be '{prefix} ...' (the model header)")  # fmt: skip
        header[key] = line[len(prefix) :].strip()
    return header


def model_docs(sql_dir: Path | None = None) -> list[ModelDoc]:
    """Every model's documentation, in build order; HeaderError if one lacks its header."""
    import sqlglot

    from pipelines.models import SQL_DIR, model_graph

    sql_dir = sql_dir or SQL_DIR
    models = model_graph(sql_dir)
    readers: dict[str, list[str]] = {}
    for m in models:
        for ref in m.depends_on:
            readers.setdefault(ref, []).append(m.qualified_name)
    docs = []
    for m in models:
        header = parse_header(m.path, m.sql)
        tree = sqlglot.parse_one(m.sql, read="duckdb")
        docs.append(ModelDoc(
            name=m.qualified_name,
            path=str(m.path.relative_to(sql_dir.parent)),
            purpose=header["purpose"],
            grain=header["grain"],
            parameters=m.parameters,
            columns=tuple(tree.named_selects),
            upstream=(*m.depends_on, *m.sources),
            downstream=tuple(sorted(readers.get(m.qualified_name, []))),
        ))  # fmt: skip
        _check_parameters(m.path, header["parameters"], m.parameters)
    return docs


def _check_parameters(path: Path, declared: str, used: tuple[str, ...]) -> None:
    """The header's parameter list names exactly the `$parameters` the SQL uses."""
    names = set() if declared == "none" else {p.strip().lstrip("$") for p in declared.split(",")}
    if names != set(used):
        raise HeaderError(f"{path}: header lists parameters {sorted(names)} but the SQL uses {sorted(used)}")  # fmt: skip


def write_site(out: Path, sql_dir: Path | None = None) -> list[Path]:
    """The index, one page per model and the graph picture; returns the HTML pages."""
    docs = model_docs(sql_dir)
    out = Path(out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    draw_dag(docs, out / DAG_FILE)
    pages = []
    for doc in docs:
        page = out / "models" / f"{doc.name}.html"
        page.write_text(model_page(doc, {d.name for d in docs}), encoding="utf-8")
        pages.append(page)
    index = out / "index.html"
    index.write_text(index_page(docs), encoding="utf-8")
    return [index, *pages]


# --- HTML -----------------------------------------------------------------------------

STYLE = ("body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
         "td,th{text-align:left;padding:.2rem .6rem;vertical-align:top}code{background:#f3f3f3}")  # fmt: skip


def _document(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")  # fmt: skip


def _link(name: str, models: set[str], prefix: str = "") -> str:
    """A model links to its page; a raw/meta source (written by ingest) is plain text."""
    text = f"<code>{html.escape(name)}</code>"
    return f"<a href='{prefix}{html.escape(name)}.html'>{text}</a>" if name in models else text


def _list(names: tuple[str, ...], models: set[str], empty: str) -> str:
    if not names:
        return f"<p>{empty}</p>"
    return "<ul>" + "".join(f"<li>{_link(n, models)}</li>" for n in names) + "</ul>"


def model_page(doc: ModelDoc, models: set[str]) -> str:
    columns = "".join(f"<li><code>{html.escape(c)}</code></li>" for c in doc.columns)
    if "*" in doc.columns:
        columns += "<li>(<code>*</code>: every column of its input, see upstream)</li>"
    params = ", ".join(f"<code>${html.escape(p)}</code>" for p in doc.parameters) or "none"
    body = (
        f"<p><a href='../index.html'>All models</a></p><h1><code>{html.escape(doc.name)}</code></h1>"
        f"<p>File: <code>{html.escape(doc.path)}</code></p>"
        f"<h2>Purpose</h2><p>{html.escape(doc.purpose)}</p>"
        f"<h2>Grain</h2><p>{html.escape(doc.grain)}</p>"
        f"<h2>Parameters</h2><p>{params}</p>"
        f"<h2>Columns</h2><ul>{columns}</ul>"
        f"<h2>Upstream</h2>{_list(doc.upstream, models, 'none')}"
        f"<h2>Downstream</h2>{_list(doc.downstream, models, 'none (read by the statistics and the release)')}"
    )  # fmt: skip
    return _document(doc.name, body)


def index_page(docs: list[ModelDoc]) -> str:
    rows = "".join(
        f"<tr><td><a href='models/{html.escape(d.name)}.html'><code>{html.escape(d.name)}</code></a></td>"
        f"<td>{html.escape(d.purpose)}</td></tr>"
        for d in docs
    )  # fmt: skip
    body = (
        f"<h1>SQL models</h1><p>{len(docs)} models in build order, generated from <code>sql/</code> "
        "by <code>redflags docs</code>. Arrows point from a table to the models that read it.</p>"
        f"<p><img src='{DAG_FILE}' alt='dependency graph of the SQL models' style='max-width:100%'></p>"
        f"<table><tr><th>model</th><th>purpose</th></tr>{rows}</table>"
    )  # fmt: skip
    return _document("SQL models", body)


# --- the graph picture ------------------------------------------------------------------


LAYER_ORDER = ("source", "staging", "intermediate", "mart")


def _layer(name: str, models: set[str]) -> str:
    return name.split(".")[0] if name in models else "source"


def _layout(docs: list[ModelDoc]) -> dict[str, tuple[int, int]]:
    """(column, row) per node: one column per layer (sources, staging, intermediate, mart),
    rows in build order, so arrows run left to right and within a column downwards."""
    models = {d.name for d in docs}
    order = [r for d in docs for r in d.upstream if r not in models]
    order = list(dict.fromkeys(sorted(order) + [d.name for d in docs]))
    rows: dict[int, int] = {}
    position = {}
    for name in order:
        column = LAYER_ORDER.index(_layer(name, models))
        position[name] = (column, rows.get(column, 0))
        rows[column] = rows.get(column, 0) + 1
    return position


def draw_dag(docs: list[ModelDoc], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # names stay text in the SVG: searchable, selectable
    position = _layout(docs)
    columns = max(c for c, _ in position.values()) + 1
    height = max(r for _, r in position.values()) + 1
    fig, ax = plt.subplots(figsize=(3.6 * columns, 0.32 * height + 1))
    for d in docs:
        for ref in d.upstream:
            (x0, y0), (x1, y1) = position[ref], position[d.name]
            same = x0 == x1  # inside a layer: a short arc on the box's right side
            ax.annotate("", xy=(x1 * 3 + (0.9 if same else -1.1), -y1), xytext=(x0 * 3 + 1.1 * (not same) + 0.9 * same, -y0),
                        arrowprops={"arrowstyle": "->", "color": "#888888", "lw": 0.5,
                                    "connectionstyle": "arc3,rad=-0.4" if same else "arc3"})  # fmt: skip
    for name, (x, y) in position.items():
        layer = _layer(name, {d.name for d in docs})
        ax.text(x * 3, -y, name.split(".", 1)[1] if layer != "source" else name, ha="center", va="center", fontsize=7,
                bbox={"boxstyle": "round", "fc": LAYER_COLOURS.get(layer, "#DDDDDD"), "ec": "none"})  # fmt: skip
    ax.set_xlim(-1.6, columns * 3 - 1.4)
    ax.set_ylim(-height, 1)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, format="svg")
    plt.close(fig)
    return out
