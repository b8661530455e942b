"""`redflags run`, `redflags demo` and `redflags serve`: the study flow from the command line.

Heavy imports (Prefect, the pipeline) happen inside the run functions so `redflags --help`
stays quick.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.sources.options import add_source_format_option

DEFAULT_DEMO_PATIENTS = 5000
DEFAULT_DEMO_SEED = 42


def _add_study_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML file of study parameters (protocol names; see study.example.toml)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="if another run holds the warehouse, wait this long before giving up (default: 0)",
    )
    parser.add_argument(
        "--accept-shrink",
        action="store_true",
        help="accept raw tables that lost more than half their rows since the previous"
        " ingest (refused by default: a truncated export would overwrite good results)",
    )
    parser.add_argument(
        "--engine",
        choices=("duckdb", "spark"),
        default="duckdb",
        help="where ingest and the SQL models run (default duckdb; spark needs"
        " `make install-spark`, see docs/spark.md)",
    )
    parser.add_argument(
        "--spark-master",
        default="local[*]",
        metavar="URL",
        help="with --engine spark: local[*] (default), spark://host:7077, yarn, k8s://...,"
        " or a Spark Connect address sc://host:15002",
    )
    add_source_format_option(parser)  # pipelines/sources
    parser.add_argument(
        "--spark-dir",
        type=Path,
        metavar="DIR",
        help="with --engine spark: folder for the Parquet tables (default <warehouse>.spark/;"
        " on a cluster, a path every node sees)",
    )


def _add_parquet_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--parquet-dir",
        type=Path,
        metavar="DIR",
        help="folder for the release tables as Parquet and CSV with a manifest, replaced"
        " atomically after each successful run (default <warehouse stem>.release/ beside"
        " the warehouse)",
    )
    group.add_argument(
        "--no-parquet", action="store_true", help="do not write the release as Parquet and CSV"
    )


def _parquet_dir(args: argparse.Namespace) -> str | None:
    """--parquet-dir, or the default beside the warehouse; None with --no-parquet."""
    from pipelines.study import default_parquet_dir

    if args.no_parquet:
        return None
    return str(args.parquet_dir or default_parquet_dir(args.warehouse))


def configure_run_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        type=Path,
        required=True,
        help="folder of the export (Synthea CSV, OMOP CDM or FHIR R4; see --source-format)",
    )
    parser.add_argument(
        "--warehouse", type=Path, required=True, help="DuckDB file to build (created if absent)"
    )
    parser.add_argument("--report", type=Path, help="also write the HTML report here")
    parser.add_argument(
        "--force",
        action="store_true",
        help="rebuild everything even when the export, settings, value sets and code are"
        " those of the last successful run (by default such a run keeps its outputs)",
    )
    _add_parquet_options(parser)
    _add_study_options(parser)


def configure_demo_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--patients",
        type=int,
        default=DEFAULT_DEMO_PATIENTS,
        help=f"patients to generate (default {DEFAULT_DEMO_PATIENTS})",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_DEMO_SEED, help="generator seed")
    parser.add_argument(
        "--out", type=Path, default=Path("demo"), help="folder for everything (default ./demo)"
    )
    _add_study_options(parser)


def configure_serve_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source", type=Path, required=True, help="folder the nightly export lands in"
    )
    parser.add_argument(
        "--warehouse", type=Path, required=True, help="DuckDB file to keep up to date"
    )
    parser.add_argument(
        "--cron", default="0 2 * * *", help='cron schedule (default "0 2 * * *": 02:00 daily)'
    )
    parser.add_argument(
        "--timezone", default="UTC", help="time zone of the cron schedule (default UTC)"
    )
    parser.add_argument("--name", default="redflags-nightly", help="deployment name")
    parser.add_argument("--report", type=Path, help="also write the HTML report here on every run")
    _add_parquet_options(parser)
    _add_study_options(parser)


def _settings(args: argparse.Namespace):
    from pipelines.settings import load_settings

    return load_settings(args.config)


def _preflight(
    args: argparse.Namespace, source: Path | None = None, warehouse: Path | None = None
) -> None:
    """What can be checked before Prefect starts, so that a mistake is one clear line (not a
    failed flow run): the config (names, types, bounds), the export's files and headers,
    and whether another writer holds the warehouse (waiting up to --wait). The run takes
    the lock again itself: this only answers early."""
    _settings(args)
    if source is not None:
        from pipelines.ingest import discover_export
        from pipelines.sources import resolve_format

        if resolve_format(source, args.source_format) == "synthea":
            discover_export(source)
    if warehouse is not None:
        from pipelines.warehouse import warehouse_lock

        with warehouse_lock(warehouse, args.wait):
            pass


def run_run_cli(args: argparse.Namespace) -> int:
    from pipelines import prefect_server

    prefect_server.skip_unused_imports()  # before anything imports prefect
    _preflight(args, args.source, args.warehouse)
    # the server (and its watchdog) start now, while Prefect and the pipeline import
    server_ready = prefect_server.start_server_early()
    prefect_server.start_watchdog()  # when Prefect starts a server of its own
    from pipelines.flows import study_flow

    server_ready()
    result = study_flow(
        source=str(args.source),
        warehouse=str(args.warehouse),
        config=str(args.config) if args.config else None,
        report=str(args.report) if args.report else None,
        parquet_dir=_parquet_dir(args),
        wait_seconds=args.wait,
        force=args.force,
        **_engine_options(args),
    )
    _print_result(result)
    return 0


def run_demo_cli(args: argparse.Namespace) -> int:
    from pipelines import prefect_server

    prefect_server.skip_unused_imports()  # before anything imports prefect
    # fail fast on a bad config or a busy warehouse, before generating anything
    _preflight(args, warehouse=args.out / "warehouse.duckdb")
    # first, so that the server (a process of its own) starts while Prefect and the pipeline
    # import and the export is generated; it starts its watchdog
    server_ready = prefect_server.start_server_early()
    prefect_server.start_watchdog()  # when Prefect starts a server of its own
    from pipelines.flows import study_flow
    from pipelines.generator.convert import generate_in_format

    out: Path = args.out
    export = out / "export"
    print(f"Generating {args.patients} synthetic patients (seed {args.seed}) into {export} ...")
    # --source-format omop|fhir: the demo export is written in that layout (docs/sources.md)
    layout = "synthea" if args.source_format == "auto" else args.source_format
    generate_in_format(export, layout, patients=args.patients, seed=args.seed)
    server_ready()
    result = study_flow(
        source=str(export),
        warehouse=str(out / "warehouse.duckdb"),
        config=str(args.config) if args.config else None,
        report=str(out / "report.html"),
        parquet_dir=str(out / "release"),
        wait_seconds=args.wait,
        **_engine_options(args),
    )
    _print_result(result)
    print(where_to_look(out, export, layout))
    if args.engine == "spark":
        spark_dir = args.spark_dir or Path(str(out / "warehouse.duckdb") + ".spark")
        print(
            f"  spark       {spark_dir}/runs/  (the Spark run's Parquet; schemas spark_raw,"
            " spark_meta in the warehouse)"
        )
    return 0


def where_to_look(out: Path, export: Path, layout: str = "synthea") -> str:
    """What `redflags demo` prints at the end: each output and the command that opens it."""
    return (
        "\nWhere to look:\n"
        f"  report      {out / 'report.html'}\n"
        f"  warehouse   {out / 'warehouse.duckdb'}  (schemas mart, release, meta)\n"
        f"  parquet     {out / 'release'}/  (release tables for BI tools)\n"
        f"  export      {export}/  (the generated {layout} export; truth.json holds the planted truth)\n"
        f"  notebooks   REDFLAGS_WAREHOUSE={out / 'warehouse.duckdb'} .venv/bin/jupyter notebook notebooks/\n"
        f"  dashboard   .venv/bin/redflags dashboard --warehouse {out / 'warehouse.duckdb'}"
    )


def run_serve_cli(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL

    from pipelines.errors import UserFacingError
    from pipelines.flows import serve_study

    _preflight(args)  # not the export: tonight's may not have landed yet
    if not PREFECT_API_URL.value():
        # Prefect's temporary server has no scheduler: served deployments would never run.
        raise UserFacingError(
            "serving a schedule needs a Prefect server: start one with "
            "`.venv/bin/prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (see docs/operations.md)"
        )
    serve_study(
        source=str(args.source),
        warehouse=str(args.warehouse),
        cron=args.cron,
        timezone=args.timezone,
        name=args.name,
        config=str(args.config) if args.config else None,
        report=str(args.report) if args.report else None,
        parquet_dir=_parquet_dir(args),
        **_engine_options(args),
    )
    return 0


def _engine_options(args: argparse.Namespace) -> dict:
    return {
        "accept_shrink": args.accept_shrink,
        "engine": args.engine,
        "spark_master": args.spark_master,
        "spark_dir": str(args.spark_dir) if args.spark_dir else None,
        "source_format": args.source_format,
    }


def _print_result(result) -> None:
    print(f"\nRun {result.run_id}: {result.status}")
    width = max((len(s.stage) for s in result.stages), default=10)
    for s in result.stages:
        print(f"  {s.stage:<{width}}  {s.seconds:7.1f}s  {s.detail}")
    if result.report:
        print(f"Report: {result.report}")
