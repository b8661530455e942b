"""Labels for the codes in the release tables (flags, rules, strata, subgroups, measures,
analyses, attrition steps, modalities): one table `(kind, code, label)`.

The words themselves are kept once, in pipelines/report/text.py (the report uses the same);
this module only lays them out as a table, which the release step stores as
`release.labels` and the dashboard reads. Attrition step labels carry study parameters
(`{washout_days}`): filled from the run's settings when given, else left as `<name>`.
"""

from __future__ import annotations

import re

import pandas as pd

from pipelines.report import text as report

COLUMNS = ["kind", "code", "label"]


def label_rows(parameters: dict | None = None) -> list[tuple[str, str, str]]:
    """Every (kind, code, label); `parameters` fill the attrition steps' placeholders."""
    rows = [("rule", code, text) for code, (text, _group) in report.RULES.items()]
    rows += [("flag", code.removeprefix("flag_"), text) for code, (text, group) in report.RULES.items() if group != "combination"]  # fmt: skip
    rows += [("stratum", f"{var}={code}", text) for (var, code), text in report.STRATUM_LABELS.items()]  # fmt: skip
    rows += [("subgroup", code, text.capitalize()) for code, text in report.SUBGROUP_LABELS.items()]  # fmt: skip
    rows += [("measure", code, text) for code, text in report.MEASURE_LABELS.items()]
    rows += [("analysis", code, text) for code, text in report.ANALYSIS_LABELS.items()]
    rows += [("modality", code, text) for code, text in report.MODALITY_LABELS.items()]
    rows += [("rule", "red_flag_count", "Number of seed red flags (score)")]
    rows += [("rule", "model", "Logistic model on all flags")]
    rows += [("step", code, _fill(text, parameters)) for code, text in report.STEP_LABELS.items()]  # fmt: skip
    return rows


def labels_frame(parameters: dict | None = None) -> pd.DataFrame:
    return pd.DataFrame(label_rows(parameters), columns=COLUMNS)


def _fill(template: str, parameters: dict | None) -> str:
    """`{name}` -> the parameter's value, or `<name>` when it is not known."""

    def value(match: re.Match) -> str:
        name = match.group(1)
        if parameters and name in parameters:
            v = parameters[name]
            return ", ".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
        return f"<{name}>"

    return re.sub(r"\{(\w+)\}", value, template)
