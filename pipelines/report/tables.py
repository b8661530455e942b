"""The report's result tables: the headline figures, the attrition flow (Figure 1), number
at risk, time to diagnosis (Table 1), diagnostic pathway (Table 2), the 2x2 tables and
accuracy of each rule, discrimination and calibration (Table 3), sensitivity analyses
(Table 4). Each reads the release tables and returns the page model (`Table`, `Box`).
"""

from __future__ import annotations

from typing import Any

from pipelines.report.text import (
    ANALYSIS_LABELS,
    CIF_DAYS,
    DASH,
    MEASURE_LABELS,
    MODALITY_LABELS,
    POPULATION_STEPS,
    STEP_LABELS,
    SUBGROUP_LABELS,
    Box,
    Fmt,
    Released,
    Table,
    brier,
    days_or_none,
    is_missing,
    rule_label,
    rule_order,
    stratum_label,
    subgroup_rows,
)

# --- summary and attrition -------------------------------------------------------------


def headline(data: Released, fmt: Fmt) -> list[tuple[str, str]]:
    ttd = data.table("time_to_diagnosis")
    overall = ttd[ttd["stratum_variable"] == "overall"] if len(ttd) else ttd
    items = []
    if len(overall):
        row = overall.iloc[0]
        items += [
            ("Back-pain episodes in the cohort", fmt.count(row["n_episodes"])),
            ("Diagnosed with bone metastasis in follow-up", fmt.count(row["n_diagnosed"])),
            ("Median days from back-pain onset to diagnosis (IQR)", days_or_none(row, fmt)),
        ]
    score = subgroup_rows(data.table("score_performance"), "all")
    if len(score):
        row = score.iloc[0]
        items += [
            ("Episodes in the landmark population (accuracy analyses)", fmt.count(row["n"])),
            ("AUROC of the red-flag count (95% CI)", _auroc_text(row, fmt)),
        ]
    return items


def _auroc_text(row: Any, fmt: Fmt) -> str:
    if not is_missing(row["auroc"]):
        return fmt.ratio(row["auroc"], row["auroc_lower"], row["auroc_upper"])
    if not is_missing(row["n_events"]) and row["n_events"] == 0:
        return "not estimable (no events)"
    return "not estimable" if row.get("note") else "suppressed"


def attrition(data: Released, fmt: Fmt) -> list[Box]:
    from pipelines.report.methods import EXCLUSION_REASONS

    df = data.table("attrition")
    if not len(df):
        return []
    params = default_parameters() | data.parameters
    params["sexes"] = ", ".join(params.get("sexes") or [])
    boxes = []
    for i, row in enumerate(df.sort_values("step_order").to_dict("records")):
        step = str(row["step"])
        template = STEP_LABELS.get(step)
        label = template.format(**params) if template else step.replace("_", " ").capitalize()
        boxes.append(
            Box(
                label=label,
                n=fmt.count(row["n_remaining"]),
                excluded=None if i == 0 else fmt.count(row["n_excluded"]),
                is_population=step in POPULATION_STEPS,
                reason=EXCLUSION_REASONS[step].format(**params)
                if step in EXCLUSION_REASONS
                else None,
            )
        )
    return boxes


def default_parameters() -> dict[str, Any]:
    from pipelines.settings import StudySettings

    return StudySettings().as_dict()


def at_risk_table(data: Released, fmt: Fmt) -> Table:
    """Number at risk under the curves, as in a Kaplan-Meier figure."""
    cif = data.table("cumulative_incidence")
    days = (0, 90, 180, 270, 365)
    rows = []
    if len(cif):
        keys = cif[["stratum_variable", "stratum"]].astype(str).drop_duplicates()
        for variable, stratum in keys.itertuples(index=False):
            s = cif[(cif["stratum_variable"] == variable) & (cif["stratum"].astype(str) == stratum)]
            s = s.sort_values("day")
            # after its last released day a curve has ended: no number at risk is known
            cells = [
                fmt.count(s[s["day"] <= d].iloc[-1]["at_risk"])
                if s["day"].min() <= d <= s["day"].max()
                else DASH  # before a curve's time zero (landmark) or after its end
                for d in days
            ]
            rows.append([stratum_label(variable, stratum), *cells])
    return Table(["Number at risk", *(f"Day {d}" for d in days)], rows)


