"""The report's clinical tables (issue 14): Table 1 (baseline characteristics), care after
diagnosis, skeletal-related events at presentation, prognosis after diagnosis, and the
caution that goes with them. The survival figure is drawn in `pipelines/report/plots.py`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pipelines.report.text import (
    DASH,
    SUPPRESSED,
    Fmt,
    Released,
    Table,
    is_missing,
    rule_label,
    sig_figs,
)

if TYPE_CHECKING:
    import pandas as pd


TABLE_ONE_COMPARISONS = (
    ("landmark", "reference_standard", "Landmark population, by reference standard",
     ("positive", "Metastasis within the horizon"), ("negative", "No metastasis")),
    ("cohort", "reference_standard", "Cohort, by diagnosis within follow-up",
     ("positive", "Diagnosed"), ("negative", "Not diagnosed")),
    ("cohort", "breast_cancer_history", "Cohort, by breast cancer history",
     ("yes", "History"), ("no", "No history")),
)  # fmt: skip


CARE_LABELS = {
    "non_opioid_analgesic": "Non-opioid analgesic",
    "opioid": "Opioid",
    "neuropathic_agent": "Neuropathic agent",
    "corticosteroid": "Corticosteroid",
    "radiotherapy": "Radiotherapy",
    "bone_targeted_agent": "Bone-targeted agent",
    "chemotherapy": "Chemotherapy",
    "endocrine_therapy": "Endocrine therapy",
    "targeted_therapy": "Targeted therapy",
    "spine_imaging_xray": "Spine imaging: X-ray",
    "spine_imaging_ct": "Spine imaging: CT",
    "spine_imaging_mri": "Spine imaging: MRI",
    "spine_imaging_bone_scan": "Spine imaging: bone scan",
    "bone_biopsy": "Bone biopsy",
    "surgical_stabilisation": "Surgical stabilisation or decompression",
}


PROGNOSIS_LABELS = {
    "median_survival_days": "Median survival, days (95% CI)",
    "survival_1_year": "Survival at 1 year, % (95% CI)",
    "hazard_ratio_per_30_days_age_adjusted": "Hazard ratio of death per 30 days of interval, "
    "adjusted for age (95% CI)",
    "sre_odds_ratio_per_30_days": "Odds ratio of an SRE per 30 days of interval (95% CI)",
}


def _variable_label(variable: str) -> str:
    return {"age_at_index": "Age at index, years", "age_band": "Age band", "sex": "Sex",
            "n_encounters_lookback": "Encounters in the year before"}.get(
        variable, rule_label(variable))  # fmt: skip


def _table_one_cell(row: dict, fmt: Fmt) -> str:
    if row.get("count_status") == "not_estimable":  # a continuous variable
        return fmt.days(row.get("median"), row.get("q1"), row.get("q3"))
    if is_missing(row.get("count")):
        return SUPPRESSED
    pct = row.get("percent")
    return f"{fmt.count(row['count'])} ({DASH if is_missing(pct) else f'{pct:.1f}%'})"


def table_one_tables(data: Released, fmt: Fmt) -> list[Table]:
    """Table 1 per population and comparison: overall, the two groups, SMD."""
    t1 = data.table("table_one")
    if not len(t1):
        return []
    t1 = t1.assign(level=t1["level"].fillna("").astype(str))
    tables = []
    for population, comparison, title, *groups in TABLE_ONE_COMPARISONS:
        part = t1[t1["population"] == population]
        overall = part[part["comparison"] == "overall"]
        split = part[part["comparison"] == comparison]
        if not len(overall):
            continue
        columns, rows = ["Characteristic"], []
        sizes = [overall] + [split[split["group"] == g] for g, _ in groups]
        for label, rows_of in zip(("Overall", *(lb for _, lb in groups)), sizes, strict=True):
            n = rows_of["n_group"].iloc[0] if len(rows_of) else None
            columns.append(f"{label} (N = {fmt.count(n)})")
        columns.append("SMD")
        for variable in dict.fromkeys(overall["variable"]):
            for level in dict.fromkeys(overall.loc[overall["variable"] == variable, "level"]):
                cells = []
                for rows_of in sizes:
                    hit = rows_of[(rows_of["variable"] == variable) & (rows_of["level"] == level)]
                    cells.append(_table_one_cell(hit.iloc[0].to_dict(), fmt) if len(hit) else DASH)
                smd = split.loc[split["variable"] == variable, "smd"]
                smd_text = (
                    DASH
                    if not len(smd) or is_missing(smd.iloc[0])
                    else sig_figs(float(smd.iloc[0]))
                )
                name = _variable_label(variable) + (f": {level}" if level else ", median (IQR)")
                rows.append(
                    [
                        name,
                        *cells,
                        smd_text if level in ("", _first_level(overall, variable)) else "",
                    ]
                )
        tables.append(Table(columns, rows, title=f"Baseline characteristics (Table 1). {title}",
                            caption=_TABLE_ONE_CAPTION))  # fmt: skip
    return tables


def _first_level(overall: pd.DataFrame, variable: str) -> str:
    return str(overall.loc[overall["variable"] == variable, "level"].iloc[0])


_TABLE_ONE_CAPTION = (
    "Counts (percent of episodes with the variable known); continuous variables as median "
    "(IQR). SMD: standardized mean difference between the two groups (Yang & Dalton for "
    "categories; inf when a level is in one group only). 'suppressed': hidden by disclosure "
    "control (a small count, or a count that would reveal one); an SMD is not shown when a "
    "count of its variable is hidden."
)


def care_table(data: Released, fmt: Fmt) -> Table:
    care = data.table("care_after_diagnosis_summary")
    rows = []
    for row in care.to_dict("records"):
        rows.append([
            CARE_LABELS.get(row["care_category"], row["care_category"]),
            f"{fmt.count(row['n_received'])} / {fmt.count(row['n_diagnosed'])}",
            fmt.pct(row["proportion"], row["lower"], row["upper"]),
            fmt.days(row["median_days"], row["q1_days"], row["q3_days"]),
        ])  # fmt: skip
    return Table(
        ["Care", "Received / diagnosed", "% (95% CI)", "Days to first record, median (IQR)"],
        rows,
        title="Care after diagnosis",
        caption=(
            "Among episodes diagnosed with bone metastasis: a medication, procedure or spine "
            "imaging of the category from the diagnosis date to the end of the care window. "
            "Wilson 95% CIs. Days among those who received it."
        ),
    )


def sre_table(data: Released, fmt: Fmt) -> Table:
    sre = data.table("presentation_by_interval")
    labels = {"all": "All diagnosed", "first": "Shortest third", "second": "Middle third",
              "third": "Longest third"}  # fmt: skip
    rows = [
        [labels.get(r["interval_third"], r["interval_third"]), fmt.count(r["n"]),
         fmt.count(r["n_sre"]), fmt.pct(r["proportion"], r["lower"], r["upper"])]
        for r in sre.to_dict("records")
    ]  # fmt: skip
    return Table(
        ["Diagnostic interval", "Diagnosed", "With an SRE", "% (95% CI)"],
        rows,
        title="Skeletal-related events (SRE) at presentation, by third of the diagnostic interval",
        caption=(
            "Thirds of the days from back-pain onset to diagnosis (equal-sized, by rank). "
            "SRE: spinal cord compression or pathological vertebral fracture around diagnosis."
        ),
    )


def prognosis_table(data: Released, fmt: Fmt) -> Table:
    summary = data.table("prognosis_summary")
    rows = []
    for r in summary.to_dict("records"):
        measure = r["measure"]
        if measure == "survival_1_year":
            value = fmt.pct(r["estimate"], r["lower"], r["upper"])
        elif measure == "median_survival_days":
            value = fmt.days(r["estimate"]) + (
                f" ({fmt.days(r['lower'])}{DASH}{fmt.days(r['upper'])})"
                if not is_missing(r["estimate"]) else "")  # fmt: skip
            if not is_missing(r["estimate"]) and not math.isfinite(float(r["estimate"])):
                value = "not reached"
        else:
            value = fmt.ratio(r["estimate"], r["lower"], r["upper"])
        note = "" if not is_missing(r["estimate"]) else _prognosis_why(r)
        rows.append([PROGNOSIS_LABELS.get(measure, measure), value, fmt.count(r["n"]),
                     fmt.count(r["n_events"]), note])  # fmt: skip
    return Table(["Measure", "Estimate", "Diagnosed", "Events", "Note"], rows,
                 title="Prognosis after diagnosis")  # fmt: skip


def _prognosis_why(row: dict) -> str:
    if row.get("estimate_status") in ("suppressed_small", "suppressed_complement"):
        return "hidden: its events or non-events are fewer than min_cell (disclosure control)"
    return str(row.get("note") or "not estimable")


def caution() -> str:
    from pipelines.stats.prognosis import CAUTION

    return CAUTION
