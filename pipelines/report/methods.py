"""Report sections on methods (issue 14): model validation and the STARD 2015 checklist.

Kept apart from pipelines/report/render.py, which calls these functions for its template context.
Like the rest of the report they read only released tables (`Released`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipelines.report.text import (
    DASH,
    SUBGROUP_LABELS,
    Fmt,
    Released,
    Table,
    is_missing,
    rule_label,
    sig_figs,
)

if TYPE_CHECKING:
    import pandas as pd

VALIDATION_MEASURES = {
    "auroc": "AUROC",
    "calibration_intercept": "Calibration intercept",
    "calibration_slope": "Calibration slope",
    "brier_score": "Brier score",
}
STATUS_TEXT = {
    "estimated": "",
    "low_epv_warning": "few events per predictor: expect overfitting",
    "refused_low_epv": "not fitted: too few events per predictor",
    "not_estimable": "not estimable",
}


def _value(v: Any, digits: int = 3) -> str:
    if is_missing(v):
        return DASH
    return f"{v:.{digits}f}" if abs(v) < 1 else sig_figs(v)


def _with_ci(row: dict, digits: int = 3) -> str:
    text = _value(row["corrected"], digits)
    if text != DASH and not is_missing(row["lower"]) and not is_missing(row["upper"]):
        text += f" ({_value(row['lower'], digits)}{DASH}{_value(row['upper'], digits)})"
    return text


def _note(row: dict) -> str:
    return str(row.get("note") or "") or STATUS_TEXT.get(str(row.get("status")), "")


def model_validation_tables(data: Released, fmt: Fmt) -> list[Table]:
    """Table 3a: apparent, optimism, corrected (95% CI) per subgroup and measure; Table 3b:
    optimism-corrected net benefit at each decision threshold (all episodes)."""
    frame = data.table("model_validation")
    if frame.empty:
        return []
    rows = []
    for sub, block in frame.groupby("subgroup", sort=False):
        first = block.iloc[0]
        epv = (
            DASH
            if is_missing(first["events_per_variable"])
            else f"{first['events_per_variable']:.1f}"
        )
        label = SUBGROUP_LABELS.get(sub, sub)
        for r in block[block["measure"].isin(list(VALIDATION_MEASURES))].to_dict("records"):
            rows.append([f"{label}: {VALIDATION_MEASURES[r['measure']]}",
                         fmt.count(r["n"]), fmt.count(r["n_events"]), epv,
                         _value(r["apparent"]), _value(r["optimism"]), _with_ci(r),
                         _note(r)])  # fmt: skip
    boots = frame["bootstraps"].max()
    tables = [
        Table(
            [
                "Model and measure",
                "Episodes",
                "Events",
                "Events per predictor",
                "Apparent",
                "Optimism",
                "Corrected (95% CI)",
                "Note",
            ],
            rows,
            title="Table 3a. Model validation: bootstrap optimism correction",
            caption=(
                f"Harrell's bootstrap ({boots:.0f} replicates): each replicate repeats the whole "
                "modelling process, including the choice of the L2 penalty by an inner "
                "cross-validation, and the optimism is how much better the replicate's model "
                "looks on its own sample than on the original episodes. Corrected = apparent "
                "minus optimism. The 95% CI is the percentile interval of the replicate models "
                "on the episodes they did not draw (out-of-bag; conservative). The apparent "
                "calibration intercept is 0 by construction. A subgroup with fewer than the "
                "set number of events (or non-events) per predictor is not modelled."
            ),
        )  # fmt: skip
    ]
    nb = frame[(frame["measure"] == "net_benefit") & (frame["subgroup"] == "all")]
    if len(nb):
        tables.append(
            Table(
                ["Threshold probability", "Net benefit, corrected (95% CI)", "Note"],
                [
                    [fmt.pct(r["threshold"], digits=0), _with_ci(r, 4), _note(r)]
                    for r in nb.to_dict("records")
                ],  # fmt: skip
                title="Table 3b. Model validation: optimism-corrected net benefit (all episodes)",
                caption="Net benefit of treating (referring) when the predicted risk is at least the threshold, corrected for optimism like Table 3a. The apparent value is not released (it could reveal small counts).",
            )
        )
    return tables


# ---- STARD 2015 ---------------------------------------------------------------------------

# Why each attrition step excludes (the side boxes of Figure 1); {names} are study parameters.
EXCLUSION_REASONS = {
    "back_pain_record_from_study_start": "no back-pain record from {study_start_date}",
    "incident_episode_after_washout": "back pain in the {washout_days} days before: not incident",
    "age_at_least_min_age": "under {min_age} at index",
    "sex_in_study_sexes": "sex not recorded or not studied",
    "prior_observation_at_least_lookback": "under {lookback_days} days of prior observation",
    "alive_at_index": "death recorded on or before index",
    "no_prevalent_bone_metastasis": "bone metastasis on or before index (prevalent)",
    "in_landmark_population": "diagnosed, died or left observation by day {landmark_days}",
    "reference_standard_known": "observation ended before day {horizon_days} without diagnosis or death",
}

# (item, short paraphrase of the STARD 2015 item, where this report answers it or why not).
# Paraphrases, not the checklist's wording (Bossuyt et al., BMJ 2015;351:h5527).
# {placeholders} are filled by stard_checklist from the released tables.
STARD_ITEMS = (
    ("1", "Title: a diagnostic accuracy study with an accuracy measure",
     "Report title (red flags for bone metastasis); accuracy measures in section 3."),
    ("2", "Structured abstract",
     "Not applicable: a study report, not a manuscript; the headline figures above summarise it."),
    ("3", "Background, intended use and clinical role of the index tests",
     "Protocol section 1 (question) and the seed article: red flags guiding imaging or "
     "referral of adults with new back pain in primary care."),
    ("4", "Objectives and hypotheses",
     "Protocol section 1: time to diagnosis and discrimination of the red flags; no "
     "formal hypothesis test (estimation study)."),
    ("5", "Prospective or retrospective data collection",
     "Retrospective: routinely collected, de-identified EHR data (protocol section 2)."),
    ("6", "Eligibility criteria",
     "Figure 1 (each step of the cohort definition, protocol section 3)."),
    ("7", "How potentially eligible participants were identified",
     "From EHR records of incident back pain (value set back_pain, protocol section 3)."),
    ("8", "Setting, location and dates of identification",
     "Records from {study_start_date} to the extract date (Provenance); setting: the "
     "source export (section 6)."),
    ("9", "Consecutive, random or convenience series",
     "All eligible episodes in the export (a complete series), Figure 1."),
    ("10a", "Index test in enough detail to replicate",
     "Protocol section 5 and the value sets listed under Provenance (versioned codes)."),
    ("10b", "Reference standard in enough detail to replicate",
     "Protocol section 4: a recorded bone-metastasis diagnosis within {horizon_days} days "
     "of index (value set bone_metastasis)."),
    ("11", "Rationale for the reference standard",
     "Diagnosis as recorded in routine care; no alternative reference standard exists in "
     "EHR data (verification by follow-up, protocol section 6.3)."),
    ("12a", "Positivity cut-offs of the index tests, pre-specified or not",
     "Pre-specified binary flags (protocol section 5); the score cut-offs of section 4 "
     "(ROC) are exploratory."),
    ("12b", "Positivity of the reference standard",
     "Binary by definition: diagnosis recorded or not within the horizon."),
    ("13a", "Index test assessors blinded to the reference standard",
     "By design: flags use only records before the diagnosis date and up to day "
     "{landmark_days} (landmark)."),
    ("13b", "Reference standard assessors blinded to the index tests",
     "Not possible in routine care (clinicians saw the red flags); stated as a limitation."),
    ("14", "Methods for estimating accuracy",
     "Section 3 (Wilson and log-method CIs), section 4 (DeLong AUROC, logistic model, "
     "model validation); docs/statistics.md."),
    ("15", "Handling of indeterminate results",
     "A flag that cannot be assessed for an episode is indeterminate and left out of that "
     "rule's 2x2 table; counts per rule under Figure 1."),
    ("16", "Handling of missing data",
     "No imputation: missing records mean a flag absent, except where a flag needs data "
     "an episode lacks (indeterminate, item 15); outcome unknown: excluded (Figure 1)."),
    ("17", "Analyses of variability, pre-specified or exploratory",
     "Pre-specified subgroups (women, history of breast cancer) in sections 3-4 and "
     "sensitivity analyses in section 5."),
    ("18", "Intended sample size and how it was determined", "{sample_size}"),
    ("19", "Flow of participants (diagram)",
     "Figure 1, with exclusion reasons and indeterminate results per rule."),
    ("20", "Baseline characteristics",
     "Baseline characteristics (Table 1), overall and by reference standard."),
    ("21a", "Severity of disease in those with the target condition",
     "Partly: skeletal-related events at presentation (Presentation and prognosis); no "
     "staging data in the source."),
    ("21b", "Alternative diagnoses in those without the target condition",
     "Not available: the EHR export does not record why back pain resolved; Table 1 gives "
     "prior osteoporosis, vertebral fracture and other cancers by reference standard."),
    ("22", "Interval and interventions between index test and reference standard",
     "{interval}"),
    ("23", "Cross-tabulation of index test by reference standard",
     "2x2 tables per rule in section 3."),
    ("24", "Accuracy estimates with their precision",
     "Section 3 (95% CIs), section 4 (AUROC with CIs; model validation)."),
    ("25", "Adverse events from the tests",
     "Not applicable: retrospective data; no test was performed for the study."),
    ("26", "Limitations (bias, uncertainty, generalisability)",
     "Caution beside the prognosis figure; suppressed counts; verification by routine care "
     "(items 11, 13b); the cohort of one export."),
    ("27", "Implications for practice",
     "Not applicable in a data report: interpretation belongs to the study manuscript."),
    ("28", "Registration",
     "Not stated by the pipeline: record the registry and number in the manuscript."),
    ("29", "Where the full protocol can be accessed",
     "PROTOCOL.md of the study; parameters of this run under Provenance."),
    ("30", "Funding and role of funders",
     "Not stated by the pipeline: record in the manuscript."),
)  # fmt: skip


def _row(frame: pd.DataFrame, **where: str) -> dict | None:
    if frame.empty:
        return None
    keep = frame.index == frame.index
    for column, value in where.items():
        if column not in frame.columns:
            return None
        keep &= (frame[column].astype(str) == value).to_numpy()
    rows = frame[keep]
    return None if rows.empty else rows.iloc[0].to_dict()


def _half_width(lower: Any, upper: Any) -> str | None:
    if is_missing(lower) or is_missing(upper):
        return None
    return f"\u00b1{50 * (upper - lower):.0f} percentage points"


def sample_size_statement(data: Released, fmt: Fmt) -> str:
    """STARD 18: no sample size was planned; the precision the cohort gives instead."""
    text = (
        "No sample size was calculated: a retrospective study of every eligible episode in "
        "the export. Precision achieved (post hoc): "
    )
    row = _row(data.table("flag_accuracy"), subgroup="all", rule="any_seed_flag")
    if row is None:
        return text + "no accuracy table was released."
    cases = None if is_missing(row["tp"]) or is_missing(row["fn"]) else row["tp"] + row["fn"]
    non_cases = None if is_missing(row["fp"]) or is_missing(row["tn"]) else row["fp"] + row["tn"]
    sens = _half_width(row.get("sensitivity_lower"), row.get("sensitivity_upper"))
    spec = _half_width(row.get("specificity_lower"), row.get("specificity_upper"))
    if sens is None and spec is None:
        return text + "the counts it rests on are suppressed, so no precision is stated."
    parts = []
    if sens:
        parts.append(f"the sensitivity of 'any seed flag' is known to {sens} (half its 95% CI)"
                     f" from {fmt.count(cases)} reference-positive episodes")  # fmt: skip
    if spec:
        parts.append(f"its specificity to {spec} from {fmt.count(non_cases)} negatives")
    return text + "; ".join(parts) + "."


def interval_statement(data: Released, fmt: Fmt, parameters: dict) -> str:
    """STARD 22: flags read at the landmark; positives' days from index to diagnosis."""
    text = (
        f"Flags are assessed up to day {parameters['landmark_days']}; negatives are followed "
        f"to day {parameters['horizon_days']} or death. "
    )
    row = _row(data.table("reference_interval"), subgroup="all")
    if row is None or is_missing(row["median_days"]):
        text += "The days from index to diagnosis of the positives are not released."
    else:
        text += (
            f"Days from index to diagnosis of the {fmt.count(row['n'])} reference-positive "
            f"episodes: median {fmt.days(row['median_days'], row['q1_days'], row['q3_days'])} "
            "(IQR)."
        )
    return text + " Care between them is usual care (not recorded as part of the study)."