def ttd_table(data: Released, fmt: Fmt) -> Table:
    ttd = data.table("time_to_diagnosis")
    columns = ["Stratum", "Episodes", "Diagnosed", "Died (competing)", "Censored",
               "Days to diagnosis, median (IQR)"]  # fmt: skip
    columns += [f"Cumulative incidence at {d} days, % (95% CI) [at risk]" for d in CIF_DAYS]
    rows = []
    for row in ttd.to_dict("records"):
        cells = [
            stratum_label(row["stratum_variable"], str(row["stratum"])),
            fmt.count(row["n_episodes"]),
            fmt.count(row["n_diagnosed"]),
            fmt.count(row["n_died"]),
            fmt.count(row["n_censored"]),
            days_or_none(row, fmt),
        ]
        for d in CIF_DAYS:
            est = fmt.pct(row.get(f"cif_{d}"), row.get(f"cif_{d}_lower"), row.get(f"cif_{d}_upper"))
            cells.append(f"{est} [{fmt.count(row.get(f'at_risk_{d}'))}]")
        rows.append(cells)
    return Table(
        columns,
        rows,
        title="Table 1. Time from back-pain onset to diagnosis of bone metastasis",
        caption=(
            "Follow-up runs from the first visit of the episode to the earliest of diagnosis, "
            "death, end of observation and the horizon. Median and IQR are among those "
            "diagnosed. Cumulative incidence treats death as a competing risk. Time zero: "
            "the index date, except for the strata by number of seed red flags (assessed up "
            "to the landmark), which contain only episodes alive, observed and undiagnosed at "
            "the landmark and start there (no estimate before it)."
        ),
    )


def pathway_table(data: Released, fmt: Fmt) -> Table:
    df = data.table("diagnostic_pathway")
    rows = []
    for row in df.to_dict("records"):
        measure, category = str(row["measure"]), str(row["category"])
        modality = MODALITY_LABELS.get(category, category)
        if measure == "days_onset_to_first_imaging":
            label = "Back-pain onset to first spine imaging" + (
                "" if category == "all" else f", first imaging {modality}"
            )
        elif measure == "days_imaging_to_diagnosis":
            label = "First spine imaging to diagnosis (imaged before diagnosis)"
        elif measure == "first_modality" and category == "all":
            label = "Diagnosed episodes: first spine imaging before diagnosis"
        elif measure == "first_modality" and category == "none":
            label = "\u2003No spine imaging before diagnosis"
        elif measure == "first_modality":
            label = f"\u2003{modality} first"
        else:
            label = f"{measure}: {category}"
        days = (
            ""
            if measure == "first_modality"
            else fmt.days(row["median_days"], row["q1_days"], row["q3_days"])
        )
        rows.append([label, fmt.count(row["n"]), days])
    return Table(
        ["Measure", "Episodes", "Days, median (IQR)"],
        rows,
        title="Table 2. Diagnostic pathway: spine imaging (X-ray, CT, MRI, bone scan)",
        caption="Spine imaging from procedures and imaging studies; episodes without imaging data are not ascertainable and left out. Days from onset count imaging within follow-up.",
    )  # fmt: skip


def two_by_two_tables(data: Released, fmt: Fmt) -> list[Table]:
    acc = subgroup_rows(data.table("flag_accuracy"), "all")
    if not len(acc):
        return []
    acc = acc.assign(order=acc["rule"].map(rule_order)).sort_values("order")
    tables = []
    for row in acc.to_dict("records"):
        cells = {k: row[k] for k in ("tp", "fp", "fn", "tn")}
        total = {k: _sum(cells[a], cells[b]) for k, (a, b) in
                 {"pos": ("tp", "fp"), "neg": ("fn", "tn"), "d": ("tp", "fn"), "nd": ("fp", "tn")}.items()}  # fmt: skip
        grand = _sum(total["pos"], total["neg"])
        rows = [
            [
                "Flag present",
                fmt.count(cells["tp"]),
                fmt.count(cells["fp"]),
                _total(total["pos"]),
            ],
            [
                "Flag absent",
                fmt.count(cells["fn"]),
                fmt.count(cells["tn"]),
                _total(total["neg"]),
            ],
            ["Total", _total(total["d"]), _total(total["nd"]), _total(grand)],
        ]
        caption = (
            f"Sensitivity {fmt.pct(row['sensitivity'], row['sensitivity_lower'], row['sensitivity_upper'])}; "
            f"specificity {fmt.pct(row['specificity'], row['specificity_lower'], row['specificity_upper'])}; "
            f"PPV {fmt.pct(row['ppv'], row['ppv_lower'], row['ppv_upper'])}; "
            f"NPV {fmt.pct(row['npv'], row['npv_lower'], row['npv_upper'])}."
        )
        tables.append(
            Table(
                ["", "Metastasis", "No metastasis", "Total"],
                rows,
                title=rule_label(row["rule"]),
                caption=caption,
            )
        )
    return tables


def _total(v: Any) -> str:
    """A total that includes a hidden cell is not shown (it is not necessarily small)."""
    return DASH if v is None else f"{v:,}"


def _sum(a: Any, b: Any) -> Any:
    """A total only from shown cells: a total must never reveal a hidden one."""
    return None if is_missing(a) or is_missing(b) else int(a) + int(b)


