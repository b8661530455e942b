"""Attacks on the release, written as an outsider holding only schema `release` would write them.

Every attack reads released tables only (the `released` dict below is what the Parquet export
holds); the true, unsuppressed marts are used afterwards only to judge whether an attack
recovered a suppressed count, or found a small count between released numbers.

Attacks (PROTOCOL.md section 7, issue 10):
- step inversion of the cumulative-incidence curves (events per step = jump x at risk / (1 - F));
- differences of neighbouring ROC cut-offs, decision-curve thresholds, calibration bins, and
  each against the curve's ends (margins, totals);
- margins minus published cells of every 2x2 table;
- subgroup minus subgroup (all minus a nested subgroup; overall minus strata);
- linear solving of every additive relation in time_to_diagnosis (rows and strata);
- sensitivity-analysis rows against the primary rows (flag_accuracy, AUROC tables);
- hidden populations: rebuilt from 2x2 totals, from the ends of a subgroup's curves (ROC
  margins and sensitivity steps, decision-curve treat-all step, calibration bins), and from
  the other AUROC row (score or model) of the same analysis.

`test_step_inversion_recovers_the_count_the_old_release_leaked` runs the first attack on the
old behaviour (daily curve, exact numbers at risk), rebuilt here, and recovers a suppressed
count: the attack is strong enough to catch the leak that existed.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import analysis
from pipelines.export import DISCLOSURE_LOG, export_release
from pipelines.settings import StudySettings
from pipelines.stats import coarsen
from pipelines.stats.disclosure import disclose, is_small
from pipelines.stats.release_tables import release_specs

SETTINGS = StudySettings(sensitivity_analyses=("washout_180",))
MIN_CELL = SETTINGS.min_cell
CELLS = ["tp", "fp", "fn", "tn"]
NESTED = ("breast_cancer_history", "female")


def small(v) -> bool:
    return v is not None and not pd.isna(v) and is_small(float(v), MIN_CELL)


# ---- building a release from a generated export ----------------------------------------------


def build_study(export, root, settings: StudySettings = SETTINGS) -> tuple[dict, dict]:
    """(released tables, true mart tables) of one generated export, through the real pipeline."""
    from pipelines import warehouse as wh
    from pipelines.ingest import ingest_export
    from pipelines.models import build_models
    from pipelines.study import SENSITIVITY_VARIANTS

    path = root / "warehouse.duckdb"
    ingest_export(export, path, log=lambda message: None)
    con = wh.connect(path)
    try:
        build_models(con, settings)
        analysis.run_statistics(con, settings, "run")
        frames = [analysis.sensitivity_rows(con, settings, "primary", "mart")]
        for name in settings.sensitivity_analyses:
            variant = settings.replace(**SENSITIVITY_VARIANTS[name])
            build_models(con, variant, schema_suffix=f"__sens_{name}")
            frames.append(analysis.sensitivity_rows(con, variant, name, f"mart__sens_{name}"))
        analysis.write_sensitivity_table(con, frames, "run")
        analysis.build_release(con, settings, "run")
        truth = _schema(con, "mart")
    finally:
        con.close()
    return from_parquet(export_release(path, root / "parquet")), truth


def from_parquet(paths) -> dict[str, pd.DataFrame]:
    """What leaves the secure environment: the Parquet files (and the checker's CSV log)."""
    assert any(p.name == DISCLOSURE_LOG for p in paths)
    return {p.stem: pd.read_parquet(p) for p in paths if p.suffix == ".parquet"}


def _schema(con: duckdb.DuckDBPyConnection, schema: str) -> dict[str, pd.DataFrame]:
    names = [
        r[0]
        for r in con.execute(
            "select table_name from duckdb_tables() where schema_name = ?", [schema]
        ).fetchall()
    ]
    return {n: con.execute(f'select * from {schema}."{n}"').df() for n in names}


# ---- the attacks (release only) ---------------------------------------------------------------


def invert_curve(curve: pd.DataFrame, tolerance: float = 0.2) -> dict[tuple, list[float]]:
    """Per stratum, the diagnoses between released steps: jump x at risk / (1 - F before).

    Exact on a daily curve without competing deaths; a good guess with few deaths. Returns
    the estimated counts per step (an adversary rounds them)."""
    out = {}
    for key, s in curve.groupby(["stratum_variable", "stratum"], sort=False):
        s = s.sort_values("day")
        f = s["estimate"].astype(float).to_numpy()
        n = s["at_risk"].astype(float).to_numpy()
        before = np.concatenate(([0.0], f[:-1]))
        out[key] = list((f - before) * n / np.maximum(1 - before, 1e-12))
    return out


def recovered_from_curves(released: dict) -> dict[tuple, int]:
    """{(stratum_variable, stratum, column): value} the adversary claims from the curves."""
    claims = {}
    ttd = released["time_to_diagnosis"].set_index(["stratum_variable", "stratum"])
    for key, steps in invert_curve(released["cumulative_incidence"]).items():
        if any(abs(x - round(x)) > 0.2 for x in steps):
            continue  # not integers: the curve does not pin the counts down
        diagnosed = int(sum(round(x) for x in steps))
        claims[(*key, "n_diagnosed")] = diagnosed
        row = ttd.loc[key]
        if not pd.isna(row["n_censored"]) and not pd.isna(row["n_episodes"]):
            claims[(*key, "n_died")] = int(row["n_episodes"] - row["n_censored"] - diagnosed)
        if not pd.isna(row["n_died"]) and not pd.isna(row["n_episodes"]):
            claims[(*key, "n_censored")] = int(row["n_episodes"] - row["n_died"] - diagnosed)
    return claims


def small_differences(series: dict[tuple, np.ndarray]) -> list[tuple]:
    """Every pair of released points of a curve whose difference is a small count."""
    found = []
    for key, points in series.items():
        for a, b in itertools.combinations(range(len(points)), 2):
            diff = np.abs(points[a] - points[b])
            if any(small(d) for d in diff):
                found.append((key, a, b, tuple(diff)))
    return found


def roc_series(roc: pd.DataFrame) -> dict[tuple, np.ndarray]:
    """(tp, fp) at each released cut-off plus both ends, per subgroup and per complement."""
    series, by_sub = {}, {}
    for sub, rows in roc.groupby("subgroup"):
        rows = rows.dropna(subset=CELLS).sort_values("threshold")
        by_sub[sub] = rows.set_index("threshold")
        if rows.empty:
            continue
        first = rows.iloc[0]
        ends = [[first.tp + first.fn, first.fp + first.tn], [0, 0]]
        series[(sub,)] = np.array([*ends, *rows[["tp", "fp"]].to_numpy(float)], dtype=float)
    for child in NESTED:
        if "all" in by_sub and child in by_sub:
            common = by_sub["all"].index.intersection(by_sub[child].index)
            rest = by_sub["all"].loc[common, CELLS].astype(float) - by_sub[child].loc[
                common, CELLS
            ].astype(float)
            if len(rest):
                ends = [
                    rest[["tp", "fn"]].sum(axis=1).iloc[0],
                    rest[["fp", "tn"]].sum(axis=1).iloc[0],
                ]
                points = [ends, [0.0, 0.0], *rest[["tp", "fp"]].to_numpy(float)]
                series[("all minus", child)] = np.array(points, dtype=float)
    return series


def decision_series(dc: pd.DataFrame) -> dict[tuple, np.ndarray]:
    series = {}
    for sub, rows in dc.groupby("subgroup"):
        rows = rows.dropna(subset=["tp", "fp", "n", "n_events"])
        if rows.empty:
            continue
        n, events = float(rows["n"].iloc[0]), float(rows["n_events"].iloc[0])
        points = [[events, n - events], [0.0, 0.0], *rows[["tp", "fp"]].to_numpy(float)]
        series[(sub,)] = np.array(points, dtype=float)
    return series


def calibration_series(cal: pd.DataFrame, perf: pd.DataFrame) -> dict[tuple, np.ndarray]:
    """Cumulative events and non-events over released bins, from 0 to the model's totals."""
    series = {}
    totals = perf.set_index("subgroup")
    for sub, rows in cal.groupby("subgroup"):
        rows = rows.dropna(subset=["n", "n_events"]).sort_values("bin")
        events = rows["n_events"].astype(float).to_numpy()
        non_events = rows["n"].astype(float).to_numpy() - events
        points = [[0.0, 0.0], *np.column_stack([np.cumsum(events), np.cumsum(non_events)])]
        if sub in totals.index and not pd.isna(totals.loc[sub, "n_events"]):
            t = totals.loc[sub]
            points.append([float(t["n_events"]), float(t["n"] - t["n_events"])])
        series[(sub,)] = np.array(points, dtype=float)
    return series


def margin_recoveries(table: pd.DataFrame, keys: list[str], margins: dict) -> list[tuple]:
    """Cells recovered as a known margin minus the other, shown, cell of the same margin."""
    found = []
    for _, row in table.iterrows():
        key = tuple(row[k] for k in keys)
        if key not in margins:
            continue
        cases, non_cases = margins[key]
        for a, b, total in (("tp", "fn", cases), ("fn", "tp", cases), ("fp", "tn", non_cases),
                            ("tn", "fp", non_cases)):  # fmt: skip
            if pd.isna(row[a]) and not pd.isna(row[b]):
                found.append((key, a, total - row[b]))
    return found


def sensitivity_margins(sens: pd.DataFrame) -> dict[tuple, tuple]:
    """Cases and non-cases per (analysis, subgroup, rule), wherever a row shows them."""
    shown = sens.dropna(subset=["n_episodes", "n_events"])
    return {
        (r.analysis, r.subgroup, r.rule): (r.n_events, r.n_episodes - r.n_events)
        for r in shown.itertuples(index=False)
    }


def subgroup_differences(table: pd.DataFrame, keys: list[str], columns: list[str]) -> list:
    """`all` minus a nested subgroup, cell by cell, where both are shown: small ones."""
    found = []
    parent = table[table["subgroup"] == "all"].set_index(keys)
    for child in NESTED:
        part = table[table["subgroup"] == child].set_index(keys)
        common = parent.index.intersection(part.index)
        for c in columns:
            diff = parent.loc[common, c].astype(float) - part.loc[common, c].astype(float)
            found += [(child, k, c, d) for k, d in diff.items() if small(d)]
    return found


def solve_linear(relations: list[dict], known: dict) -> dict:
    """Every unknown a set of linear relations (sum coef * cell = 0) pins to one value."""
    unknown = sorted({c for r in relations for c in r if c not in known}, key=repr)
    index = {c: j for j, c in enumerate(unknown)}
    a = np.zeros((len(relations), len(unknown)))
    b = np.zeros(len(relations))
    for i, r in enumerate(relations):
        for cell, coef in r.items():
            if cell in index:
                a[i, index[cell]] += coef
            else:
                b[i] -= coef * known[cell]
    if not unknown:
        return {}
    solution, *_ = np.linalg.lstsq(a, b, rcond=None)
    null = np.linalg.svd(a)[2][np.linalg.matrix_rank(a) :] if a.size else np.eye(len(unknown))
    pinned = np.all(np.abs(null) < 1e-9, axis=0) if len(null) else np.ones(len(unknown), bool)
    return {c: round(float(solution[j])) for c, j in index.items() if pinned[j]}


def time_to_diagnosis_solutions(ttd: pd.DataFrame) -> dict:
    """Row sums and strata sums of time_to_diagnosis, solved for the hidden counts."""
    counts = ["n_episodes", "n_diagnosed", "n_died", "n_censored"]
    known = {
        (i, c): float(ttd.at[i, c]) for i in ttd.index for c in counts if not pd.isna(ttd.at[i, c])
    }
    relations = [
        {(i, "n_diagnosed"): 1, (i, "n_died"): 1, (i, "n_censored"): 1, (i, "n_episodes"): -1}
        for i in ttd.index
    ]
    overall = ttd.index[ttd["stratum_variable"] == "overall"]
    for variable in ("red_flag_count", "breast_cancer_history"):
        parts = ttd.index[ttd["stratum_variable"] == variable]
        # the strata need not cover `overall` (red_flag_count counts the landmark population):
        # the rest is one more unknown row, known to be empty when the episodes add up
        rest = ("rest", variable)
        relations.append({(rest, "n_diagnosed"): 1, (rest, "n_died"): 1, (rest, "n_censored"): 1,
                          (rest, "n_episodes"): -1})  # fmt: skip
        episodes = ttd.loc[[overall[0], *parts], "n_episodes"].astype(float)
        if episodes.notna().all() and episodes.iloc[0] == episodes.iloc[1:].sum():
            known.update({(rest, c): 0.0 for c in counts})
        for c in counts:
            relations.append({(overall[0], c): -1, (rest, c): 1, **{(p, c): 1 for p in parts}})
    solved = solve_linear(relations, known)
    return {(i, c): v for (i, c), v in solved.items() if not isinstance(i, tuple)}


def all_attacks(released: dict) -> dict[str, list]:
    """What the adversary gets from the release alone (nothing is hidden from this function
    but the marts)."""
    r = released
    margins = sensitivity_margins(r["sensitivity_analyses"])
    flags_margins = {(sub, rule): m for (a, sub, rule), m in margins.items() if a == "primary"}
    primary = r["sensitivity_analyses"][r["sensitivity_analyses"]["analysis"] == "primary"]
    return {
        "curve inversion": recovered_from_curves(r),
        "roc neighbours": small_differences(roc_series(r["roc_points"])),
        "decision-curve neighbours": small_differences(decision_series(r["decision_curve"])),
        "calibration bins": small_differences(
            calibration_series(r["calibration"], r["model_performance"])
        ),
        "flag_accuracy margins": margin_recoveries(
            r["flag_accuracy"], ["subgroup", "rule"], flags_margins
        ),
        "sensitivity margins": margin_recoveries(
            r["sensitivity_analyses"], ["analysis", "subgroup", "rule"], margins
        ),
        "flag_accuracy subgroups": subgroup_differences(r["flag_accuracy"], ["rule"], CELLS),
        "roc subgroups": subgroup_differences(r["roc_points"], ["threshold"], CELLS),
        "sensitivity subgroups": subgroup_differences(
            primary.drop_duplicates(["subgroup", "rule"]),
            ["rule"],
            ["n_episodes", "n_events", *CELLS],
        ),
        "time_to_diagnosis relations": time_to_diagnosis_solutions(r["time_to_diagnosis"]),
        "sensitivity vs primary": _primary_rows_fill(r),
        "sensitivity minus primary": analysis_differences(r["sensitivity_analyses"]),
        "indeterminate results": indeterminate_results(r),
        "hidden populations from 2x2 sums": population_differences(r),
        "curve ends of hidden populations": curve_population_claims(r),
        "score row against model row": auroc_row_claims(r["sensitivity_analyses"]),
        "model row minus score row": auroc_row_differences(r["sensitivity_analyses"]),
    }


# What the protocol tells an adversary about the sensitivity analyses (PROTOCOL 6.4): which
# of them count a superset of the primary episodes (washout 180 < 365 days; the same
# episodes with a 28-day persistence flag), and for which counts the difference is a number
# of episodes (landmark 0: the population, not the 2x2, whose flags are read at day 0).
NESTED_ANALYSES = {
    "washout_180": ("n_episodes", "n_events", "n_non_events", *CELLS),
    "persistence_28": ("n_episodes", "n_events", "n_non_events", *CELLS),
    "landmark_0": ("n_episodes", "n_events", "n_non_events"),
}


def analysis_differences(sens: pd.DataFrame) -> list[tuple]:
    """Sensitivity rows minus primary rows (and the same for `all` minus a subgroup, i.e. the
    episodes outside the subgroup an analysis adds), where both are shown: small ones."""
    rows = sens.drop_duplicates(["analysis", "subgroup", "rule"])
    rows = rows.assign(n_non_events=rows["n_episodes"] - rows["n_events"])
    table = rows.set_index(["analysis", "subgroup", "rule"])
    found = []
    for analysis_name, columns in NESTED_ANALYSES.items():
        for (a, sub, rule), row in table.iterrows():
            if a != analysis_name or ("primary", sub, rule) not in table.index:
                continue
            primary = table.loc[("primary", sub, rule)]
            for c in columns:
                d = float(row[c]) - float(primary[c]) if not pd.isna(row[c] - primary[c]) else None
                if d is not None and small(d):
                    found.append((a, sub, rule, c, d))
                if sub not in NESTED or d is None:
                    continue
                keys = [(x, "all", rule) for x in (a, "primary")]
                if all(k in table.index for k in keys):
                    outer = float(table.loc[keys[0], c]) - float(table.loc[keys[1], c])
                    if not pd.isna(outer) and small(outer - d):
                        found.append((a, f"all minus {sub}", rule, c, outer - d))
    return found


def indeterminate_results(r: dict) -> list[tuple]:
    """Per subgroup, the accuracy population (model_performance `n`) minus a rule's 2x2 total
    in flag_accuracy: the rule's indeterminate results (the report's flow diagram), small
    ones; and the same inside sensitivity_analyses (the model row's n_episodes minus a rule
    row's cells)."""
    found = []
    population = r["model_performance"].set_index("subgroup")["n"]
    for row in r["flag_accuracy"].itertuples(index=False):
        total = row.tp + row.fp + row.fn + row.tn
        n = population.get(row.subgroup)
        if n is not None and not pd.isna(n) and not pd.isna(total) and small(n - total):
            found.append(("flag_accuracy", row.subgroup, row.rule, n - total))
    sens = r["sensitivity_analyses"].drop_duplicates(["analysis", "subgroup", "rule"])
    model = sens[sens["rule"] == "model"].set_index(["analysis", "subgroup"])["n_episodes"]
    for row in sens.dropna(subset=["tp", "fp", "fn", "tn"]).itertuples(index=False):
        n = model.get((row.analysis, row.subgroup))
        d = None if n is None or pd.isna(n) else n - (row.tp + row.fp + row.fn + row.tn)
        if d is not None and small(d):
            found.append((row.analysis, row.subgroup, row.rule, d))
    return found


# ---- hidden populations rebuilt from shown 2x2 sums (issue: hidden subgroup n) -------------


POPULATION = ("n", "n_events")


def rebuilt_populations(r: dict) -> dict[tuple, dict[str, float]]:
    """{(analysis, subgroup): {n, n_events}}: the accuracy population per analysis and
    subgroup, as released, and where hidden, rebuilt from the released sums that count it:
    a rule's 2x2 total tp+fp+fn+tn is the population minus the rule's indeterminate results
    and its case margin tp+fn the events minus the indeterminate cases, so the largest total
    (cases) over the shown 2x2 tables of that population is its n (n_events) whenever one
    rule has no indeterminate result (every flag of generated data is assessable). Sources:
    the primary population (model_performance, flag_accuracy, roc_points) and each
    analysis's model row and rule rows in sensitivity_analyses."""
    sums: dict[tuple, dict[str, list]] = {}

    def add(key: tuple, rows: pd.DataFrame) -> None:
        entry = sums.setdefault(key, {"n": [], "n_events": []})
        # a sensitivity rule row repeats its total and case margin as n_episodes, n_events
        for column, repeated in (("n", "n_episodes"), ("n_events", "n_events")):
            if repeated in rows.columns:
                entry[column] += rows[repeated].dropna().astype(float).tolist()
        cells = rows.dropna(subset=CELLS)[CELLS].astype(float)
        entry["n"] += cells.sum(axis=1).tolist()
        entry["n_events"] += (cells["tp"] + cells["fn"]).tolist()

    released: dict[tuple, dict[str, float]] = {}
    for row in r["model_performance"].itertuples(index=False):
        released[("primary", row.subgroup)] = {"n": row.n, "n_events": row.n_events}
    for table in ("flag_accuracy", "roc_points"):
        for sub, rows in r[table].groupby("subgroup"):
            add(("primary", sub), rows)
    sens = r["sensitivity_analyses"].drop_duplicates(["analysis", "subgroup", "rule"])
    for row in sens[sens["rule"] == "model"].itertuples(index=False):
        shown = released.setdefault((row.analysis, row.subgroup), {})
        for column, value in (("n", row.n_episodes), ("n_events", row.n_events)):
            if pd.isna(shown.get(column)):
                shown[column] = value
    for key, rows in sens[sens["rule"] != "model"].groupby(["analysis", "subgroup"]):
        add(tuple(key), rows)
    out = {}
    for key, values in released.items():
        out[key] = {}
        for column in POPULATION:
            value = values.get(column)
            candidates = sums.get(key, {}).get(column, [])
            if (value is None or pd.isna(value)) and candidates:
                value = max(candidates)
            out[key][column] = None if value is None or pd.isna(value) else float(value)
    return out


def population_differences(r: dict) -> list[tuple]:
    """Small counts between populations, with hidden ones rebuilt (`rebuilt_populations`):
    `all` minus a nested subgroup (n, events, non-events) per analysis, and a nested
    analysis minus the primary one (NESTED_ANALYSES) per subgroup, and for a nested
    subgroup the same of `all` minus it. Only differences involving a rebuilt value are
    reported (the others are the older attacks')."""
    populations = rebuilt_populations(r)
    released = _released_populations(r)

    def values(key: tuple) -> dict[str, float]:
        """The counts known of a population (n, events, non-events where both)."""
        p = populations.get(key, {})
        known = {"n_episodes": p.get("n"), "n_events": p.get("n_events")}
        if None not in known.values():
            known["n_non_events"] = known["n_episodes"] - known["n_events"]
        return {c: v for c, v in known.items() if v is not None}

    def rebuilt(*keys: tuple) -> bool:
        return any(
            released.get(k, {}).get(c) is None and populations.get(k, {}).get(c) is not None
            for k in keys
            for c in POPULATION
        )

    found = []
    analyses = sorted({a for a, _ in populations})
    for a in analyses:
        outer = values((a, "all"))
        for sub in NESTED:
            inner = values((a, sub))
            if rebuilt((a, "all"), (a, sub)):
                found += [(a, f"all minus {sub}", c, outer[c] - inner[c])
                          for c in outer.keys() & inner.keys()
                          if small(outer[c] - inner[c])]  # fmt: skip
    for a in analyses:
        counts = [c for c in NESTED_ANALYSES.get(a, ()) if c in ("n_episodes", "n_events",
                                                                  "n_non_events")]  # fmt: skip
        for sub in ("all", *NESTED):
            mine, base = values((a, sub)), values(("primary", sub))
            if not rebuilt((a, sub), ("primary", sub)):
                continue
            found += [(a, sub, c, mine[c] - base[c])
                      for c in counts if c in mine and c in base and small(mine[c] - base[c])]  # fmt: skip
    return found


# ---- curve ends and repeated AUROC rows of hidden populations ---------------------------------

POPULATION_TABLES = ("score_performance", "model_performance")


def common_denominator(rates, largest: int = 20_000) -> int | None:
    """The smallest d with every rate x d an integer: a curve's steps of 1 / d (None when the
    rates are all 0 or 1, or none fits)."""
    rates = [float(x) for x in rates if not pd.isna(x) and 0 < float(x) < 1]
    if not rates:
        return None
    for d in range(2, largest):
        if all(abs(x * d - round(x * d)) < 1e-6 for x in rates):
            return d
    return None


def curve_end_values(r: dict) -> dict[str, dict[str, list[float]]]:
    """Per subgroup, the population counts (n, n_events) its released curves carry at their
    ends: every ROC cut-off's margins (cases tp + fn, everyone tp + fp + fn + tn) and, where
    its cells are hidden but sensitivities shown, their steps of 1 / cases (and false-positive
    rates of 1 / non-cases); the decision curve's n and n_events, and its treat-all step
    (tp = events, fp = non-events); the calibration bins added up."""
    values: dict[str, dict[str, list[float]]] = {}

    def add(sub, column: str, value) -> None:
        if value is not None and not pd.isna(value):
            values.setdefault(str(sub), {}).setdefault(column, []).append(float(value))

    for sub, rows in r["roc_points"].groupby("subgroup"):
        cells = rows.dropna(subset=CELLS)[CELLS].astype(float)
        for row in cells.itertuples(index=False):
            add(sub, "n_events", row.tp + row.fn)
            add(sub, "n", row.tp + row.fp + row.fn + row.tn)
        rates = rows[rows["tp"].isna()]
        cases = common_denominator(rates["sensitivity"])
        non_cases = common_denominator(rates["false_positive_rate"])
        add(sub, "n_events", cases)
        add(sub, "n", None if cases is None or non_cases is None else cases + non_cases)
    for sub, rows in r["decision_curve"].groupby("subgroup"):
        for column in ("n", "n_events"):
            for value in rows[column].dropna():
                add(sub, column, value)
        if "step_threshold" in rows.columns:
            treat_all = rows[rows["step_threshold"] == 0].dropna(subset=["tp", "fp"])
            for row in treat_all.itertuples(index=False):
                add(sub, "n_events", row.tp)
                add(sub, "n", row.tp + row.fp)
    for sub, rows in r["calibration"].groupby("subgroup"):
        if len(rows) and rows[["n", "n_events"]].notna().all(axis=None):
            add(sub, "n", rows["n"].astype(float).sum())
            add(sub, "n_events", rows["n_events"].astype(float).sum())
    return values


def curve_population_claims(r: dict) -> dict[tuple, float]:
    """{(table, subgroup, column): value}: a population count that score_performance or
    model_performance hides, as a released curve of the same subgroup gives it back (the
    largest value, as the largest 2x2 total in `rebuilt_populations`)."""
    ends = curve_end_values(r)
    claims = {}
    for table in POPULATION_TABLES:
        for row in r[table].itertuples(index=False):
            for column in POPULATION:
                candidates = ends.get(str(row.subgroup), {}).get(column)
                if pd.isna(getattr(row, column)) and candidates:
                    claims[(table, row.subgroup, column)] = max(candidates)
    return claims


AUROC_ROWS = ("red_flag_count", "model")
OTHER_AUROC_ROW = {"red_flag_count": "model", "model": "red_flag_count"}


def auroc_row_claims(sens: pd.DataFrame) -> dict[tuple, float]:
    """{(analysis, subgroup, rule, column): value}: the two AUROC rows of an analysis and
    subgroup (the score and the model) count the same population (every episode has a score
    on generated data): where one hides n_episodes or n_events and the other shows it, the
    shown value."""
    rows = sens[sens["rule"].isin(AUROC_ROWS)].drop_duplicates(["analysis", "subgroup", "rule"])
    table = rows.set_index(["analysis", "subgroup", "rule"])
    claims = {}
    for (a, sub, rule), row in table.iterrows():
        other = (a, sub, OTHER_AUROC_ROW[rule])
        if other not in table.index:
            continue
        for column in ("n_episodes", "n_events"):
            if pd.isna(row[column]) and not pd.isna(table.loc[other, column]):
                claims[(a, sub, rule, column)] = float(table.loc[other, column])
    return claims


def auroc_row_differences(sens: pd.DataFrame) -> list[tuple]:
    """The model row minus the score row where both are shown: the episodes (events) without
    a score; small ones."""
    rows = sens[sens["rule"].isin(AUROC_ROWS)].drop_duplicates(["analysis", "subgroup", "rule"])
    table = rows.set_index(["analysis", "subgroup", "rule"])
    found = []
    for (a, sub, rule), row in table.iterrows():
        if rule != "model" or (a, sub, "red_flag_count") not in table.index:
            continue
        for column in ("n_episodes", "n_events"):
            d = row[column] - table.loc[(a, sub, "red_flag_count"), column]
            if not pd.isna(d) and small(d):
                found.append((a, sub, column, float(d)))
    return found


def _released_populations(r: dict) -> dict[tuple, dict[str, float | None]]:
    """The population counts as released (None where hidden)."""
    out: dict[tuple, dict[str, float | None]] = {}
    for row in r["model_performance"].itertuples(index=False):
        out[("primary", row.subgroup)] = {
            "n": None if pd.isna(row.n) else float(row.n),
            "n_events": None if pd.isna(row.n_events) else float(row.n_events),
        }
    sens = r["sensitivity_analyses"].drop_duplicates(["analysis", "subgroup", "rule"])
    for row in sens[sens["rule"] == "model"].itertuples(index=False):
        mine = out.setdefault((row.analysis, row.subgroup), {"n": None, "n_events": None})
        for column, value in (("n", row.n_episodes), ("n_events", row.n_events)):
            if mine[column] is None and not pd.isna(value):
                mine[column] = float(value)
    return out


def _primary_rows_fill(r: dict) -> list:
    """Cells flag_accuracy hides that the primary rows of sensitivity_analyses show."""
    flags = r["flag_accuracy"].set_index(["subgroup", "rule"])
    sens = r["sensitivity_analyses"]
    found = []
    for row in sens[sens["analysis"] == "primary"].dropna(subset=["tp"]).itertuples(index=False):
        key = (row.subgroup, row.rule)
        if key in flags.index:
            found += [(key, c) for c in CELLS if pd.isna(flags.loc[key, c])]
    for table, rule in (("score_performance", "red_flag_count"), ("model_performance", "model")):
        shown = sens[(sens["analysis"] == "primary") & (sens["rule"] == rule)].dropna(
            subset=["n_events"]
        )
        hidden = r[table][r[table]["n_events"].isna()]["subgroup"]
        found += [(table, s) for s in set(shown["subgroup"]) & set(hidden)]
    return found


# ---- judging the attacks against the truth ----------------------------------------------------

# attacks that claim values (judged against the truth: a leak when exact)
CLAIMS = (
    "curve inversion",
    "time_to_diagnosis relations",
    "curve ends of hidden populations",
    "score row against model row",
)


def judged_population_claims(attacks: dict, truth: dict) -> list[tuple]:
    """The claims of the curve-end and AUROC-row attacks that are the hidden count exactly."""
    found = []
    for (table, sub, column), value in attacks["curve ends of hidden populations"].items():
        true = truth[table].set_index("subgroup")
        if float(true.at[sub, column]) == value:
            found.append(("curve ends of hidden populations", table, sub, column, value))
    sens = truth["sensitivity_analyses"].drop_duplicates(["analysis", "subgroup", "rule"])
    sens = sens.set_index(["analysis", "subgroup", "rule"])
    for (*key, column), value in attacks["score row against model row"].items():
        if float(sens.loc[tuple(key), column]) == value:
            found.append(("score row against model row", *key, column, value))
    return found


def leaks(released: dict, truth: dict) -> list:
    """Every suppressed count an attack recovered exactly, and every small count found."""
    found = []
    attacks = all_attacks(released)
    ttd, true_ttd = released["time_to_diagnosis"], truth["time_to_diagnosis"]
    key = ["stratum_variable", "stratum"]
    true_by_key = true_ttd.set_index(key)
    for (variable, stratum, column), value in attacks["curve inversion"].items():
        row = ttd[(ttd["stratum_variable"] == variable) & (ttd["stratum"] == stratum)].iloc[0]
        if pd.isna(row[column]) and true_by_key.loc[(variable, stratum), column] == value:
            found.append(("curve inversion", variable, stratum, column, value))
    for (i, column), value in attacks["time_to_diagnosis relations"].items():
        if pd.isna(ttd.at[i, column]):
            true = true_by_key.loc[tuple(ttd.loc[i, key]), column]
            if true == value:
                found.append(("time_to_diagnosis relations", i, column, value))
    found += judged_population_claims(attacks, truth)
    for name, hits in attacks.items():
        if name not in CLAIMS and hits:
            found.append((name, hits))
    # a curve of a stratum whose counts are hidden, or a small count of diagnoses between two
    # released days (judged on the true daily counts)
    curve = released["cumulative_incidence"]
    daily = truth["cumulative_incidence"]
    for (variable, stratum), steps in curve.groupby(key):
        row = ttd[(ttd["stratum_variable"] == variable) & (ttd["stratum"] == stratum)].iloc[0]
        if pd.isna(row["n_diagnosed"]) or pd.isna(row["n_episodes"]):
            found.append(("curve of a hidden stratum", variable, stratum))
        true = daily[(daily["stratum_variable"] == variable) & (daily["stratum"] == stratum)]
        cumulative = true.set_index("day")["n_outcome"].cumsum()
        points = [0, *cumulative.loc[sorted(steps["day"])], cumulative.iloc[-1]]
        found += [("diagnoses between days", variable, stratum, a, b)
                  for a, b in itertools.combinations(points, 2) if small(b - a)]  # fmt: skip
    return found


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([300, 1200, 2500]), st.integers(1, 10_000))
def test_no_attack_recovers_a_suppressed_count(tmp_path_factory, patients, seed):
    from pipelines.generator import generate

    root = tmp_path_factory.mktemp(f"attack-{patients}-{seed}")
    generate(root / "export", patients=patients, seed=seed)
    released, truth = build_study(root / "export", root)
    assert released["time_to_diagnosis"]["n_episodes"].notna().any()  # something was released
    assert leaks(released, truth) == []