def stard_checklist(data: Released, fmt: Fmt, parameters: dict) -> Table:
    """Every STARD 2015 item (1-30, with a and b) and where this report answers it."""
    values = {
        **parameters,
        "sample_size": sample_size_statement(data, fmt),
        "interval": interval_statement(data, fmt, parameters),
    }
    rows = [[item, topic, answer.format(**values)] for item, topic, answer in STARD_ITEMS]
    return Table(
        ["Item", "STARD 2015 topic (paraphrased)", "Where answered, or why not"],
        rows,
        title="STARD 2015 checklist",
        caption="Items paraphrased from STARD 2015 (Bossuyt et al., BMJ 2015;351:h5527; the checklist is at equator-network.org). Sections refer to this report.",
        text_columns=3,
    )


def indeterminate_table(data: Released, fmt: Fmt, min_cell: int) -> Table:
    """Per rule, landmark-population episodes where the rule could not be assessed (STARD 15,
    19): the population minus the rule's 2x2 total, both released counts. A small difference
    reads 'suppressed' like any small count."""
    accuracy = data.table("flag_accuracy")
    population = _row(data.table("model_performance"), subgroup="all")
    rows = []
    if population is not None and not accuracy.empty:
        for r in accuracy[accuracy["subgroup"] == "all"].to_dict("records"):
            cells = [r[c] for c in ("tp", "fp", "fn", "tn")]
            if is_missing(population["n"]) or any(is_missing(c) for c in cells):
                count = fmt.suppressed
            else:
                missing = int(population["n"] - sum(cells))
                count = (
                    fmt.count(missing) if missing == 0 or missing >= min_cell else fmt.suppressed
                )
            rows.append([rule_label(str(r["rule"])), count])
    return Table(
        ["Rule", "Indeterminate (not assessable)"],
        rows,
        title="Indeterminate index test results per rule (population of the accuracy analyses, all episodes)",
        caption="Episodes of the accuracy population where a rule could not be assessed (the flag needs data the episode lacks); they are left out of that rule's 2x2 table. No reference standard result is indeterminate: episodes whose outcome is unknown are excluded (last step of Figure 1).",
    )  # fmt: skip
