"""Benchmark of the OMOP and FHIR loads against DuckDB plainly reading the same files
(docs/benchmark.md, "Source layouts").

For one export size: the generator's population written as FHIR R4 Bulk NDJSON and as
OMOP CDM 5.4 CSV (generated once as Synthea CSV and converted; cached under `--exports`),
then, each in a fresh subprocess (so a stage's peak RSS is its own):

- `fhir_plain`: DuckDB `read_json` of every NDJSON file into a table (auto-detected
  schema, no mapping), the floor of reading that JSON;
- `fhir_ingest`: `load_source(..., "fhir")`, the whole load into raw.* with quarantine,
  the row accounting and the meta tables;
- `omop_plain`: DuckDB `read_csv` of every CDM CSV file the adapter reads into a table;
- `omop_ingest`: `load_source(..., "omop")`.

The ratio ingest / plain is the number that counts (both measured in the same run, on the
same files). Results: `<out>/sources.json` and `<out>/sources.md`.

    python -m bench.bench --sources --patients 100k      # or:
    python -m bench.bench_sources --patients 100000 --exports /tmp/redflags-bench-sources
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.bench import _tree_rss_bytes

STAGES = ("fhir_plain", "fhir_ingest", "omop_plain", "omop_ingest")
DEFAULT_EXPORTS = Path("/tmp/redflags-bench-sources")


# ---------------------------------------------------------------- exports


def export_folders(root: Path, patients: int, seed: int) -> dict[str, Path]:
    """`<root>/p<N>-s<seed>/<layout>`; or `<root>/<layout>` when that holds a finished export
    (truth.json), as in a shared folder of ready exports (`--exports /work/bench/src100k`)."""
    base = Path(root) / f"p{patients}-s{seed}"
    return {
        fmt: Path(root) / fmt if (Path(root) / fmt / "truth.json").exists() else base / fmt
        for fmt in ("synthea", "fhir", "omop")
    }


def ensure_exports(
    root: Path, patients: int, seed: int, log=print, formats=("fhir", "omop")
) -> dict[str, Path]:
    """The layouts of one population, generated (and converted) only when missing."""
    from pipelines.generator.convert import convert
    from pipelines.generator.core import generate

    folders = export_folders(root, patients, seed)
    if (
        any(not (folders[fmt] / "truth.json").exists() for fmt in formats)
        and not (folders["synthea"] / "truth.json").exists()
    ):
        log(f"generating {patients:,} patients (Synthea CSV) in {folders['synthea']}")
        generate(folders["synthea"], patients=patients, seed=seed, progress=lambda _: None)
    for fmt in formats:
        if not (folders[fmt] / "truth.json").exists():
            log(f"converting to {fmt} in {folders[fmt]}")
            convert(folders["synthea"], folders[fmt], fmt)
    return folders


def _size_mb(folder: Path, pattern: str) -> float:
    return round(sum(p.stat().st_size for p in folder.glob(pattern)) / 2**20, 1)


# ---------------------------------------------------------------- stages (in the child)


def _omop_files(folder: Path) -> list[Path]:
    from pipelines.sources import omop

    cdm = omop._scan(folder)
    return [cdm.files[t] for t in sorted(cdm.files)]


def run_stage(stage: str, export: Path, warehouse: Path) -> dict:
    """One stage; returns what it read (rows per table)."""
    import duckdb

    if stage.endswith("_ingest"):
        from pipelines.sources import load_source

        summary = load_source(export, warehouse, stage.removesuffix("_ingest"), log=print)
        return {"rows": summary.table_rows, "quarantined": summary.quarantined}
    con = duckdb.connect(str(warehouse))
    rows = {}
    try:
        if stage == "fhir_plain":
            for path in sorted(export.glob("*.ndjson")):
                name = path.name.split(".")[0].lower()
                con.execute(
                    f"CREATE TABLE {name} AS SELECT * FROM read_json($path,"
                    " format = 'newline_delimited')",
                    {"path": str(path)},
                )
                rows[name] = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        else:
            for path in _omop_files(export):
                name = path.name.split(".")[0].lower()
                con.execute(
                    f"CREATE TABLE {name} AS SELECT * FROM read_csv($path)", {"path": str(path)}
                )
                rows[name] = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    finally:
        con.close()
    return {"rows": rows}


def _cpu_seconds() -> float:
    """user+system seconds of this process (all its threads) and of the children it waited for."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def child_main(stage: str, export: Path, warehouse: Path, result: Path) -> int:
    for p in (warehouse, Path(f"{warehouse}.wal")):
        p.unlink(missing_ok=True)
    started, cpu = time.perf_counter(), _cpu_seconds()
    info = run_stage(stage, export, warehouse)
    record = {
        "seconds": round(time.perf_counter() - started, 3),
        "cpu_seconds": round(_cpu_seconds() - cpu, 3),
        "info": info,
    }
    result.write_text(json.dumps(record, default=str))
    return 0


# ---------------------------------------------------------------- parent


