"""`scalping demo`: the whole pipeline on simulated ticks, job after job, then what each stage made,
printed from the typed records the stages wrote (`scalping_assets.records`)."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TypeVar

import dagster as dg
from pydantic import BaseModel

from scalping_assets.assets.models import MODEL_ASSETS, comparison_rows
from scalping_assets.definitions import build_resources, defs
from scalping_assets.market.summary import tick_summary
from scalping_assets.partitions import DATASETS, tick_partition
from scalping_assets.records import BacktestRecord, DatasetRecord, ExportRecord, GateRecord, ModelRecord
from scalping_assets.settings import Settings

R = TypeVar("R", bound=BaseModel)
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
WALK_FORWARD_FOLDS = 3


@dataclass
class DemoOptions:
    symbols: list[str]
    dataset_symbols: list[str]
    days: list[date]
    dataset: str
    settings: Settings
    skip_models: bool = False


def _instance() -> dg.DagsterInstance:
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    print("DAGSTER_HOME is not set: runs go to a temporary instance (set it to keep them for the UI).")
    return dg.DagsterInstance.ephemeral()


@dataclass
class Pipeline:
    """The code location's jobs run in this process on one instance, one dataset partition."""

    dataset: str
    resources: dict
    instance: dg.DagsterInstance = field(default_factory=_instance)
    failures: int = 0

    def __post_init__(self) -> None:
        if not self.instance.has_dynamic_partition(DATASETS.name, self.dataset):
            self.instance.add_dynamic_partitions(DATASETS.name, [self.dataset])

    def run_days(self, job: str, keys: list[tuple[date, str]]) -> dict:
        """`job` once per (day, symbol): {key: (success, "passed/checks", failed check names)}."""
        outcomes = {}
        for i, (day, symbol) in enumerate(keys, start=1):
            result = self._run(job, tick_partition(day.isoformat(), symbol), {})
            checks = result.get_asset_check_evaluations()
            failed = [c.check_name for c in checks if not c.passed]
            self.failures += len(failed)
            outcomes[(day, symbol)] = (result.success, f"{len(checks) - len(failed)}/{len(checks)}", failed)
            print(f"[{job} {i}/{len(keys)}] {symbol} {day}: {'ok' if result.success and not failed else 'FAILED'}", flush=True)
        return outcomes

    def run(self, job: str, ops: dict | None = None, announce: str = "") -> dg.ExecuteInProcessResult:
        if announce:
            print(f"[{job}] {announce}", flush=True)
        return self._run(job, self.dataset, ops or {})

    def _run(self, job: str, partition, ops: dict) -> dg.ExecuteInProcessResult:
        result = defs.resolve_job_def(job).execute_in_process(
            partition_key=partition,
            instance=self.instance,
            resources=self.resources,
            run_config={**QUIET_LOGS, "ops": ops},
            raise_on_error=False,
        )
        self.failures += not result.success
        return result

    def record(self, asset: str, cls: type[R]) -> R:
        return self.resources["records"].store().load([asset, self.dataset], cls)


