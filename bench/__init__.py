"""The benchmark and its pandas baseline (docs/benchmark.md): tooling beside the product, not
part of the installed package. Run from the repository root: `python -m bench.bench`."""