def measure(stage: str, export: Path, work: Path) -> dict:
    """Run one stage in a fresh subprocess: its own seconds and CPU; peak RSS sampled over the
    child's process tree every 50 ms, as bench/bench.py does. Not the child's `ru_maxrss`: a
    child starts as a copy of this process (fork, or vfork until exec) and its `ru_maxrss`
    counts this process's resident memory then (here, after generating the exports)."""
    work.mkdir(parents=True, exist_ok=True)
    result = work / f"{stage}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.bench_sources", "--child", stage,
           "--export", str(export), "--warehouse", str(work / f"{stage}.duckdb"),
           "--result", str(result)]  # fmt: skip
    load = round(os.getloadavg()[0], 2)
    with open(work / f"{stage}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        peak, done = [0], threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], _tree_rss_bytes(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            done.set()
            sampler.join()
    if os.waitstatus_to_exitcode(status) != 0 or not result.exists():
        return {"stage": stage, "status": "failed", "log": str(work / f"{stage}.log")}
    record = json.loads(result.read_text())
    (work / f"{stage}.duckdb").unlink(missing_ok=True)
    return {"stage": stage, "status": "ok", "load_average": load,
            "peak_rss_mb": round(peak[0] / 2**20, 1),
            # the whole child process (interpreter start and imports included)
            "process_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            **record}  # fmt: skip


def machine() -> dict:
    import duckdb

    mem = next(
        (line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
         if line.startswith("MemTotal:")), "0"
    )  # fmt: skip
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(int(mem) / 2**20, 1),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def bench(
    patients: int, exports: Path, out: Path, seed: int = 42, formats=("fhir", "omop")
) -> dict:
    folders = ensure_exports(exports, patients, seed, formats=formats)
    report = {
        "patients": patients,
        "machine": machine(),
        "exports": {
            "fhir_mb": _size_mb(folders["fhir"], "*.ndjson") if "fhir" in formats else 0,
            "omop_mb": _size_mb(folders["omop"], "*.csv") if "omop" in formats else 0,
        },
        "stages": {},
    }
    for stage in (s for s in STAGES if s.split("_")[0] in formats):
        fmt = stage.split("_")[0]
        print(f"  {stage} ...", flush=True)
        report["stages"][stage] = m = measure(stage, folders[fmt], out / "work")
        print(f"  {stage}: {m['status']} {m.get('seconds')} s, peak {m.get('peak_rss_mb')} MB",
              flush=True)  # fmt: skip
    for fmt in formats:
        plain, ingest = report["stages"][f"{fmt}_plain"], report["stages"][f"{fmt}_ingest"]
        if plain["status"] == ingest["status"] == "ok":
            report[f"{fmt}_ingest_over_plain"] = round(ingest["seconds"] / plain["seconds"], 2)
            report[f"{fmt}_ingest_over_plain_cpu"] = _ratio(
                ingest["cpu_seconds"], plain["cpu_seconds"]
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "sources.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "sources.md").write_text(summary(report))
    return report


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def summary(report: dict) -> str:
    lines = [
        f"Source layouts, {report['patients']:,} patients"
        f" (FHIR NDJSON {report['exports']['fhir_mb']:,} MB, OMOP CSV"
        f" {report['exports']['omop_mb']:,} MB)",
        "",
        "| stage | seconds | CPU s | peak RSS MB | load at start |",
        "|---|---|---|---|---|",
    ]
    for stage, m in report["stages"].items():
        lines.append(
            f"| {stage} | {m.get('seconds', m['status'])} | {m.get('cpu_seconds', '')} |"
            f" {m.get('peak_rss_mb', '')} | {m.get('load_average', '')} |"
        )
    for fmt in ("fhir", "omop"):
        if f"{fmt}_ingest_over_plain" in report:
            lines.append(
                f"\n{fmt} ingest / plain read: {report[f'{fmt}_ingest_over_plain']}x wall,"
                f" {report.get(f'{fmt}_ingest_over_plain_cpu')}x CPU"
            )
    return "\n".join(lines) + "\n"


def _size(text: str) -> int:
    text = text.lower().replace("_", "")
    for suffix, factor in (("k", 1000), ("m", 1_000_000)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * factor)
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.bench_sources",
                                description=__doc__.splitlines()[0])  # fmt: skip
    p.add_argument("--patients", type=_size, default=100_000, help="export size (default 100k)")
    p.add_argument("--exports", type=Path, default=DEFAULT_EXPORTS,
                   help=f"where the exports are cached (default {DEFAULT_EXPORTS})")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="results folder")
    p.add_argument("--seed", type=int, default=42, help="generator seed")
    p.add_argument("--formats", default="fhir,omop",
                   help="layouts to measure, comma-separated (default fhir,omop)")  # fmt: skip
    p.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    p.add_argument("--export", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--warehouse", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        return child_main(args.child, args.export, args.warehouse, args.result)
    print(f"{args.patients:,} patients", flush=True)
    formats = tuple(f for f in ("fhir", "omop") if f in args.formats.split(","))
    report = bench(args.patients, args.exports, args.out.resolve(), args.seed, formats)
    print(summary(report))
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
