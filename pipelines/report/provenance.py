"""The report's provenance and input data quality: the run record (`meta.runs`: parameters,
input files, value sets, output row counts) and the run's data-quality profile
(`dq.data_quality_profile`; pipelines/contracts.py), counts only, no values.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.report.text import (
    DASH,
    KEY_LABELS,
    Fmt,
    Released,
    Table,
    is_missing,
    none_if_na,
    parse_json,
)

# --- provenance ------------------------------------------------------------------------


def provenance(data: Released) -> dict[str, Any]:
    run = data.run
    if not run:
        return {"missing": True, "run_id": data.run_id}
    status = str(run.get("status") or "unknown")
    if status == "running":
        status = "running (report written before the run record was closed)"
    summary = [
        ("Run ID", str(run.get("run_id"))),
        ("Prefect flow run", str(run.get("flow_run_id") or DASH)),
        ("Status", status),
        ("Started (UTC)", _when(run.get("started_at"))),
        ("Ended (UTC)", _when(run.get("ended_at"))),
        ("Source export", str(run.get("source") or DASH)),
        ("Code version", str(run.get("code_version") or DASH)),
    ]
    return {
        "missing": False,
        "summary": Table(["Item", "Value"], [list(x) for x in summary], title="Run"),
        "parameters": _json_table(run.get("parameters"), "Study parameters", ["Parameter", "Value"]),
        "inputs": _json_table(run.get("input_manifest"), "Input files (SHA-256)", ["File"]),
        "value_sets": _json_table(run.get("value_set_hashes"), "Value sets (SHA-256)", ["Value set", "Hash"]),
        "row_counts": _json_table(run.get("output_row_counts"), "Output tables (rows)", ["Table", "Rows"]),
    }  # fmt: skip


def _when(value: Any) -> str:
    if is_missing(value):
        return DASH
    return str(value)[:19].replace("T", " ")


def _json_table(value: Any, title: str, columns: list[str]) -> Table:
    """A JSON object (key -> value) or array of objects as a table."""
    obj = parse_json(value)
    if isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        keys = list(dict.fromkeys(k for x in obj for k in x))
        rows = [[_text(x.get(k)) for k in keys] for x in obj]
        return Table(
            [KEY_LABELS.get(k, k.replace("_", " ").capitalize()) for k in keys], rows, title=title
        )
    if isinstance(obj, dict) and obj:
        return Table(columns[:2], [[str(k), _text(v)] for k, v in obj.items()], title=title)
    return Table(columns[:1], [], title=title, caption="Not recorded for this run.")


def _text(v: Any) -> str:
    if isinstance(v, list | dict):
        return json.dumps(v)
    return DASH if v is None else str(v)


def quality_tables(data: Released) -> list[Table]:
    """Per DQD category: checks run, passed, warned, failed and rows flagged; then the checks
    that flagged rows or did not pass, one row each. Nothing when the run has no profile."""
    df = data.quality
    if df is None or df.empty:
        return []
    summary = [
        [
            str(category), f"{len(g):,}", f"{(g['status'] == 'pass').sum():,}",
            f"{(g['status'] == 'warn').sum():,}", f"{(g['status'] == 'fail').sum():,}",
            f"{int(g['rows_failed'].fillna(0).sum()):,}",
        ]
        for category, g in df.groupby("category", sort=True)
    ]  # fmt: skip
    tables = [
        Table(
            ["Category", "Checks", "Passed", "Warned", "Failed", "Rows flagged"],
            summary,
            title="Input data quality",
            caption=(
                "Checks of the input tables (data_contracts/raw, OHDSI Data Quality Dashboard"
                " categories). A check passes while its failed rows stay within its threshold;"
                " flagged records stay in raw, are listed by file and line in"
                " dq.data_quality_issues and are left out only of the features they would"
                " corrupt (docs/study-definitions.md)."
            ),
        )
    ]
    shown = df[(df["rows_failed"].fillna(0) > 0) | (df["status"] != "pass")]
    if not shown.empty:
        rows = [
            [
                str(r.table_name), _text(none_if_na(r.column_name)), str(r.check_name),
                str(r.category), str(r.severity), f"{100 * r.threshold:g}%",
                _text(none_if_na(r.rows_checked)), _text(none_if_na(r.rows_failed)),
                Fmt().pct(none_if_na(r.fraction_failed), digits=2), str(r.status),
            ]
            for r in shown.itertuples()
        ]  # fmt: skip
        tables.append(
            Table(
                [
                    "Table",
                    "Column",
                    "Check",
                    "Category",
                    "Severity",
                    "Threshold",
                    "Rows checked",
                    "Rows failed",
                    "Failed",
                    "Status",
                ],
                rows,
                title="Input checks with flagged rows",
                text_columns=5,
            )  # fmt: skip
        )
    return tables
