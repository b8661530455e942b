"""`redflags generate`: write a synthetic Synthea-layout export with planted truth.

Only argparse and the (pure Python) planted parameters are imported here; numpy and
pyarrow load when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.generator.params import load_planted


def configure_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--patients", type=int, required=True, help="number of patients to generate"
    )
    parser.add_argument(
        "--seed", type=int, default=42, help="random seed; same arguments, same bytes (default 42)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder to write the export and truth files to"
    )
    parser.add_argument(
        "--layout", choices=("3.3", "3.0", "2.x"), default="3.3",
        help="Synthea CSV version to imitate (default 3.3: SYSTEM columns, ICD-10-CM for some study records)",
    )  # fmt: skip
    parser.add_argument(
        "--format", choices=("synthea", "omop", "fhir"), default="synthea",
        help="export layout: synthea (CSV, default), omop (OMOP CDM 5.4 CSV) or fhir (FHIR R4 Bulk NDJSON); the same population and truth (docs/sources.md)",
    )  # fmt: skip
    parser.add_argument(
        "--split",
        type=int,
        default=1,
        metavar="K",
        help="write each table as name-1.csv .. name-K.csv",
    )
    parser.add_argument("--gzip", action="store_true", help="write .csv.gz files")
    parser.add_argument(
        "--planted",
        type=Path,
        metavar="FILE.toml",
        help="planted parameters (see docs/generator.md)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", dest="assignments",
        help="override one planted parameter, e.g. case_fraction=0.1 or flags.night_pain.sensitivity=0.5 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=10_000,
        help="patients generated at a time (default 10000)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--quirk-stop-before-start", type=int, default=0, metavar="N",
        help="plant N medication rows with STOP before START (a real Synthea quirk)",
    )  # fmt: skip
    parser.add_argument(
        "--quirk-dates-out-of-range", type=int, default=0, metavar="N",
        help="append N condition rows dated 2999-01-01 / 1850-01-01",
    )  # fmt: skip


def run_cli(args: argparse.Namespace) -> int:
    from pipelines.generator.convert import generate_in_format
    from pipelines.generator.quirks import Quirks

    planted = load_planted(args.planted, args.assignments)
    result = generate_in_format(
        args.out, args.format, patients=args.patients, seed=args.seed, layout=args.layout, split=args.split, gzip=args.gzip,
        planted=planted, chunk_size=args.chunk_size, progress=(lambda _: None) if args.quiet else None,
        quirks=Quirks(args.quirk_stop_before_start, args.quirk_dates_out_of_range),
    )  # fmt: skip
    cohort = result.summary["cohort"]
    print(
        f"Wrote {args.patients:,} patients to {result.out_dir} in {result.seconds:.1f}s"
        f" ({args.format} layout{'' if args.format != 'synthea' else ' ' + args.layout})."
    )
    print("  rows: " + ", ".join(f"{t} {n:,}" for t, n in result.rows.items()))
    print(
        f"  cohort: {cohort['episodes']:,} episodes, {cohort['outcomes_within_follow_up']:,} diagnosed "
        f"within follow-up, {cohort['landmark_population']:,} in the landmark population"
    )
    print(
        "  truth: truth.json (planted parameters, counts, attrition), truth_episodes.csv (one row per episode)"
    )
    return 0
