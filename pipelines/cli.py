"""`redflags` command line. Each sub-command lives in its own module, which provides
`configure_cli(parser)` (add its arguments) and `run_cli(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pipelines import __version__

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "pipelines.cli_study",
        "generate a synthetic export, run the whole study, write the report",
    ),
    "generate": (
        "pipelines.generator.cli",
        "write a synthetic Synthea-layout export with planted truth",
    ),
    "ingest": ("pipelines.ingest", "load a Synthea export into the DuckDB warehouse"),
    "run": ("pipelines.cli_study", "run the whole study flow on an export"),
    "report": ("pipelines.report", "write the HTML report from the release tables"),
    "export": ("pipelines.export", "write the release tables as Parquet for BI tools"),
    "serve": (
        "pipelines.cli_study",
        "serve the study flow on a cron schedule (Prefect deployment)",
    ),
}


class CliError(Exception):
    """An error the user can fix; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redflags", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"redflags {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        configure = getattr(module, f"configure_{name}_cli", None) or module.configure_cli
        configure(p)
        p.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module = importlib.import_module(args._module)
    run = getattr(module, f"run_{args.command}_cli", None) or module.run_cli
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print("redflags: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # user-facing errors carry their own message
        from pipelines.errors import UserFacingError

        if isinstance(exc, UserFacingError | CliError):
            print(f"redflags {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