def run_demo(options: DemoOptions) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keeps the demo's output readable
    pipeline = Pipeline(options.dataset, build_resources(options.settings))
    keys = [(d, s) for d in options.days for s in options.symbols]
    started = time.perf_counter()
    tick_runs = pipeline.run_days("ticks_job", keys)
    feature_runs = pipeline.run_days("features_job", keys)
    dataset_config = {"symbols": options.dataset_symbols, "walk_forward_folds": WALK_FORWARD_FOLDS}
    dataset = pipeline.run("dataset_job", {"training_dataset": {"config": dataset_config}})
    blocking = [c for c in dataset.get_asset_check_evaluations() if c.severity == dg.AssetCheckSeverity.ERROR]
    pipeline.failures += sum(not c.passed for c in blocking)
    models = evaluation = serving = None
    if dataset.success and not options.skip_models:
        walk = {"xgboost_model": {"config": {"walk_forward": True}}}
        models = pipeline.run("models_job", walk, "training every model family (profile demo), walking xgboost forward")
    if models is not None and models.success:
        evaluation = pipeline.run("evaluation_job", announce="backtesting every candidate on the test span, then the gate")
    if evaluation is not None and evaluation.success and pipeline.record("champion", GateRecord).champion is not None:
        serving = pipeline.run("serving_job", announce="exporting the champion (and challenger) to ONNX, checking parity")
    elapsed = time.perf_counter() - started

    store = pipeline.resources["tick_store"].store()
    _print_days(store, tick_runs, feature_runs)
    _print_dataset(pipeline, dataset)
    if models is not None:
        _print_models(pipeline, models)
    if evaluation is not None:
        _print_evaluation(pipeline, evaluation)
    if serving is not None:
        _print_serving(pipeline, serving, options.settings.data_dir)
    elif evaluation is not None and evaluation.success:
        print("no champion yet: nothing to export or serve")
    n_ticks = sum(tick_summary(store.read_day(s, d))["rows"] for (d, s), (ok, _, _) in tick_runs.items() if ok)
    built = "features, a dataset" + (", models, backtests and a gate decision" if evaluation is not None else "")
    built += ", an ONNX champion" if serving is not None and serving.success else ""
    failures = pipeline.failures
    print(
        f"\n{n_ticks:,} ticks in {len(keys)} partitions under {store.root}, {built} in {elapsed:.1f}s; "
        f"{'all blocking checks passed' if not failures else f'{failures} failure(s)'}."
    )
    print("Browse them: DAGSTER_HOME=$PWD .venv/bin/dagster dev -w workspace.yaml")
    return 1 if failures else 0


def _print_days(store, tick_runs: dict, feature_runs: dict) -> None:
    print(f"\n{'date':<10}  {'symbol':<10} {'ticks':>7} {'first':>12} {'last':>12} {'min':>12} {'max':>12}  checks  features")
    for (day, symbol), (ok, passed, failed) in tick_runs.items():
        f_ok, f_passed, f_failed = feature_runs[(day, symbol)]
        if not ok:
            print(f"{day}  {symbol:<10} materialization failed")
            continue
        s = tick_summary(store.read_day(symbol, day))
        print(
            f"{day}  {symbol:<10} {s['rows']:>7} {s['first_quote']:>12} {s['last_quote']:>12} "
            f"{s['min_quote']:>12} {s['max_quote']:>12}  {passed:<6}  {f_passed if f_ok else 'failed'}"
            + (f" failed: {failed + f_failed}" if failed or f_failed else "")
        )


def _failed(job: str) -> None:
    print(f"\n{job} failed: see the run in the Dagster UI")


def _print_dataset(pipeline: Pipeline, result: dg.ExecuteInProcessResult) -> None:
    if not result.success:
        return _failed("dataset_job")
    made = pipeline.record("training_dataset", DatasetRecord)
    print(f"\ntraining_dataset {made.name}: {', '.join(made.symbols)} {made.start} .. {made.end} -> {made.path}")
    print(f"  rows {made.rows}; dropped {made.dropped}")
    for check in result.get_asset_check_evaluations():
        verdict = "passed" if check.passed else ("FAILED" if check.severity == dg.AssetCheckSeverity.ERROR else "warning")
        why = f" ({check.description})" if not check.passed and check.description else ""
        print(f"  check {check.check_name}: {verdict}{why}")


def _print_models(pipeline: Pipeline, result: dg.ExecuteInProcessResult) -> None:
    if not result.success:
        return _failed("models_job")
    trained = [pipeline.record(a.key.path[-1], ModelRecord) for a in MODEL_ASSETS]
    print(f"\nmodels on the test span (majority class {trained[0].candidates[0].edge['majority_accuracy']:.4f}):")
    print(f"  {'model':<12} {'accuracy':>9} {'log-loss':>9} {'brier':>7} {'edge p':>9}")
    for r in comparison_rows(trained):
        figures = f"{r['accuracy_mean']:>9.4f} {r['log_loss']:>9.4f} {r['brier']:>7.4f} {r['worst_p_value']:>9.2g}"
        print(f"  {r['model']:<12} {figures}")
    walk = pipeline.record("xgboost_model", ModelRecord).walk_forward[0]
    print(f"  xgboost walked forward over {len(walk.folds)} expanding folds:")
    for fold in walk.folds:
        print(
            f"    fold {fold['fold']}: {fold['train_rows']:>7,} training rows, accuracy {fold['accuracy']:.4f} "
            f"vs majority {fold['majority_accuracy']:.4f}, p {fold['p_value']:.2g}"
        )
    summary = walk.aggregate
    print(
        f"    mean {summary['accuracy_mean']:.4f} ± {summary['accuracy_std']:.4f}, "
        f"excess {summary['excess_accuracy_mean']:+.4f}, combined p {summary['combined_p_value']:.2g}"
    )
    print(f"  tracked in MLflow: .venv/bin/mlflow ui --backend-store-uri {pipeline.resources['mlflow_store'].tracking_uri}")


