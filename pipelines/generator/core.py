"""`generate()`: write a Synthea-layout export with planted truth, chunk by chunk."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.generator import truth
from pipelines.generator.background import add_background
from pipelines.generator.catalog import CARE_CODES, SPINAL_CORD_COMPRESSION
from pipelines.generator.layouts import LAYOUTS, TABLES, has_system
from pipelines.generator.params import (
    CARE_CATEGORIES,
    SCENARIOS,
    PlantedParameterError,
    PlantedParameters,
)
from pipelines.generator.planting import plant_episodes
from pipelines.generator.population import HORIZON, LANDMARK, day_number, plan_population
from pipelines.generator.quirks import Quirks, plant_quirks
from pipelines.generator.records import Records
from pipelines.generator.tables import Pools, build_tables
from pipelines.generator.writer import ExportWriter, remove_previous_export

GENERATOR_VERSION = 1
DEFAULT_CHUNK_SIZE = 10_000


@dataclass
class GenerationResult:
    """What was written: folder, files per table, row counts, scenario counts, the truth summary."""

    out_dir: Path
    files: dict[str, list[str]]
    rows: dict[str, int]
    scenario_counts: dict[str, int]
    episodes: pd.DataFrame  # truth_episodes.csv as a DataFrame
    summary: dict[str, Any] = field(repr=False)
    seconds: float = 0.0


def generate(
    out_dir: str | Path,
    patients: int,
    seed: int,
    layout: str = "3.3",
    split: int = 1,
    gzip: bool = False,
    planted: PlantedParameters | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Callable[[str], None] | None = None,
    quirks: Quirks | None = None,
) -> GenerationResult:
    """Write `patients` synthetic patients to `out_dir` (byte-identical for the same arguments).

    Files: the seven Synthea tables (`name.csv`, or `name-1.csv` .. `name-K.csv` with
    `split=K`, `.csv.gz` with `gzip`) plus `truth.json` and `truth_episodes.csv`. Files of
    those names already in `out_dir` are replaced. `progress` receives one line per chunk
    (default: stderr when there is more than one chunk). `quirks` plants the data-quality
    quirks of real exports (STOP before START, dates out of range; pipelines/generator/quirks.py)
    and lists their lines in truth.json under `quirks`.
    """
    planted = planted or PlantedParameters()
    _check_arguments(patients, seed, layout, split, chunk_size)
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_previous_export(out)
    n_chunks = -(-patients // chunk_size)
    say = progress or (_stderr if n_chunks > 1 else (lambda _: None))
    writer = ExportWriter(out, layout, patients, split, gzip)
    pools = Pools.draw(np.random.default_rng([seed, 0, 0]))
    episodes = []
    for chunk in range(n_chunks):
        first = chunk * chunk_size
        n = min(chunk_size, patients - first)
        episodes.append(
            _generate_chunk(
                np.random.default_rng([seed, 1, chunk]), n, first, layout, planted, pools, writer
            )
        )
        say(
            f"generate: chunk {chunk + 1}/{n_chunks} ({first + n:,}/{patients:,} patients, "
            f"{time.perf_counter() - started:.1f}s)"
        )
    files = writer.close()
    planted_quirks = None
    if quirks is not None and quirks.any():
        lines = plant_quirks(out, files, quirks, seed)
        writer.rows["conditions"] += quirks.dates_out_of_range
        planted_quirks = {**quirks.as_dict(), "lines": lines}
    return _finish(
        out,
        patients,
        seed,
        layout,
        split,
        gzip,
        chunk_size,
        planted,
        writer,
        files,
        pd.concat(episodes, ignore_index=True),
        time.perf_counter() - started,
        planted_quirks,
    )


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _check_arguments(patients: int, seed: int, layout: str, split: int, chunk_size: int) -> None:
    if layout not in LAYOUTS:
        raise PlantedParameterError(
            f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}"
        )
    if patients < 1:
        raise PlantedParameterError(f"patients must be at least 1 (got {patients})")
    if not 1 <= split <= patients:
        raise PlantedParameterError(
            f"split must be between 1 and the number of patients (got {split})"
        )
    if seed < 0 or chunk_size < 1:
        raise PlantedParameterError("seed must not be negative and chunk_size must be positive")


def _generate_chunk(rng, n, first, layout, planted, pools, writer) -> pd.DataFrame:
    pop = plan_population(rng, n, planted)
    records = Records()
    plant_episodes(
        rng,
        pop,
        records,
        planted,
        has_system(layout),
        day_number(planted.study_start_date),
        day_number(planted.extract_date),
    )
    add_background(rng, pop, records)
    chunk = build_tables(rng, pop, records.finish(), layout, pools, first)
    for table in TABLES:
        writer.write(table, chunk.tables[table], chunk.patient_rows[table])
    return truth.episode_truth(pop, chunk.patient_ids)


def _finish(
    out,
    patients,
    seed,
    layout,
    split,
    gzip,
    chunk_size,
    planted,
    writer,
    files,
    episodes,
    seconds,
    quirks=None,
):
    counts = dict.fromkeys(SCENARIOS, 0)
    counts.update({k: int(v) for k, v in episodes["scenario"].value_counts().items()})
    counts["background"] = patients - len(episodes)
    summary = {
        "generator": {
            "version": GENERATOR_VERSION,
            "seed": seed,
            "patients": patients,
            "layout": layout,
            "split": split,
            "gzip": gzip,
            "chunk_size": chunk_size,
        },
        "planted": planted.as_dict(),
        "assumed_settings": {
            "study_start_date": planted.study_start_date.isoformat(),
            "washout_days": 365,
            "lookback_days": 365,
            "min_age": 18,
            "sexes": ["F", "M"],
            "horizon_days": HORIZON,
            "landmark_days": LANDMARK,
            "persistence_days": LANDMARK,
            "flag_lookback_days": 365,
            "weight_loss_fraction": 0.05,
            "alp_upper_limit": 147.0,
            "data_extract_date": planted.extract_date.isoformat(),
        },
        "scenario_counts": counts,
        "attrition": truth.attrition(counts, patients),
        "cohort": truth.cohort_summary(episodes),
        "flag_accuracy": truth.flag_accuracy(episodes),
        "outcome": {
            "patients_with_outcome_record": int((episodes["outcome_record_count"] > 0).sum()),
            "outcome_condition_rows": int(episodes["outcome_record_count"].sum()),
            "time_to_diagnosis": {
                "distribution": "lognormal",
                "median_days": planted.diagnosis_median_days,
                "sigma": planted.diagnosis_sigma,
                "redrawn_outside_days": [1, HORIZON - 5],
                "redrawn_inside_days": [40, 44],
            },
        },
        "after_diagnosis": {
            "care_rates": {c: getattr(planted, f"care_{c}_rate") for c in CARE_CATEGORIES},
            "care_codes": {c: code.code for c, (_, code) in CARE_CODES.items()},
            "care_days_after_diagnosis": [0, 60],
            "sre": {
                "code": SPINAL_CORD_COMPRESSION.code,
                "days_after_diagnosis": [0, 20],
                "logit_intercept": planted.sre_logit_intercept,
                "odds_ratio_per_30_days": math.exp(planted.sre_log_odds_per_30_days),
            },
            "survival": {
                "distribution": "exponential",
                "median_days_at_interval_0": planted.survival_median_days,
                "hazard_ratio_per_30_days": math.exp(planted.survival_log_hr_per_30_days),
            },
        },
        "codes": truth.code_lists(),
        "rows": writer.rows,
        "rows_per_patient": {t: round(writer.rows[t] / patients, 3) for t in TABLES},
        "files": files,
        "truth_episodes": "truth_episodes.csv",
    }
    if quirks is not None:
        summary["quirks"] = quirks
    truth.write_episodes(episodes, out / "truth_episodes.csv")
    truth.write_summary(out / "truth.json", summary)
    return GenerationResult(
        out, files, dict(writer.rows), counts, episodes, summary, round(seconds, 3)
    )
