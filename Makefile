# The commands a user and CI run. `make demo` and `make test` install first if needed.
PYTHON ?= python3.11
VENV := .venv
UV_VERSION := 0.13.9
UV := .tools/bin/uv
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90

.PHONY: install install-spark demo test test-spark lint format bench notebooks clean

install: $(VENV)/.installed $(PREFECT_HOME)/prefect.db

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: pyproject.toml uv.lock $(UV)
	UV_PYTHON=$(PYTHON) $(UV) sync --frozen --all-groups --inexact
	touch $@

# Prefect's local database (flow runs, states, logs), created and migrated once at install:
# left to the first flow run, its ~110 migrations cost the temporary server about 15 CPU
# seconds, beyond its start-up timeout on a loaded machine (docs/benchmark.md, "Time to
# first result"). Again after `make clean` or a new lock file (a new Prefect may migrate).
$(PREFECT_HOME)/prefect.db: $(VENV)/.installed
	$(VENV)/bin/prefect server database upgrade -y

# The optional Spark engine (redflags run --engine spark): pyspark from the lock file.
install-spark: install
	UV_PYTHON=$(PYTHON) $(UV) sync --frozen --all-groups --inexact --extra spark

demo: install
	$(VENV)/bin/redflags demo --out demo

# Flow runs started by the tests keep their states but do not send their log lines to
# Prefect's database (hundreds of short flows; the tests that check logs turn it on).
# `make demo` and `redflags run` keep their logs in Prefect, as issue 16 asks.
test test-spark: export PREFECT_LOGGING_TO_API_ENABLED := false

test: install
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile -m "not spark"

# The Spark tests: local mode, and a standalone master with two workers on 127.0.0.1
# started and stopped by tests/integration/test_spark_cluster.py (skipped with a reason without Java).
test-spark: install-spark
	$(VENV)/bin/python -m pytest -m spark

lint: install
	$(VENV)/bin/ruff check pipelines tests bench
	$(VENV)/bin/ruff format --check pipelines tests bench

format: install
	$(VENV)/bin/ruff format pipelines tests bench
	$(VENV)/bin/ruff check --fix pipelines tests bench

# Jupyter refuses to start as root without --allow-root (containers often run as root).
JUPYTER_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

notebooks: install
	REDFLAGS_WAREHOUSE=$${REDFLAGS_WAREHOUSE:-demo/warehouse.duckdb} $(VENV)/bin/jupyter notebook $(JUPYTER_ROOT) notebooks/

bench: install
	$(VENV)/bin/python -m bench.bench

clean:
	rm -rf demo .prefect .pytest_cache