def _print_evaluation(pipeline: Pipeline, result: dg.ExecuteInProcessResult) -> None:
    if not result.success:
        return _failed("evaluation_job")
    report = pipeline.record("backtest_report", BacktestRecord)
    execution = report.execution
    print(
        f"\nbacktests on the test span (enter at p >= {execution['min_confidence']}, TP {execution['take_profit']} / "
        f"SL {execution['stop_loss']} {execution['unit']}, timeout {execution['max_hold_ticks']} ticks, "
        f"{execution['instrument']} costs at stake {execution['stake']:g}; {report.trials} effective trials in MLflow):"
    )
    for symbol, why in report.not_costed.items():
        print(f"  {symbol}: not backtested, not cleared ({why})")
    gate = pipeline.record("champion", GateRecord)
    header = f"{'trades':>7} {'win rate':>8} {'expectancy':>10} {'Sharpe/yr':>9} {'max DD %':>8} {'p rand':>7} {'DSR':>5}"
    print(f"  {'candidate':<18} {'symbol':<10} {header}  gate")
    for r in report.results:
        for symbol, summary in {**r.per_symbol, "all": r.summary}.items():
            m = {k: (math.nan if v is None else v) for k, v in summary.items()}
            verdict = "" if symbol == "all" else ("cleared" if symbol in gate.cleared[r.candidate.name] else "refused")
            print(
                f"  {r.candidate.name:<18} {symbol:<10} {m['trades']:>7,.0f} {m['win_rate']:>8.3f} {m['expectancy']:>10.4f} "
                f"{m['sharpe_annualised']:>9.1f} {m['max_drawdown_pct']:>8.2f} {m['p_value_vs_random']:>7.3f} "
                f"{m['deflated_sharpe']:>5.2f}  {verdict}"
            )
    print(f"gate (per symbol, p-values Holm-adjusted over a candidate's symbols): {gate.message}")
    named = [r.candidate.name for r in report.results if r.candidate.version == gate.champion]
    if named:
        print(f"  champion v{gate.champion} ({named[0]}) is served for: {', '.join(gate.cleared[named[0]])}")
    print(f"reports: {Path(report.results[0].html).parent}")


def _print_serving(pipeline: Pipeline, result: dg.ExecuteInProcessResult, data_dir: Path) -> None:
    if not result.success:
        return _failed("serving_job")
    exported = pipeline.record("onnx_model", ExportRecord)
    print(f"\nONNX export of {exported.registered_model} (parity on the test span):")
    print(f"  {'alias':<22} {'FP32 max |dp|':>13} {'INT8 agreement':>14} {'FP32 p50 us':>11} {'INT8 p50 us':>11}  served")
    for alias, e in exported.exports.items():
        latency = e["latency_us"]
        agreement = "-" if e["int8_agreement"] is None else f"{e['int8_agreement']:.4f}"
        int8 = f"{latency['int8']['p50']:.0f}" if "int8" in latency else "-"
        print(
            f"  {alias:<22} {e['fp32_max_abs_diff']:>13.2g} {agreement:>14} {latency['fp32']['p50']:>11.0f} {int8:>11}  "
            f"{e['precision']}"
        )
    for check in result.get_asset_check_evaluations():
        print(f"  check {check.check_name}: {'passed' if check.passed else 'FAILED'}")
    print(f"Serve it: SCALPING_DATA_DIR={data_dir} .venv/bin/bentoml serve serving.service:Scalping  (README, Serving)")
