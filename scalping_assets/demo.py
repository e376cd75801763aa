"""`scalping demo`: the whole pipeline on simulated ticks, job after job, then what each stage made,
printed from the typed records the stages wrote (`scalping_assets.records`).

The runs belong to the code location of `workspace.yaml`, as runs launched from the UI or by the
daemon do: each is created from the location's job as `dagster job launch` creates one (the job's
origin in the workspace, its snapshot, execution plan and partition tags), then executed in this
process, as Dagster's run worker executes a launched run. So the Jobs pages, the Overview timeline
and the assets' history show them. (Launching through the instance's run launcher would spawn a run
worker per run that imports the code location again, about 10 s each over 52 runs.)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TypeVar

import dagster as dg
from dagster._cli.job import _create_run  # what `dagster job launch` creates its run with
from dagster._core.execution.api import execute_run  # what the run worker executes a launched run with
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.remote_representation.code_location import CodeLocation
from dagster._core.remote_representation.external import RemoteRepository
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget, WorkspaceFileTarget
from dagster._utils.hosted_user_process import recon_job_from_origin
from pydantic import BaseModel

from scalping_assets.assets.models import MODEL_ASSETS, comparison_rows
from scalping_assets.market.summary import tick_summary
from scalping_assets.models.config import profile_config
from scalping_assets.partitions import DATASETS, tick_partition
from scalping_assets.records import BacktestRecord, DatasetRecord, ExportRecord, GateRecord, ModelRecord
from scalping_assets.settings import Settings

R = TypeVar("R", bound=BaseModel)
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
WALK_FORWARD_FOLDS = 3
# The stack's meta-learner (a logistic regression on 12 probabilities) is fitted on as many held-out
# windows per block as each base model trains on: predicting all of a block's ~150,000 windows with
# every base took more of the demo than training the zoo.
OOF_WINDOWS = profile_config("demo", "xgboost").max_train_windows
WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"  # what `make dev` serves
OUTCOME_EVENTS = {dg.DagsterEventType.ASSET_CHECK_EVALUATION, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}


@dataclass
class DemoOptions:
    symbols: list[str]
    dataset_symbols: list[str]
    days: list[date]
    dataset: str
    settings: Settings
    skip_models: bool = False


def code_location_env(settings: Settings) -> dict[str, str]:
    """The variables the code location builds its resources from (`definitions.build_resources`):
    the demo's data folder and simulator seed, as they would be set for `dagster dev`."""
    return {"SCALPING_DATA_DIR": str(settings.data_dir), "SCALPING_SEED": str(settings.seed)}


def dagster_instance() -> dg.DagsterInstance:
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    print("DAGSTER_HOME is not set: runs go to a temporary instance, gone when the demo ends (`make demo` sets it).")
    return dg.DagsterInstance.ephemeral()


@contextmanager
def code_location(instance: dg.DagsterInstance) -> Iterator[CodeLocation]:
    """The code location of `workspace.yaml` (its name, module and jobs, as the UI loads it), loaded in
    this process rather than behind a code server."""
    (origin,) = WorkspaceFileTarget([str(WORKSPACE)]).create_origins()
    target = InProcessWorkspaceLoadTarget(
        [InProcessCodeLocationOrigin(origin.loadable_target_origin, container_image=None, location_name=origin.location_name)]
    )
    with WorkspaceProcessContext(instance, target, version=dg.__version__, read_only=False) as context:
        yield context.create_request_context().get_code_location(origin.location_name)  # raises why it did not load


def _error_line(error) -> str:
    while error.cause is not None:  # the exception the code raised, not Dagster's wrapper around it
        error = error.cause
    return (error.message.strip().splitlines() or [error.cls_name])[0]


