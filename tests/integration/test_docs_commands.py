"""Every shell command in README.md and docs/*.md is executed by this test, or checked.

A command is a line (with its `\\` continuations) of a fenced ```sh block. Commands run in
document order (README.md, then docs/*.md by name) in one temporary workspace that holds a
link to `.venv`, copies of the files the docs name (`study.example.toml`,
`planted.example.toml`, `docs/`) and a small generated export, with these substitutions:

- `path/to/export` and `/exports/latest` -> that export;
- `--patients N` above SMALL -> `--patients SMALL` (the options are the same, the run short);
- an optional part in brackets (`[--port 8501]`) is left out; `study.duckdb` in the
  workspace is the warehouse the README's `redflags run` built (`out/study.duckdb`).

A block that needs a server, a browser, a cluster, an installation or a long run is
preceded by `<!-- not-run: reason -->`. Its commands are not run but checked: a
`redflags` or `python -m` command must parse with the real argument parser (brackets
unwrapped), a `make` target must exist, any other program must exist in `.venv/bin`. A
new command without a marker is therefore run; a fenced block of another language whose
lines look like commands fails (make it ```sh).
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SMALL = 300  # patients of the generated export and of every documented `generate`
FENCE = re.compile(r"^(\s*)```\s*(\S*)\s*$")
NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(\S.*?)\s*-->\s*$")
LOOKS_LIKE_A_COMMAND = re.compile(r"^\s*(\$ )?(\.venv/bin/|make |python3? |redflags |uv )")
COMMAND_TIMEOUT = 600  # seconds; a `redflags run` of SMALL patients takes one to three


@dataclass(frozen=True)
class Command:
    doc: str  # README.md or docs/x.md
    line: int  # 1-based line of the command's first line
    text: str  # continuations joined
    not_run: str | None  # the marker's reason

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(path: Path) -> list[tuple[str, int, list[tuple[int, str]], str | None]]:
    """(language, first line, [(line number, line)], not-run reason) of each fenced block."""
    found, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        before = [line for line in lines[:i] if line.strip()][-1:] or [""]
        reason = NOT_RUN.match(before[0])
        body, j = [], i + 1
        while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
            body.append((j + 1, lines[j]))
            j += 1
        found.append((fence.group(2), i + 1, body, reason.group(1) if reason else None))
        i = j + 1
    return found


def doc_commands(path: Path) -> list[Command]:
    doc = path.relative_to(REPO).as_posix()
    commands = []
    for language, _start, body, reason in blocks(path):
        if language not in ("sh", "bash", "shell"):
            continue
        pending, first = "", 0
        for number, line in body:
            if not pending:
                first = number
            pending += line.strip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            if pending and not pending.startswith("#"):
                commands.append(Command(doc, first, pending, reason))
            pending = ""
    return commands


ALL = [c for path in DOCS for c in doc_commands(path)]
RUN = [c for c in ALL if c.not_run is None]
CHECKED = [c for c in ALL if c.not_run is not None]


def words(text: str) -> list[str]:
    """The command's words, comments dropped, a trailing `&` dropped."""
    tokens = shlex.split(text, comments=True)
    return tokens[:-1] if tokens and tokens[-1] == "&" else tokens


def without_optional(text: str) -> str:
    return re.sub(r"\s*\[[^\]]*\]", "", text)


def substituted(text: str, export: Path) -> str:
    text = without_optional(text)
    text = text.replace("path/to/export", str(export)).replace("/exports/latest", str(export))
    return re.sub(r"--patients (\d+)", lambda m: f"--patients {min(int(m.group(1)), SMALL)}", text)


# --- fast checks: the blocks, the markers and the commands that are not run -------------


