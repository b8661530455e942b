"""`redflags` command line. Each sub-command lives in its own module, which provides
`configure_cli(parser)` (add its arguments) and `run_cli(args) -> int`."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
import traceback

from pipelines import __version__

# Defaults for Prefect's temporary server, which every flow run from the command line starts
# (set before Prefect is imported; a value already in the environment wins). Its first
# start creates and migrates ~/.prefect/prefect.db, which took more than Prefect's 20 s
# default on a loaded machine ("Timed out while attempting to connect to ephemeral Prefect
# API server"). No usage telemetry leaves a research machine unless asked for.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}
for _name, _value in PREFECT_DEFAULTS.items():
    os.environ.setdefault(_name, _value)

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "pipelines.cli.study",
        "generate a synthetic export, run the whole study, write the report",
    ),
    "generate": (
        "pipelines.generator.cli",
        "write a synthetic Synthea-layout export with planted truth",
    ),
    "ingest": (
        "pipelines.cli.ingest",
        "load an export (Synthea CSV, OMOP CDM or FHIR R4) into the DuckDB warehouse",
    ),
    "run": ("pipelines.cli.study", "run the whole study flow on an export"),
    "report": ("pipelines.cli.outputs", "write the HTML report from the release tables"),
    "export": (
        "pipelines.cli.outputs",
        "write the release tables (Parquet, CSV) and figures (PNG, SVG)",
    ),
    "dashboard": ("pipelines.cli.dashboard", "serve the results dashboard on 127.0.0.1"),
    "docs": ("pipelines.docsite", "write the documentation site of the SQL models"),
    "serve": (
        "pipelines.cli.study",
        "serve the study flow on a cron schedule (Prefect deployment)",
    ),
}


class CliError(Exception):
    """An error the user can fix; printed without a traceback."""


# What `redflags --help` says first (a whole sentence, not the module docstring's first line).
DESCRIPTION = (
    "redflags: back-pain red flags and the time to a bone-metastasis diagnosis, from a"
    " de-identified EHR export (Synthea, OMOP or FHIR) to disclosure-controlled statistics."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redflags", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"redflags {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars (they show only on a terminal anyway)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        configure = getattr(module, f"configure_{name}_cli", None) or module.configure_cli
        configure(p)
        p.set_defaults(_module=module_name)
    return parser


# Loggers whose INFO lines a user wants: our own and Prefect's flow/run messages. Others
# (httpx requests to the local Prefect API, Great Expectations internals, task states)
# show only with --verbose.
USER_LOGGERS = ("pipelines", "redflags", "prefect", "prefect.flow_runs")
QUIET_LOGGERS = ("prefect.task_runs", "pipelines.models")  # per-model lines: -v


class _NoTraceback(logging.Filter):
    """Drop log records that carry a traceback: Prefect logs every failed task and flow
    with one ("Task run failed with exception", "Encountered exception during execution").
    The CLI prints the error once on one line; Prefect's state records ("Finished in state
    Failed(...)") still say which task failed, and -v shows everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info or record.exc_text)


# Loggers Prefect logs a failed task or flow run on, with the traceback attached. A filter
# on the logger survives Prefect's own logging setup (dictConfig keeps existing filters).
TRACEBACK_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine", "prefect")


class _OnlyOurInfo(logging.Filter):
    """Without -v, INFO lines only from our own stages: not Great Expectations' internals
    ("Created temporary directory ... for ephemeral docs site"), not Prefect's own
    (temporary server start/stop, task states, flow-run begin/completed). Warnings and
    errors always pass. A filter, not a level: Prefect resets its loggers' levels when it
    configures logging, and filters survive that."""

    PREFECT_CHATTER = ("Beginning flow run", "Finished in state Completed")

    @staticmethod
    def _dead_links() -> tuple[str, ...]:
        """Prefect's "View at" link to the temporary server the command started: it serves
        no UI (a configured server's link is kept)."""
        from pipelines import prefect_server

        address = prefect_server.TEMPORARY_ADDRESS
        return (f"View at {address}/",) if address else ()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        name = record.name
        if name.startswith(("great_expectations", "prefect.task_runs")) or name == "prefect":
            return False
        if name == "prefect.flow_runs":
            return not str(record.msg).startswith(self.PREFECT_CHATTER + self._dead_links())
        return True