# ---- a few men among the cases: the subgroup is hidden, not the `all` row --------------------


def large(v) -> bool:
    return v == 0 or v >= MIN_CELL


def test_few_men_among_the_cases_hide_the_female_rows_not_the_all_rows(tmp_path):
    """`all` minus `female` is 1..min_cell-1 cases (the demo: 1): the men's cells must stay
    non-recoverable, by hiding the female subgroup's 2x2 (the cheaper side), while the `all`
    2x2 of every rule with large cells is shown (issue 10: headline results survive)."""
    from pipelines.generator import PlantedParameters, generate

    planted = PlantedParameters(case_fraction=0.2, female_fraction_cases=0.9)
    generate(tmp_path / "export", patients=1200, seed=7, planted=planted)
    released, truth = build_study(tmp_path / "export", tmp_path)
    true = truth["flag_accuracy"].set_index(["subgroup", "rule"])
    cases = true["tp"] + true["fn"]
    men = cases.xs("all", level="subgroup") - cases.xs("female", level="subgroup")
    assert men.map(small).all()  # the precondition: a few male cases, for every rule
    flags = released["flag_accuracy"].set_index(["subgroup", "rule"])
    # rules flag_accuracy shares with roc_points follow the ROC cut-offs: left out here
    rules = [r for r in true.loc["all"].index if r not in analysis.SHARED_RULE_THRESHOLDS]
    headline = [r for r in rules if all(large(true.loc[("all", r), c]) for c in CELLS)]
    assert len(headline) >= 3
    for rule in headline:
        assert flags.loc[("all", rule), CELLS].notna().all(), rule
        assert (flags.loc[("all", rule), [f"{c}_status" for c in CELLS]] == "shown").all()
    assert leaks(released, truth) == []