def test_the_docs_hold_commands_and_some_are_run():
    assert len(RUN) >= 8 and len(CHECKED) >= 8
    assert {c.doc for c in RUN} >= {"README.md", "docs/generator.md", "docs/report.md"}


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_commands_are_only_in_sh_blocks(path):
    """A command in a ```text or unlabelled block would escape this test."""
    hidden = [
        f"{path.name}:{number}"
        for language, _start, body, _reason in blocks(path)
        if language not in ("sh", "bash", "shell")
        for number, line in body
        if LOOKS_LIKE_A_COMMAND.match(line) and language not in ("python", "toml", "sql")
    ]
    assert hidden == [], "commands outside a ```sh block: make the block ```sh"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_not_run_marker_stands_before_a_sh_block(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    marked = {n for n, line in enumerate(lines, 1) if re.match(r"^\s*<!--\s*not-run", line)}
    used = set()
    for language, start, _body, reason in blocks(path):
        if reason is not None and language in ("sh", "bash", "shell"):
            used |= {n for n in marked if n < start and not "".join(lines[n : start - 1]).strip()}
    assert marked == used, f"{path.name}: a not-run marker that marks no ```sh block"


def check_without_running(command: Command) -> None:
    """Raise AssertionError when a not-run command could not run as written."""
    tokens = words(command.text.replace("[", "").replace("]", ""))
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):  # VAR=value command
        tokens = tokens[1:]
    if tokens[0] == "export":
        assert all(re.match(r"^[A-Z_][A-Z0-9_]*=\S+$", t) for t in tokens[1:]), command.text
        return
    if tokens[0] == "make":
        makefile = (REPO / "Makefile").read_text(encoding="utf-8")
        for target in tokens[1:]:
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"no make target {target}"
        return
    assert tokens[0].startswith((".venv/bin/", ".tools/bin/")), f"{tokens[0]}: not from .venv/bin"
    made_by_make = tokens[0] in (REPO / "Makefile").read_text(encoding="utf-8")  # .tools/bin/uv
    assert (REPO / tokens[0]).exists() or made_by_make, f"{tokens[0]} is not installed"
    if tokens[0] == ".venv/bin/redflags":
        parse(importlib.import_module("pipelines.cli").build_parser(), tokens[1:])
    elif tokens[0] == ".venv/bin/python" and tokens[1] == "-m":
        module = importlib.import_module(tokens[2])
        assert hasattr(module, "build_parser"), f"{tokens[2]}: cannot check its options"
        parse(module.build_parser(), tokens[3:])


def parse(parser, args: list[str]) -> None:
    try:
        parser.parse_args(args)
    except SystemExit as exc:
        raise AssertionError(f"the options do not parse: {' '.join(args)}") from exc


@pytest.mark.parametrize("command", CHECKED, ids=lambda c: c.id)
def test_a_command_that_is_not_run_is_still_valid(command):
    check_without_running(command)


def test_the_check_catches_a_misspelled_option():
    wrong = Command("x.md", 1, ".venv/bin/redflags serve --sorce /exports/latest", "server")
    with pytest.raises(AssertionError, match="do not parse"):
        check_without_running(wrong)
    with pytest.raises(AssertionError, match="no make target"):
        check_without_running(Command("x.md", 1, "make dmeo", "long"))


# --- the commands that run ----------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    from pipelines.generator import generate

    root = tmp_path_factory.mktemp("docs-commands")
    generate(root / "small-export", patients=SMALL, seed=11)
    work = root / "work"
    work.mkdir()
    (work / ".venv").symlink_to(REPO / ".venv")
    for name in ("study.example.toml", "planted.example.toml"):
        shutil.copy(REPO / name, work / name)
    shutil.copytree(REPO / "docs", work / "docs")
    (work / "study.duckdb").symlink_to("out/study.duckdb")  # built by the README's run
    return work


@pytest.fixture(scope="module")
def results(workspace) -> dict[str, subprocess.CompletedProcess]:
    """Every runnable command, in document order, each once (a command that hangs, such as
    a server without its not-run marker, is stopped after COMMAND_TIMEOUT and fails)."""
    done = {}
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    for command in RUN:
        text = substituted(command.text, workspace.parent / "small-export")
        started = time.monotonic()
        try:
            done[command.id] = subprocess.run(
                text, shell=True, cwd=workspace, env=env, capture_output=True, text=True,
                timeout=COMMAND_TIMEOUT,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            done[command.id] = subprocess.CompletedProcess(text, -1, "", "timed out")
        done[command.id].seconds = time.monotonic() - started
    return done


@pytest.mark.parametrize("command", RUN, ids=lambda c: c.id)
def test_a_documented_command_runs(command, results):
    result = results[command.id]
    assert result.returncode == 0, (
        f"{command.id}: `{command.text}` exited {result.returncode} after"
        f" {result.seconds:.0f} s:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    )


def test_the_commands_left_their_outputs_in_the_workspace(results, workspace):
    """The run, the report and the exports wrote where the README says."""
    assert results
    for path in ("out/study.duckdb", "out/report.html", "out/study.release/manifest.json",
                 "out/release-parquet/manifest.json", "report.html", "release-parquet/manifest.json"):  # fmt: skip
        assert (workspace / path).is_file(), path