@dataclass
class Outcome:
    """What a run left in the instance, as the UI shows it: success, check evaluations, why it failed."""

    job: str
    run_id: str
    success: bool
    checks: list[dg.AssetCheckEvaluation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "step: first line of the error", or the run's

    @classmethod
    def read(cls, instance: dg.DagsterInstance, job: str, run_id: str) -> Outcome:
        outcome = cls(job, run_id, instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS)
        run_errors = []
        for entry in instance.all_logs(run_id, of_type=OUTCOME_EVENTS):
            event = entry.dagster_event
            data = event.event_specific_data
            if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                outcome.checks.append(data)
            elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
                outcome.errors.append(f"{entry.step_key}: {_error_line(data.error) if data.error else event.message}")
            else:
                run_errors.append(_error_line(data.error) if data and data.error else event.message)
        outcome.errors = outcome.errors or run_errors  # a run that failed before any step: the run's reason
        return outcome

    def report(self) -> None:
        for error in self.errors:
            print(f"    {error}", flush=True)


@dataclass
class Pipeline:
    """The code location's jobs, run one after another on one instance, for one dataset partition."""

    dataset: str
    resources: dict  # the demo's own view of the data (records, tick store): the code location's resources
    instance: dg.DagsterInstance
    location: CodeLocation
    failures: int = 0
    repository: RemoteRepository = field(init=False)

    def __post_init__(self) -> None:
        (self.repository,) = self.location.get_repositories().values()
        if not self.instance.has_dynamic_partition(DATASETS.name, self.dataset):
            self.instance.add_dynamic_partitions(DATASETS.name, [self.dataset])

    def run_days(self, job: str, keys: list[tuple[date, str]], ops: dict | None = None) -> dict:
        """`job` once per (day, symbol): {key: (success, "passed/checks", failed check names)}."""
        outcomes = {}
        for i, (day, symbol) in enumerate(keys, start=1):
            result = self.execute(job, tick_partition(day.isoformat(), symbol), ops or {})
            failed = [c.check_name for c in result.checks if not c.passed]
            self.failures += len(failed)
            outcomes[(day, symbol)] = (result.success, f"{len(result.checks) - len(failed)}/{len(result.checks)}", failed)
            print(f"[{job} {i}/{len(keys)}] {symbol} {day}: {'ok' if result.success and not failed else 'FAILED'}", flush=True)
            result.report()
        return outcomes

    def run(self, job: str, ops: dict | None = None, announce: str = "") -> Outcome:
        if announce:
            print(f"[{job}] {announce}", flush=True)
        result = self.execute(job, self.dataset, ops or {})
        if not result.success:
            print(f"[{job}] FAILED (run {result.run_id})", flush=True)
            result.report()
        return result

    def execute(self, job: str, partition: str, ops: dict, tags: dict | None = None) -> Outcome:
        """One run of the code location's `job` for `partition`: created as `dagster job launch` creates
        it, with the partition's tags as the UI's launchpad sets them (and `tags`), then executed here."""
        repo = self.repository
        partition_tags = self.location.get_partition_tags_from_repo(repo.handle, job, str(partition), self.instance)
        if not hasattr(partition_tags, "tags"):  # PartitionExecutionErrorSnap
            raise RuntimeError(f"{job}, partition {partition}: {_error_line(partition_tags.error)}")
        run = _create_run(
            instance=self.instance,
            code_location=self.location,
            remote_repo=repo,
            remote_job=repo.get_full_job(job),
            run_config={**QUIET_LOGS, "ops": ops},
            tags={**partition_tags.tags, **(tags or {})},
            op_selection=None,
            run_id=None,
        )
        execute_run(recon_job_from_origin(run.job_code_origin), run, self.instance)
        result = Outcome.read(self.instance, job, run.run_id)
        self.failures += not result.success
        return result

    def record(self, asset: str, cls: type[R]) -> R:
        return self.resources["records"].store().load([asset, self.dataset], cls)


def run_demo(options: DemoOptions) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keeps the demo's output readable
    os.environ.update(code_location_env(options.settings))  # before the code location is first imported
    from scalping_assets.definitions import build_resources, defs

    resources = build_resources(options.settings)
    if defs.resources["tick_store"].root != resources["tick_store"].root:
        raise RuntimeError(
            f"the code location was loaded before the demo set SCALPING_DATA_DIR: it writes under "
            f"{defs.resources['tick_store'].root}, the demo reads {resources['tick_store'].root}"
        )
    instance = dagster_instance()
    with code_location(instance) as location:
        return _run_stages(options, Pipeline(options.dataset, resources, instance, location))


def _run_stages(options: DemoOptions, pipeline: Pipeline) -> int:
    keys = [(d, s) for d in options.days for s in options.symbols]
    started = time.perf_counter()
    tick_runs = pipeline.run_days("ticks_job", keys)
    feature_runs = pipeline.run_days("features_job", keys)
    dataset_config = {"symbols": options.dataset_symbols, "walk_forward_folds": WALK_FORWARD_FOLDS}
    dataset = pipeline.run("dataset_job", {"training_dataset": {"config": dataset_config}})
    blocking = [c for c in dataset.checks if c.severity == dg.AssetCheckSeverity.ERROR]
    pipeline.failures += sum(not c.passed for c in blocking)
    models = evaluation = serving = None
    if dataset.success and not options.skip_models:
        walk, stack = {"walk_forward": True}, {"max_oof_windows": OOF_WINDOWS}
        ops = {"xgboost_model": {"config": walk}, "ensemble_model": {"config": stack}}
        models = pipeline.run("models_job", ops, "training every model family (profile demo), walking xgboost forward")
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
    print(_browse_hint())
    return 1 if failures else 0


def _browse_hint() -> str:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return "The runs were in a temporary instance: set DAGSTER_HOME (`make demo` does) to browse them in the Dagster UI."
    at_root = Path(home).resolve() == WORKSPACE.parent
    where = "make dev" if at_root else f"DAGSTER_HOME={home} .venv/bin/dagster dev -w {WORKSPACE}"
    return f"Browse them (Jobs, Overview, Assets): {where}"


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


def _failed(result: Outcome) -> None:
    why = f": {result.errors[0]}" if result.errors else ""
    print(f"\n{result.job} failed{why} (run {result.run_id} in the Dagster UI)")


def _print_dataset(pipeline: Pipeline, result: Outcome) -> None:
    if not result.success:
        return _failed(result)
    made = pipeline.record("training_dataset", DatasetRecord)
    print(f"\ntraining_dataset {made.name}: {', '.join(made.symbols)} {made.start} .. {made.end} -> {made.path}")
    print(f"  rows {made.rows}; dropped {made.dropped}")
    for check in result.checks:
        verdict = "passed" if check.passed else ("FAILED" if check.severity == dg.AssetCheckSeverity.ERROR else "warning")
        why = f" ({check.description})" if not check.passed and check.description else ""
        print(f"  check {check.check_name}: {verdict}{why}")


def _print_models(pipeline: Pipeline, result: Outcome) -> None:
    if not result.success:
        return _failed(result)
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
    # Settings(): the demo's data folder (exported for the code location); the resource may hold an EnvVar.
    print(f"  tracked in MLflow: .venv/bin/mlflow ui --backend-store-uri {Settings().mlflow_uri()}")


def _print_evaluation(pipeline: Pipeline, result: Outcome) -> None:
    if not result.success:
        return _failed(result)
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


def _print_serving(pipeline: Pipeline, result: Outcome, data_dir: Path) -> None:
    if not result.success:
        return _failed(result)
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
    for check in result.checks:
        print(f"  check {check.check_name}: {'passed' if check.passed else 'FAILED'}")
    print(f"Serve it: SCALPING_DATA_DIR={data_dir} .venv/bin/bentoml serve serving.service:Scalping  (README, Serving)")