# ---- indeterminate results: population minus a rule's 2x2 ------------------------------------


def planted_episodes(root: Path, **planted: float) -> pd.DataFrame:
    """The episodes (mart, as analysis reads them) of a generated export with many cases:
    1,200 patients, seed 7, a fifth of them cases, other planted parameters as given."""
    from pipelines import warehouse as wh
    from pipelines.generator import PlantedParameters, generate
    from pipelines.ingest import ingest_export
    from pipelines.models import build_models

    parameters = PlantedParameters(case_fraction=0.2, **planted)
    generate(root / "export", patients=1200, seed=7, planted=parameters)
    ingest_export(root / "export", root / "w.duckdb", log=lambda message: None)
    con = wh.connect(root / "w.duckdb")
    try:
        build_models(con, SETTINGS)
        return analysis.load_episodes(con)
    finally:
        con.close()


def test_a_small_number_of_indeterminate_results_cannot_be_worked_out(tmp_path):
    """3 episodes of the landmark population lack the ALP flag (not assessable): the attack
    `indeterminate_results` must not get the 3 from flag_accuracy and model_performance (or
    inside sensitivity_analyses); before `analysis.indeterminate_cells` it did."""
    episodes = planted_episodes(tmp_path, female_fraction_cases=0.9)  # large cells
    landmark = analysis.landmark_population(episodes).index[:3]
    episodes.loc[landmark, "flag_elevated_alp"] = pd.NA
    frames = analysis.analysis_tables(episodes, SETTINGS)
    performance = frames["model_performance"]
    long = pd.concat(
        [
            analysis._accuracy_long(frames["flag_accuracy"]),
            analysis._auroc_long(frames["score_performance"], performance),
        ],
        ignore_index=True,
    )
    frames["sensitivity_analyses"] = long.assign(analysis="primary").reindex(
        columns=analysis.SENSITIVITY_COLUMNS
    )
    released, _ = analysis.release_tables(frames, SETTINGS)
    true = frames["flag_accuracy"].set_index(["subgroup", "rule"])
    alp = true.loc[("all", "flag_elevated_alp"), ["tp", "fp", "fn", "tn"]].sum()
    assert performance.set_index("subgroup").at["all", "n"] - alp == 3  # the planted gap
    assert indeterminate_results(released) == []
    flags = released["flag_accuracy"].set_index(["subgroup", "rule"])
    assert flags.loc[("all", "flag_elevated_alp"), CELLS].isna().all()  # the cheaper side
    assert released["model_performance"]["n"].notna().any()
    assert flags.loc[("all", "flag_age_50_plus"), CELLS].notna().all()  # others stay


