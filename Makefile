# Everything runs from the project's own virtual environment, created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)
# Where `make demo` and `make dev` keep MLflow's store and artifacts (SCALPING_DATA_DIR, default data/).
MLFLOW_DATA := $(abspath $(or $(SCALPING_DATA_DIR),data))

.PHONY: demo live-demo rehearsal test lint bench dev mlflow monitor serve symbols clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed  ## simulated ticks for a few symbols and days, materialized and checked
	$(BIN)/scalping demo

live-demo: $(BIN)/.installed  ## the live loop in minutes: local feed, service, monitoring, an alert, a retrain served (data/live-demo)
	$(BIN)/python -m scalping_assets.testing.live_demo --data-dir data/live-demo --fresh

rehearsal: $(BIN)/.installed  ## the Compose stack's processes natively on PostgreSQL, with faults (data/rehearsal)
	$(BIN)/python -m scalping_assets.testing.rehearsal --work-dir data/rehearsal

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
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_baseline.py
	$(BIN)/python benchmarks/bench_gate.py
	$(BIN)/python benchmarks/bench_drift.py
	$(BIN)/python benchmarks/bench_serving.py
	$(BIN)/python benchmarks/bench_live.py
	$(BIN)/python benchmarks/bench_ab.py
	$(BIN)/python benchmarks/bench_paper.py

dev: $(BIN)/.installed  ## Dagster UI on http://127.0.0.1:3000
	$(BIN)/dagster dev -w workspace.yaml

mlflow: $(BIN)/.installed  ## MLflow UI on http://127.0.0.1:5000 (MLFLOW_UI_URL's default): runs, curves, backtests, registry
	@# The store and artifact folder the assets write to; no GenAI job runner (seven processes browsing does not need).
	mkdir -p $(MLFLOW_DATA)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri sqlite:///$(MLFLOW_DATA)/mlflow.db \
		--default-artifact-root $(MLFLOW_DATA)/mlartifacts --host 127.0.0.1 --port 5000

monitor: $(BIN)/.installed  ## Evidently UI on http://127.0.0.1:8000: drift history per registered model (drift_report's workspace)
	mkdir -p $(MLFLOW_DATA)/monitoring/evidently
	$(BIN)/evidently ui --workspace $(MLFLOW_DATA)/monitoring/evidently --host 127.0.0.1 --port 8000

serve: $(BIN)/.installed  ## the registry's champion over HTTP on http://127.0.0.1:3100 (after make demo)
	$(BIN)/bentoml serve serving.service:Scalping --port 3100

symbols: $(BIN)/.installed
	$(BIN)/scalping symbols

clean:  ## local data and Dagster runs (keeps the environment)
	rm -rf data storage history schedules logs .logs_queue .nux .telemetry
