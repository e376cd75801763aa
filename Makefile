# Everything runs from the project's own virtual environment, created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)

.PHONY: demo test lint bench dev serve symbols clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed  ## simulated ticks for a few symbols and days, materialized and checked
	$(BIN)/scalping demo

test: lint  ## lint, then the whole test suite
	$(BIN)/pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(BIN)/.installed  ## benchmark tables
	$(BIN)/python benchmarks/bench_simulator.py
	$(BIN)/python benchmarks/bench_collector.py
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_backtest.py
	$(BIN)/python benchmarks/bench_baseline.py
	$(BIN)/python benchmarks/bench_gate.py
	$(BIN)/python benchmarks/bench_serving.py

dev: $(BIN)/.installed  ## Dagster UI on http://127.0.0.1:3000
	$(BIN)/dagster dev -w workspace.yaml

serve: $(BIN)/.installed  ## the registry's champion over HTTP on http://127.0.0.1:3100 (after make demo)
	$(BIN)/bentoml serve serving.service:Scalping --port 3100

symbols: $(BIN)/.installed
	$(BIN)/scalping symbols

clean:  ## local data and Dagster runs (keeps the environment)
	rm -rf data storage history schedules logs .logs_queue .nux .telemetry