# ---- hidden populations: a 2x2 total with no indeterminate result is the population n --------

LANDMARK = StudySettings(sensitivity_analyses=("landmark_0",))


@pytest.fixture(scope="module")
def landmark_release(tmp_path_factory) -> tuple[dict, dict]:
    """A generated export (1,200 patients, seed 7) whose landmark_0 analysis has 1 male case
    (the demo's case too): complementary suppression hides the landmark_0 populations (n or
    events of `all`, `female`), while every rule's 2x2 of them is shown, with no
    indeterminate result (every flag of generated data is assessable)."""
    from pipelines.generator import generate

    root = tmp_path_factory.mktemp("hidden-population")
    generate(root / "export", patients=1200, seed=7)
    return build_study(root / "export", root, LANDMARK)


def _true_populations(truth: dict) -> dict[tuple, dict[str, float]]:
    sens = truth["sensitivity_analyses"].drop_duplicates(["analysis", "subgroup", "rule"])
    model = sens[sens["rule"] == "model"]
    return {
        (r.analysis, r.subgroup): {"n": float(r.n_episodes), "n_events": float(r.n_events)}
        for r in model.itertuples(index=False)
    }


def test_a_hidden_population_is_not_rebuilt_from_a_shown_2x2_total(landmark_release):
    """Attack (a): where a population's n or events is hidden, the largest released 2x2
    total (case margin) of that population must not be its exact value. Before the
    hidden-population rule of `analysis.indeterminate_cells` it was, on this export (and on
    the demo: landmark_0 `breast_cancer_history` n 68 from any rule's 2x2)."""
    released, truth = landmark_release
    hidden = {(k, c) for k, v in _released_populations(released).items()
              for c, value in v.items() if value is None}  # fmt: skip
    assert hidden  # the precondition: some population count is hidden
    true, rebuilt = _true_populations(truth), rebuilt_populations(released)
    exact = [(k, c) for k, c in sorted(hidden) if rebuilt[k][c] == true[k][c]]
    assert exact == []


