"""`redflags ingest`: load an export into the warehouse behind the input contracts.

Heavy imports (Prefect, the ingest) happen inside `run_cli` so `redflags --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.sources.options import add_source_format_option
from pipelines.warehouse import warehouse_lock


def configure_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        required=True,
        help="folder of the export (Synthea CSV, OMOP CDM or FHIR R4; see --source-format)",
    )
    parser.add_argument(
        "--warehouse", required=True, help="DuckDB warehouse file (created if needed)"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="if a run or another ingest holds the warehouse, wait this long (default: 0)",
    )
    parser.add_argument(
        "--accept-shrink",
        action="store_true",
        help="accept tables that lost more than half their rows since the previous ingest",
    )
    add_source_format_option(parser)  # pipelines/sources: --source-format


def run_cli(args: argparse.Namespace) -> int:
    from pipelines import prefect_server

    prefect_server.skip_unused_imports()  # before anything imports prefect
    # Checked before Prefect starts, so a bad export or a busy warehouse is one clear line:
    # the export's headers, then the lock, held for the whole flow (ingest and contracts).
    from pipelines.ingest import discover_export
    from pipelines.sources import resolve_format

    if resolve_format(Path(args.source), args.source_format) == "synthea":
        discover_export(Path(args.source))
    with warehouse_lock(args.warehouse, args.wait):
        # the temporary server starts now, as in `redflags run`, and is waited for with the
        # same patience: Prefect's own start gave up after its 20 s start-up timeout on a
        # busy machine, and the ingest ended in an error before reading a row
        server_ready = prefect_server.start_server_early()
        prefect_server.start_watchdog()  # when Prefect starts a server of its own
        from pipelines.flows import ingest_flow  # Prefect and GX load only when needed

        server_ready()
        summary = ingest_flow(
            source=str(args.source),
            warehouse=str(args.warehouse),
            source_format=args.source_format,
            accept_shrink=args.accept_shrink,
            lock=False,  # held here
        )
    print(summary.format())
    return 0