def accuracy_tables(data: Released, fmt: Fmt) -> list[Table]:
    acc = data.table("flag_accuracy")
    columns = ["Rule", "TP", "FP", "FN", "TN", "Sensitivity", "Specificity", "PPV", "NPV",
               "LR+", "LR\u2212", "Diagnostic odds ratio", "Note"]  # fmt: skip
    tables = []
    for subgroup in ("all", "female", "breast_cancer_history"):
        sub = subgroup_rows(acc, subgroup)
        if not len(sub):
            continue
        sub = sub.assign(order=sub["rule"].map(rule_order)).sort_values("order")
        rows = [
            [
                rule_label(r["rule"]),
                *(fmt.count(r[k]) for k in ("tp", "fp", "fn", "tn")),
                *(fmt.pct(r[m], r[f"{m}_lower"], r[f"{m}_upper"]) for m in ("sensitivity", "specificity", "ppv", "npv")),
                *(fmt.ratio(r[m], r[f"{m}_lower"], r[f"{m}_upper"]) for m in ("lr_positive", "lr_negative", "diagnostic_odds_ratio")),
                str(r.get("note") or ""),
            ]
            for r in sub.to_dict("records")
        ]  # fmt: skip
        tables.append(
            Table(
                columns,
                rows,
                title=f"Accuracy of each rule: {SUBGROUP_LABELS.get(subgroup, subgroup)}",
                caption="TP/FP/FN/TN: true/false positives/negatives. Proportions with Wilson 95% CIs; ratios with log-method 95% CIs. 'Partly ascertainable': the flag needs data some episodes lack; those episodes are left out of its table.",
            )
        )
    return tables


def performance_table(data: Released, fmt: Fmt) -> Table:
    rows = []
    for r in data.table("score_performance").to_dict("records"):
        subgroup = SUBGROUP_LABELS.get(r["subgroup"], r["subgroup"])
        rows.append(
            [f"Red-flag count ({subgroup})", fmt.count(r["n"]), fmt.count(r["n_events"]),
             fmt.ratio(r["auroc"], r["auroc_lower"], r["auroc_upper"]), DASH, DASH, DASH,
             str(r.get("note") or "")]
        )  # fmt: skip
    for r in data.table("model_performance").to_dict("records"):
        subgroup = SUBGROUP_LABELS.get(r["subgroup"], r["subgroup"])
        folds = "" if is_missing(r["cv_folds"]) else f", {r['cv_folds']:.0f}-fold CV"
        rows.append(
            [f"Logistic model on all flags{folds} ({subgroup})", fmt.count(r["n"]),
             fmt.count(r["n_events"]), fmt.ratio(r["auroc"], r["auroc_lower"], r["auroc_upper"]),
             fmt.ratio(r["calibration_intercept"]), fmt.ratio(r["calibration_slope"]),
             brier(r["brier_score"]), str(r.get("note") or "")]
        )  # fmt: skip
    return Table(
        ["Score", "Episodes", "Events", "AUROC (95% CI)", "Calibration intercept",
         "Calibration slope", "Brier score", "Note"],
        rows,
        title="Table 3. Discrimination and calibration",
        caption="Landmark population. AUROC with a DeLong 95% CI; the model's metrics come from cross-validated (out-of-fold) predictions. Calibration intercept 0 and slope 1 are ideal; a lower Brier score is better.",
    )  # fmt: skip


def sensitivity_table(data: Released, fmt: Fmt) -> Table:
    """Key results of each sensitivity analysis beside the primary analysis (all episodes)."""
    df = subgroup_rows(data.table("sensitivity_analyses"), "all")
    shown = [
        (rule, m)
        for rule in ("any_seed_flag", "two_or_more_seed_flags")
        for m in ("sensitivity", "specificity", "lr_positive", "lr_negative")
    ]
    shown += [("red_flag_count", "auroc"), ("model", "auroc")]  # fmt: skip
    analyses = (
        sorted(dict.fromkeys(df["analysis"]), key=lambda a: (a != "primary", a)) if len(df) else []
    )
    rows = []
    for rule, measure in shown:
        cells = []
        for a in analyses:
            hit = df[(df["analysis"] == a) & (df["rule"] == rule) & (df["measure"] == measure)]
            if not len(hit):
                cells.append(DASH)
                continue
            r = hit.iloc[0]
            show = fmt.pct if measure in ("sensitivity", "specificity") else fmt.ratio
            cells.append(show(r["estimate"], r["lower"], r["upper"]))
        label = {"red_flag_count": "Red-flag count", "model": "Logistic model"}.get(
            rule, rule_label(rule)
        )
        rows.append([f"{label}: {MEASURE_LABELS.get(measure, measure)}", *cells])
    if analyses:
        sizes = []
        for a in analyses:
            hit = df[(df["analysis"] == a) & (df["rule"] == "red_flag_count")]
            r = hit.iloc[0] if len(hit) else df[df["analysis"] == a].iloc[0]
            sizes.append(f"{fmt.count(r['n_episodes'])} ({fmt.count(r['n_events'])})")
        rows.insert(0, ["Episodes (events) in the landmark population", *sizes])
    return Table(
        ["Rule: measure (95% CI)", *(ANALYSIS_LABELS.get(a, a) for a in analyses)],
        rows,
        title="Table 4. Sensitivity analyses (all episodes)",
        caption="Each analysis rebuilds the cohort with one parameter changed (protocol section 6.4). Every rule, measure and subgroup is in the release table sensitivity_analyses.",
    )  # fmt: skip