def test_a_subgroup_case_margin_does_not_give_the_complement_case_count(landmark_release):
    """Attack (b): a subgroup's case count is public as a 2x2 margin (tp + fn) wherever its
    2x2 is shown; with `all`'s, it gives the men's cases: 1 here in landmark_0 (the demo's
    case too). Before the rule, `population_differences` found it."""
    released, truth = landmark_release
    true = _true_populations(truth)
    men = true[("landmark_0", "all")]["n_events"] - true[("landmark_0", "female")]["n_events"]
    assert small(men)  # the precondition: a few male cases in landmark_0
    assert population_differences(released) == []
    assert leaks(released, truth) == []


# ---- curves and AUROC rows of hidden populations ---------------------------------------------


@pytest.fixture(scope="module")
def planted_tables(tmp_path_factory) -> dict[str, pd.DataFrame]:
    """The analysis tables (as in mart, before disclosure) of a generated export with many
    cases (1,200 patients, seed 7, a fifth of them cases): the ROC curves of `all` and
    `female` are released on their own."""
    episodes = planted_episodes(tmp_path_factory.mktemp("planted"))
    return analysis.analysis_tables(episodes, SETTINGS)


def test_a_roc_curve_does_not_give_back_a_hidden_population(planted_tables):
    """An earlier release showed `female` with 3 events fewer: the overlap rule (section 7.1)
    hides female n_events now, in every table sharing it (and `all`'s, its complement). A
    released ROC curve's margins (tp + fn at any cut-off) are the subgroup's events:
    `curve_population_claims` got both back exactly before `roc_of_shown_populations`."""
    frames = planted_tables
    true = frames["score_performance"].set_index("subgroup")
    alone, _ = analysis.release_tables(frames, SETTINGS)
    assert {"all", "female"} <= set(alone["roc_points"]["subgroup"])  # curves released
    assert curve_population_claims(alone) == {}
    earlier = float(true.at["female", "n_events"]) - 3
    previous = {"model_performance|subgroup=female|n_events": [earlier]}
    released, log = analysis.release_tables(frames, SETTINGS, previous)
    performance = released["model_performance"].set_index("subgroup")
    assert pd.isna(performance.at["female", "n_events"])  # the precondition: hidden
    claims = curve_population_claims(released)
    exact = [k for k, v in claims.items() if v == frames[k[0]].set_index("subgroup").at[k[1:]]]
    assert exact == []
    # the curves of subgroups whose counts are hidden go; the others stay as they were
    hidden = set(performance.index[performance[["n", "n_events"]].isna().any(axis=1)])
    assert "female" in hidden
    shown = released["roc_points"]
    assert not set(shown["subgroup"]) & hidden
    kept = alone["roc_points"][~alone["roc_points"]["subgroup"].isin(hidden)]
    assert len(shown) == len(kept)
    notes = log[(log["table_name"] == "roc_points") & (log["detail"] == "curve not released")]
    assert "subgroup=female" in set(notes["row_key"])  # the output checker sees why


