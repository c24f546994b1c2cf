# The README's two commands live here: `make demo` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup test bench demo dagster lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dagster,postgres,spark,dagster-spark,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

bench: $(STAMP)
	$(BIN)/python bench/intervals.py
	$(BIN)/python bench/state.py
	$(BIN)/python bench/runner.py
	$(BIN)/python bench/cli.py
	$(BIN)/python bench/parallel.py
	$(BIN)/python bench/dagster_adapter.py

# The example data runs up to the last finished hour (generate_data.py anchors it on the clock
# and sets the project's start), so the demo runs at the real time.
demo: $(STAMP)
	$(BIN)/python example_project/generate_data.py
	$(BIN)/seeknal run --backfill --project-path example_project
	$(BIN)/seeknal intervals show --project-path example_project

# Dagster's UI on http://127.0.0.1:3000 over example_project (DAGSTER_HOME in .dagster/,
# with the seeknal_duckdb pool limited to one writer).
dagster: $(STAMP)
	$(BIN)/python example_project/generate_data.py
	mkdir -p .dagster
	test -f .dagster/dagster.yaml || printf 'concurrency:\n  pools:\n    default_limit: 1\n' > .dagster/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/.dagster $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

lint: $(STAMP)
	$(BIN)/ruff check seeknal_core seeknal_dagster tests bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
