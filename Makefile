# The README's two commands live here: `make demo` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup test bench demo lint clean

# The example data covers 2024-01-01 .. 2024-03-31; the demo pins the clock to its end.
DEMO_NOW ?= 2024-04-01T00:00:00Z

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dagster,postgres,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

bench: $(STAMP)
	$(BIN)/python bench/intervals.py
	$(BIN)/python bench/state.py
	$(BIN)/python bench/runner.py
	$(BIN)/python bench/cli.py

demo: $(STAMP)
	$(BIN)/python example_project/generate_data.py
	SEEKNAL_NOW=$(DEMO_NOW) $(BIN)/seeknal run --backfill --project-path example_project
	SEEKNAL_NOW=$(DEMO_NOW) $(BIN)/seeknal intervals show --project-path example_project

lint: $(STAMP)
	$(BIN)/ruff check seeknal_core seeknal_dagster tests bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