def score_and_model_rows() -> pd.DataFrame:
    """The AUROC rows of sensitivity_analyses (primary, washout_180; `all`, `female`): the
    model's population has 3 male cases, which have no score, so the score's rows count 3
    events fewer in `all` and as many in `female` (n, events per analysis and subgroup)."""
    counts = {
        ("primary", "all"): {"model": (700, 50), "red_flag_count": (697, 47)},
        ("primary", "female"): {"model": (400, 47), "red_flag_count": (400, 47)},
        ("washout_180", "all"): {"model": (720, 50), "red_flag_count": (717, 47)},
        ("washout_180", "female"): {"model": (420, 47), "red_flag_count": (420, 47)},
    }
    rows = [
        {"analysis": a, "subgroup": sub, "rule": rule, "measure": "auroc", "estimate": 0.7,
         "lower": 0.6, "upper": 0.8, "n_episodes": n, "n_events": events,
         "tp": np.nan, "fp": np.nan, "fn": np.nan, "tn": np.nan}
        for (a, sub), by_rule in counts.items() for rule, (n, events) in by_rule.items()
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_the_score_row_does_not_give_back_the_model_row():
    """`all` minus `female` in the model rows is 3 male cases: the engine hides the female
    model row's n_events. The score row of the same analysis shows the same count (the men
    without a score are not in it, so its `all` minus `female` is 0): before the declared
    link (`release_tables._score_within_model`) washout_180's did (`auroc_row_claims`: 47
    exactly; the primary rows are linked across tables), and model minus score in `all`
    gave the 3 cases (`auroc_row_differences`) in both analyses."""
    frame = score_and_model_rows()
    released, _ = analysis.release_tables({"sensitivity_analyses": frame}, SETTINGS)
    counts = ["n_episodes", "n_events", *CELLS]  # as the Parquet export holds them
    sens = released["sensitivity_analyses"].astype({c: float for c in counts})
    hidden = sens[sens["n_events"].isna()]
    assert ("washout_180", "female", "model") in set(
        hidden[["analysis", "subgroup", "rule"]].itertuples(index=False, name=None)
    )  # the precondition: the model row's events are hidden
    true = frame.set_index(["analysis", "subgroup", "rule"])
    claims = auroc_row_claims(sens)
    assert [k for k, v in claims.items() if true.at[tuple(k[:3]), k[3]] == v] == []
    assert auroc_row_differences(sens) == []
    assert analysis_differences(sens) == []
    # model minus score in `all` (the 3 cases without a score) is a small count itself: one
    # side of it goes, in the primary analysis too; rows it does not touch stay shown
    assert sens["n_episodes"].notna().any()


# ---- the attack catches the leak of the old release ------------------------------------------


def episodes_with_a_small_stratum() -> pd.DataFrame:
    """300 episodes; the 40 with a breast cancer history have 3 diagnoses and no deaths."""
    rng = np.random.default_rng(5)
    n = 300
    history = np.arange(n) < 40
    end = rng.integers(20, 366, n).astype(float)
    reason = np.where(rng.random(n) < 0.15, "bone_metastasis", "end_of_follow_up")
    reason[history] = "end_of_follow_up"
    reason[:3] = "bone_metastasis"  # 3 diagnoses in the history stratum
    end[:3] = [40, 95, 200]
    return pd.DataFrame({
        "has_breast_cancer_history": pd.array(history, dtype="boolean"),
        "red_flag_count": pd.array(rng.integers(0, 4, n), dtype="Float64"),
        "end_reason": reason,
        "days_to_follow_up_end": pd.array(end, dtype="Float64"),
        "days_to_outcome": pd.array(np.where(reason == "bone_metastasis", end, np.nan), dtype="Float64"),
        # alive, observed and undiagnosed at the landmark (the red_flag_count strata start there)
        "is_in_landmark_population": pd.array(end > SETTINGS.landmark_days, dtype="boolean"),
    })  # fmt: skip


def old_release(episodes: pd.DataFrame) -> dict:
    """The release as it was: daily curves with exact numbers at risk, cut below min_cell,
    and time_to_diagnosis with the small counts suppressed."""
    curve = analysis.cumulative_incidence_table(episodes, SETTINGS)
    curve = curve[curve["at_risk"] >= MIN_CELL].drop(columns=["n_outcome"])
    ttd = analysis.time_to_diagnosis_table(episodes, SETTINGS)
    for c in ["n_diagnosed", "n_died", "n_censored"]:
        ttd[c] = ttd[c].where(~ttd[c].map(small))
    return {"cumulative_incidence": curve, "time_to_diagnosis": ttd}


def test_step_inversion_recovers_the_count_the_old_release_leaked():
    episodes = episodes_with_a_small_stratum()
    old = old_release(episodes)
    history = ("breast_cancer_history", "yes")
    ttd = old["time_to_diagnosis"].set_index(["stratum_variable", "stratum"])
    assert pd.isna(ttd.loc[history, "n_diagnosed"])  # suppressed: 3 diagnoses
    assert recovered_from_curves(old)[(*history, "n_diagnosed")] == 3  # ... and recovered


def test_step_inversion_recovers_nothing_from_the_new_release():
    episodes = episodes_with_a_small_stratum()
    frames = {
        "time_to_diagnosis": analysis.time_to_diagnosis_table(episodes, SETTINGS),
        "cumulative_incidence": analysis.cumulative_incidence_table(episodes, SETTINGS),
    }
    released, _ = analysis.release_tables(frames, SETTINGS)
    ttd = released["time_to_diagnosis"].set_index(["stratum_variable", "stratum"])
    assert pd.isna(ttd.loc[("breast_cancer_history", "yes"), "n_diagnosed"])
    curve = released["cumulative_incidence"]
    assert not (curve["stratum"] == "yes").any()  # a stratum with hidden counts has no curve
    assert (curve.groupby("stratum").size() < 10).all()  # coarsened: a few steps, not days
    claims = recovered_from_curves(released)
    assert (*("breast_cancer_history", "yes"), "n_diagnosed") not in claims


def test_pooled_steps_hold_zero_or_at_least_min_cell():
    """safe_steps: every difference between any two released points is 0 or >= min_cell."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        increments = rng.choice([0, 1, 2, 5, 12], size=(30, 2))
        cumulative = np.cumsum(increments, axis=0)
        kept = coarsen.safe_steps(cumulative, np.zeros(2), cumulative[-1], MIN_CELL)
        if kept is None:
            assert any(small(v) for v in cumulative[-1])
            continue
        points = [np.zeros(2), *cumulative[kept], cumulative[-1]]
        for a, b in itertools.combinations(points, 2):
            assert not any(small(d) for d in np.abs(a - b))


def test_specs_declare_every_released_table():
    """One disclosure layer: every released table has declared metadata."""
    specs = release_specs(SETTINGS.cumulative_incidence_days)
    assert set(analysis.RELEASED_TABLES) <= set(specs)


# ---- sensitivity analyses nested in the primary one -------------------------------------------


def nested_sensitivity_rows() -> pd.DataFrame:
    """Long sensitivity rows of the primary analysis and washout_180, which adds 6 non-case
    episodes (tn) in `all` and 4 of them in `female` (the demo had 12 and 6), and
    persistence_28, whose 28-day rule flags 3 more cases (tp) than the primary one."""
    cells = {
        ("primary", "all"): (40, 99, 30, 1135), ("primary", "female"): (28, 63, 15, 640),
        ("washout_180", "all"): (40, 99, 30, 1141), ("washout_180", "female"): (28, 63, 15, 644),
        ("persistence_28", "all"): (43, 99, 27, 1135),
        ("persistence_28", "female"): (31, 63, 12, 640),
    }  # fmt: skip
    rows = []
    for (name, sub), (tp, fp, fn, tn) in cells.items():
        for measure in ("sensitivity", "specificity"):
            rows.append({"analysis": name, "subgroup": sub, "rule": "two_or_more_seed_flags",
                         "measure": measure, "estimate": 0.5, "lower": 0.4, "upper": 0.6,
                         "n_episodes": tp + fp + fn + tn, "n_events": tp + fn,
                         "tp": tp, "fp": fp, "fn": fn, "tn": tn})  # fmt: skip
    return pd.DataFrame(rows)


def test_sensitivity_rows_minus_primary_rows_would_leak_without_declared_nesting():
    """The old release suppressed each analysis on its own: the attack finds the 6 episodes
    washout_180 adds, the 4 women among them, and the 3 cases the 28-day rule adds."""
    import dataclasses

    spec = release_specs(SETTINGS.cumulative_incidence_days)["sensitivity_analyses"]
    old = dataclasses.replace(spec, nested=tuple(n for n in spec.nested if n.column != "analysis"))
    released = disclose(nested_sensitivity_rows(), old, MIN_CELL).frame
    found = {(a, sub, c) for a, sub, _, c, _ in analysis_differences(released)}
    assert {("washout_180", "all", "tn"), ("washout_180", "female", "n_episodes"),
            ("persistence_28", "all", "tp")} <= found  # fmt: skip


def test_sensitivity_rows_minus_primary_rows_reveal_nothing():
    frames = {"sensitivity_analyses": nested_sensitivity_rows()}
    released, _ = analysis.release_tables(frames, SETTINGS)
    sens = released["sensitivity_analyses"]
    assert analysis_differences(sens) == []
    # the cheaper side goes: the primary rows (the headline) stay shown
    primary = sens[sens["analysis"] == "primary"]
    assert primary[["n_episodes", "n_events", *CELLS]].notna().all(axis=None)
    hidden = sens[sens["analysis"] != "primary"]
    assert (hidden["tn_status"] == "suppressed_complement").any()


# ---- the clinical tables (issue 14) -----------------------------------------------------------

T1_KEYS = ["population", "comparison", "group", "variable", "level"]


def table_one_solutions(t1: pd.DataFrame) -> dict:
    """Levels + missing = group size; groups of a comparison add up to `overall`; the landmark
    population inside the cohort (an unknown remainder each): solved for the hidden counts."""
    t1 = t1.assign(level=t1["level"].fillna("").astype(str))

    def cell(r, column):
        return (*(r[k] for k in T1_KEYS), column)

    known, relations = {}, []
    rows = t1.to_dict("records")
    for r in rows:
        for c in ("n_group", "n_missing", "count"):
            if not pd.isna(r[c]):
                known[cell(r, c)] = float(r[c])
    by_key = {tuple(r[k] for k in T1_KEYS): r for r in rows}
    blocks: dict[tuple, list] = {}
    for r in rows:
        if r["count_status"] != "not_estimable":
            blocks.setdefault(
                (r["population"], r["comparison"], r["group"], r["variable"]), []
            ).append(r)
    for block in blocks.values():
        relation = {cell(r, "count"): 1 for r in block}
        for r in block:  # every level row repeats n_group and n_missing
            relations.append({cell(r, "n_group"): 1, cell(block[0], "n_group"): -1})
            relations.append({cell(r, "n_missing"): 1, cell(block[0], "n_missing"): -1})
        relations.append(
            {**relation, cell(block[0], "n_missing"): 1, cell(block[0], "n_group"): -1}
        )
    groups = {
        "reference_standard": ("positive", "negative"),
        "breast_cancer_history": ("yes", "no"),
    }
    for (population, _, _, variable, level), r in by_key.items():
        if r["comparison"] != "overall":
            continue
        for comparison, names in groups.items():
            parts = [by_key.get((population, comparison, g, variable, level)) for g in names]
            if all(p is not None for p in parts):
                for c in ("n_group", "n_missing", "count"):
                    relations.append({cell(r, c): -1, **{cell(p, c): 1 for p in parts}})
    return {
        k: v
        for k, v in solve_linear([r for r in relations if len(r) > 1], known).items()
        if k not in known
    }


def care_recoveries(care: pd.DataFrame) -> list:
    """Received = proportion x diagnosed, and not received = diagnosed - received: small ones,
    or a hidden count the proportion gives back."""
    found = []
    for r in care.itertuples(index=False):
        if not pd.isna(r.n_received) and small(r.n_diagnosed - r.n_received):
            found.append((r.care_category, "not received", r.n_diagnosed - r.n_received))
        if pd.isna(r.n_received) and not pd.isna(r.proportion) and not pd.isna(r.n_diagnosed):
            found.append((r.care_category, "n_received", round(r.proportion * r.n_diagnosed)))
    diagnosed = care["n_diagnosed"].dropna().unique()
    if len(diagnosed) and care["n_diagnosed"].isna().any():
        found.append(("n_diagnosed shown on one row, hidden on another", diagnosed[0]))
    return found


def presentation_recoveries(p: pd.DataFrame) -> list:
    """All minus the thirds shown, and the SRE-free in a row: small counts or hidden ones."""
    found = []
    total = p[p["interval_third"] == "all"]
    thirds = p[p["interval_third"] != "all"]
    for c in ("n", "n_sre"):
        if len(total) and not pd.isna(total[c].iloc[0]) and thirds[c].isna().sum() == 1:
            found.append(("all minus thirds", c, total[c].iloc[0] - thirds[c].sum()))
    for r in p.itertuples(index=False):
        if not pd.isna(r.n) and not pd.isna(r.n_sre) and small(r.n - r.n_sre):
            found.append((r.interval_third, "without SRE", r.n - r.n_sre))
    return found


def invert_survival(curve: pd.DataFrame) -> list[float]:
    """Deaths between released KM steps: (1 - S_k / S_k-1) x at risk (rounded at risk: a
    guess the adversary rounds)."""
    s = curve.sort_values("day")
    est = s["estimate"].astype(float).to_numpy()
    at_risk = s["at_risk"].astype(float).to_numpy()
    before = np.concatenate(([1.0], est[:-1]))
    return list((1 - est / np.maximum(before, 1e-12)) * at_risk)


def survival_leaks(released: dict, truth: dict) -> list:
    """A curve of a group whose deaths are hidden, a small number of deaths between two
    released days or after the last (judged on the true daily deaths), and a small number of
    deaths the step inversion gets right."""
    found = []
    curve = released.get("survival_after_diagnosis")
    if curve is None or curve.empty:
        return found
    summary = released["prognosis_summary"]
    deaths = summary[summary["measure"] == "median_survival_days"]
    if deaths["n_events"].isna().any() or deaths["n"].isna().any():
        found.append(("survival curve of hidden counts",))
    true = truth["survival_after_diagnosis"].set_index("day")["n_deaths"].cumsum()
    points = [0, *true.loc[sorted(curve["day"])], true.iloc[-1]]
    found += [("deaths between days", a, b) for a, b in itertools.combinations(points, 2)
              if small(b - a)]  # fmt: skip
    steps = [0, *true.loc[sorted(curve["day"])]]
    true_between = np.diff(steps)  # deaths pooled into each released step
    claims = zip(invert_survival(curve), true_between, strict=True)
    found += [("inverted step", c, t) for c, t in claims if small(t) and round(c) == t]
    return found


def clinical_leaks(released: dict, truth: dict) -> list:
    """Every hidden clinical count an attack recovers exactly, and every small count found."""
    found = []
    true_t1 = truth["table_one"].assign(level=truth["table_one"]["level"].fillna("").astype(str))
    true_t1 = true_t1.set_index(T1_KEYS)
    for (*key, column), value in table_one_solutions(released["table_one"]).items():
        if true_t1.loc[tuple(key), column] == value:
            found.append(("table_one relations", *key, column, value))
    found += care_recoveries(released["care_after_diagnosis_summary"])
    found += presentation_recoveries(released["presentation_by_interval"])
    found += survival_leaks(released, truth)
    t1 = released["table_one"]
    smd = t1["smd"].astype(float)  # inf: a level in one group only (zero counts), not a leak
    statuses = t1[[f"{c}_status" for c in ("count", "n_group", "n_missing")]]
    hidden = statuses.isin(["suppressed_small", "suppressed_complement"]).any(axis=1)
    smd_shown = np.isfinite(smd) & hidden
    found += [("smd beside a hidden count", *k) for k in t1.loc[smd_shown, T1_KEYS].itertuples()]
    return found


@pytest.mark.parametrize(("patients", "seed"), [(600, 1), (2500, 7)])
def test_no_attack_recovers_a_suppressed_clinical_count(tmp_path_factory, patients, seed):
    from pipelines.generator import generate

    root = tmp_path_factory.mktemp(f"clinical-{patients}-{seed}")
    generate(root / "export", patients=patients, seed=seed)
    released, truth = build_study(root / "export", root)
    assert released["table_one"]["n_group"].notna().any()  # something was released
    assert clinical_leaks(released, truth) == []


def diagnosed_episodes(n: int = 120, seed: int = 4) -> pd.DataFrame:
    """mart.prognosis-like rows: n diagnosed episodes, most dead within three years."""
    rng = np.random.default_rng(seed)
    days = rng.integers(1, 1100, n).astype(float)
    return pd.DataFrame({
        "days_diagnosis_to_death_or_censoring": days,
        "is_dead": rng.random(n) < 0.5,
        "diagnostic_interval_days": rng.integers(5, 300, n).astype(float),
        "age_at_index": rng.integers(40, 90, n).astype(float),
        "has_sre_at_presentation": rng.random(n) < 0.4,
    })  # fmt: skip


def released_survival(spec_changes: dict) -> tuple[dict, dict]:
    from dataclasses import replace

    from pipelines.stats import prognosis

    episodes = diagnosed_episodes()
    truth = {
        "survival_after_diagnosis": prognosis.survival_curve(episodes),
        "prognosis_summary": prognosis.prognosis_summary(episodes),
    }
    specs = release_specs(SETTINGS.cumulative_incidence_days)
    spec = replace(specs["survival_after_diagnosis"], **spec_changes)
    curve = truth["survival_after_diagnosis"]
    if spec.coarsen is None:
        curve = curve.drop(columns=["n_deaths"])
    out = analysis.disclose(curve, spec, MIN_CELL, 0, "survival_after_diagnosis").frame
    summary = analysis.disclose(truth["prognosis_summary"], specs["prognosis_summary"], MIN_CELL)
    return {"survival_after_diagnosis": out, "prognosis_summary": summary.frame}, truth


def test_the_unpooled_km_curve_would_leak():
    """The judge is strong enough: the daily KM curve (numbers at risk rounded, not pooled)
    puts a single death between released days."""
    released, truth = released_survival({"coarsen": None})
    assert released["prognosis_summary"]["n_events"].notna().all()  # deaths are shown
    assert any(leak[0] == "deaths between days" for leak in survival_leaks(released, truth))


def test_the_released_km_curve_is_pooled():
    released, truth = released_survival({})
    curve = released["survival_after_diagnosis"]
    assert 2 <= len(curve) < 12  # a few pooled steps, not one per death
    assert survival_leaks(released, truth) == []


def test_a_group_with_hidden_deaths_releases_no_survival_curve():
    from pipelines.stats import prognosis

    episodes = diagnosed_episodes(n=60, seed=9)
    episodes["is_dead"] = np.arange(60) >= 55  # 5 deaths: small
    frames = {
        "survival_after_diagnosis": prognosis.survival_curve(episodes),
        "prognosis_summary": prognosis.prognosis_summary(episodes),
    }
    released, _ = analysis.release_tables(frames, SETTINGS)
    assert released["survival_after_diagnosis"].empty
    summary = released["prognosis_summary"].set_index("measure")
    assert pd.isna(summary.loc["hazard_ratio_per_30_days_age_adjusted", "estimate"])
    assert pd.isna(summary.loc["median_survival_days", "n_events"])


# ---- counts shared across tables (declared in the specs, one routine) ----------------------


def cohort_table_one() -> pd.DataFrame:
    """The cohort's overall Table 1 block (sex, age band), 1370 episodes, none missing."""
    levels = {"sex": {"F": 805, "M": 565}, "age_band": {"18-49": 941, "50+": 429}}
    rows = [{"population": "cohort", "comparison": "overall", "group": "all", "variable": v,
             "level": level, "n_group": 1370, "n_missing": 0, "count": n, "percent": n / 13.7,
             "median": np.nan, "q1": np.nan, "q3": np.nan, "smd": np.nan}
            for v, counts in levels.items() for level, n in counts.items()]  # fmt: skip
    return pd.DataFrame(rows)


def test_a_count_hidden_elsewhere_is_hidden_in_table_one_with_its_complements():
    """time_to_diagnosis hides the cohort's episodes (here forced): Table 1 repeats them as
    n_group, which its levels add up to; the declared link hides n_group there and one more
    cell per variable, so the linear attack on Table 1 cannot work n_group out."""
    from pipelines.stats.disclosure import shared_cells

    specs = release_specs(SETTINGS.cumulative_incidence_days)
    ttd = pd.DataFrame({"stratum_variable": ["overall"], "stratum": ["all"],
                        "n_episodes": pd.array([pd.NA], dtype="Int64"),
                        "n_episodes_status": ["suppressed_complement"]})  # fmt: skip
    t1 = disclose(cohort_table_one(), specs["table_one"], MIN_CELL).frame
    assert t1["n_group"].notna().all()  # on its own, Table 1 shows everything
    cells = shared_cells({"time_to_diagnosis": ttd, "table_one": t1}, specs)
    assert {c for _, c in cells["table_one"]} == {"n_group"}
    t1 = disclose(cohort_table_one(), specs["table_one"], MIN_CELL, force=cells["table_one"]).frame
    assert t1["n_group"].isna().all()
    assert set(t1["n_group_status"]) == {"suppressed_complement"}
    assert table_one_solutions(t1) == {}  # nothing hidden comes back


def test_declared_links_cover_the_tables_that_share_counts():
    """The linked pairs are data in the specs: Table 1 with time_to_diagnosis and the AUROC
    tables, the primary sensitivity rows with flag_accuracy, the model's tables together."""
    specs = release_specs(SETTINGS.cumulative_incidence_days)
    keys = {name: {s.key for s in spec.shared} for name, spec in specs.items()}
    assert keys["table_one"] & keys["time_to_diagnosis"]
    assert keys["table_one"] & keys["score_performance"]
    assert keys["flag_accuracy"] & keys["sensitivity_analyses"]
    assert keys["model_performance"] & keys["decision_curve"] & keys["calibration_smoothed"]
    assert keys["prognosis_summary"] & keys["care_after_diagnosis_summary"]