# Where the filter goes: Prefect's loggers (their records may not reach the root's
# handlers) and Great Expectations' (whose library sets its own INFO level).
CHATTY_LOGGERS = ("prefect", "prefect.task_runs", "prefect.flow_runs", "great_expectations")


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        for name in USER_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        for name in TRACEBACK_LOGGERS:
            logging.getLogger(name).addFilter(_NoTraceback())
        only_ours = _OnlyOurInfo()
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).addFilter(only_ours)
        for handler in logging.getLogger().handlers:  # GX's child loggers propagate here
            handler.addFilter(only_ours)


# OSError numbers that describe the machine, not a bug: the user can act on them.
USER_ERRNOS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "not a folder",
    errno.EISDIR: "is a folder",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "file name too long",
}
# Prefect's error when its own temporary server does not answer within its start-up timeout
# (prefect.server.api.server.SubprocessASGIServer, Prefect 3.8)
PREFECT_START_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect API server"
# DuckDB reports the same conditions in its own exceptions' text.
DUCKDB_USER_MESSAGES = (
    "No space left on device",
    "Permission denied",
    "Read-only file system",
    "Disk quota exceeded",
    "Cannot open file",
    "Could not set lock on file",
)


def classify(exc: BaseException) -> tuple[int, str]:
    """Exit code (2: the user can fix it, 1: internal) and a one-line message."""
    from pipelines.errors import UserFacingError

    if isinstance(exc, UserFacingError | CliError):
        return 2, _one_line(str(exc))
    if isinstance(exc, OSError) and exc.errno in USER_ERRNOS:
        where = f": {exc.filename}" if exc.filename else ""
        hint = " (the previous outputs are unchanged)" if exc.errno == errno.ENOSPC else ""
        return 2, f"{USER_ERRNOS[exc.errno]}{where}{hint}"
    if type(exc).__module__.startswith(("duckdb", "_duckdb")):
        text = _one_line(str(exc))
        if any(m.lower() in text.lower() for m in DUCKDB_USER_MESSAGES):
            full = "no space left" in text.lower()
            return 2, text + (" (free some space; the previous outputs are unchanged)" * full)
    if isinstance(exc, RuntimeError) and PREFECT_START_TIMEOUT in str(exc):
        return 2, (
            "Prefect's temporary API server did not start in time (a busy machine?); the"
            " previous outputs are unchanged. Run again, raise"
            " PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or point PREFECT_API_URL at"
            " a running Prefect server (docs/operations.md)"
        )
    text = _one_line(str(exc)) or type(exc).__name__
    return 1, f"internal error ({type(exc).__name__}: {text}); run with -v for the traceback"


def _one_line(text: str) -> str:
    """A message on one line: its lines joined with '; ' (contract summaries have several)."""
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    from pipelines import progress

    progress.set_quiet(args.quiet)
    module = importlib.import_module(args._module)
    run = getattr(module, f"run_{args.command}_cli", None) or module.run_cli
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print("redflags: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line without -v; the traceback with it
        code, message = classify(exc)
        if args.verbose:
            traceback.print_exc()
        print(f"redflags {args.command}: error: {message}", file=sys.stderr)
        return code


def console_main() -> None:
    """The `redflags` console script: main(), then exit without interpreter teardown.

    DuckDB 2.0's nanobind bindings report "leaked instances" on stderr at interpreter
    teardown (dozens of lines after every command, harmless). The exit handler below is
    registered first, so it runs after every other one (Prefect stops its temporary server
    in its own), then flushes and ends the process with main()'s code."""
    import atexit
    import os

    code = {"rc": 1}

    def _exit() -> None:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code["rc"])

    atexit.register(_exit)
    try:
        code["rc"] = main()
    except SystemExit as exc:  # argparse --help / usage errors
        code["rc"] = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    sys.exit(code["rc"])
