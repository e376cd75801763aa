"""The Dagster code location: what it defines, and real materializations on a SQLite instance."""

import os
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import pytest

from scalping_assets.assets.canary import LIVE_CHECKS
from scalping_assets.assets.ticks import ticks
from scalping_assets.checks import tick_checks
from scalping_assets.definitions import build_resources, defs
from scalping_assets.market.quality import TICK_CHECKS
from scalping_assets.market.symbols import catalog, simulated_symbols
from scalping_assets.partitions import DAILY, DATASETS, TICK_PARTITIONS, tick_partition
from scalping_assets.resources import SimulatorResource
from scalping_assets.settings import Settings
from scalping_assets.testing.dagster_ui import dagster_webserver

from .conftest import REPO_ROOT

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def test_definitions_hold_every_asset_check_job_and_schedule():
    assert {spec.key.path[0] for spec in defs.resolve_all_asset_specs()} == {
        "ticks",
        "features",
        "training_dataset",
        "lstm_model",
        "cnn_model",
        "transformer_model",
        "xgboost_model",
        "ensemble_model",
        "model_comparison",
        "backtest_report",
        "champion",
        "onnx_model",
        "prediction_log",
        "live_performance",
        "drift_report",
        "paper_parity",
        "ab_decision",
    }
    assert defs.resolve_job_def("serving_job").asset_layer.executable_asset_keys == {dg.AssetKey("onnx_model")}
    assert set(defs.resolve_job_def("evaluation_job").asset_layer.executable_asset_keys) >= {
        dg.AssetKey("backtest_report"),
        dg.AssetKey("champion"),
    }
    check_keys = defs.resolve_asset_graph().asset_check_keys
    tick_check_names = {key.name for key in check_keys if key.asset_key == dg.AssetKey("ticks")}
    assert tick_check_names == set(TICK_CHECKS)
    assert {key.name for key in check_keys if key.asset_key == dg.AssetKey("training_dataset")} == {
        "dataset_finite",
        "dataset_splits_disjoint",
        "dataset_class_balance",
    }
    for job in ("ticks_job", "features_job", "paper_parity_job"):
        assert defs.resolve_job_def(job).partitions_def == TICK_PARTITIONS
    for job in ("dataset_job", "models_job", "evaluation_job", "serving_job"):
        assert defs.resolve_job_def(job).partitions_def == DATASETS, f"{job} runs one dataset at a time"
    monitoring = {
        key.name for key in check_keys if key.asset_key.path[0] in ("prediction_log", "live_performance", "drift_report")
    }
    assert monitoring == {
        "prediction_log_complete",
        "no_significant_degradation",
        "latency_p99_within_target",
        "drift_share_within_threshold",
    }
    sensors = {s.name for s in defs.sensors}
    assert sensors >= {"collected_days_sensor", "alert_sensor", "retrain_sensor", "live_performance_sensor", "canary_sensor"}
    assert defs.resolve_job_def("ab_decision_job").partitions_def == DAILY
    assert defs.resolve_schedule_def("daily_ab_decision_schedule").cron_schedule == "0 1 * * *"
    # A failed live-loop check during a canary step rolls the canary back: every one of them is watched.
    assert {key for key in check_keys if key.asset_key.path[0] in ("prediction_log", "live_performance", "drift_report")} <= set(
        LIVE_CHECKS
    )
    schedule = defs.resolve_schedule_def("daily_ticks_schedule")
    assert schedule.cron_schedule == "15 0 * * *" and schedule.execution_timezone == "UTC"
    assert set(defs.resolve_all_job_defs()[0].resource_defs) >= {"tick_store", "simulator"}
    dims = {d.name: d.partitions_def for d in TICK_PARTITIONS.partitions_defs}
    assert set(dims["symbol"].get_partition_keys()) == set(catalog())
    assert dims["date"].get_first_partition_key() == "2026-01-01"


def test_code_location_loads_as_dagster_dev_would(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(REPO_ROOT)}
    env.pop("DAGSTER_PG_URL", None)
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All code locations passed validation" in done.stdout + done.stderr


def _evaluate(schedule: dg.ScheduleDefinition, at: datetime):
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, repository_def=defs.get_repository_def(), scheduled_execution_time=at
        )
        return schedule.evaluate_tick(context)


def test_schedule_requests_the_day_that_just_ended_for_every_simulated_symbol():
    schedule = defs.resolve_schedule_def("daily_ticks_schedule")
    requests = _evaluate(schedule, datetime(2026, 3, 5, 0, 15, tzinfo=UTC)).run_requests
    assert {r.partition_key.keys_by_dimension["symbol"] for r in requests} == set(simulated_symbols())
    assert {r.partition_key.keys_by_dimension["date"] for r in requests} == {"2026-03-04"}
    assert len({r.run_key for r in requests}) == len(requests)
    assert schedule.job_name == "daily_job"
    assert defs.resolve_job_def("daily_job").asset_layer.executable_asset_keys >= {dg.AssetKey("ticks"), dg.AssetKey("features")}
    assert _evaluate(schedule, datetime(2026, 1, 1, 0, 15, tzinfo=UTC)).skip_message


def test_materialization_writes_the_partition_and_every_check_passes(tmp_path):
    resources = build_resources(Settings(data_dir=tmp_path, seed=5))
    key = tick_partition("2026-01-03", "BOOM1000")
    with dg.instance_for_test() as instance:
        job = defs.resolve_job_def("ticks_job")
        result = job.execute_in_process(partition_key=key, instance=instance, resources=resources, run_config=QUIET)
        assert result.success
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {name: True for name in TICK_CHECKS}
        event = instance.get_latest_materialization_event(dg.AssetKey("ticks"))
        materialization = event.asset_materialization
        assert materialization.partition == key
        assert materialization.metadata["rows"].value == 86_400
        assert materialization.metadata["price_plot"].value.startswith("![price](data:image/png;base64,")
        path = materialization.metadata["path"].value
        first = pd.read_parquet(path)
        # Re-materializing the partition replaces the file; the same seed gives the same ticks.
        again = job.execute_in_process(partition_key=key, instance=instance, resources=resources, run_config=QUIET)
        assert again.success
        assert pd.read_parquet(path).equals(first) and len(first) == 86_400


class DuplicatingSimulator(SimulatorResource):
    """A broken feed: repeats a stretch of ticks."""

    def day(self, symbol, day):
        frame = super().day(symbol, day)
        return pd.concat([frame.iloc[:1000], frame.iloc[900:]], ignore_index=True)


def test_broken_ticks_fail_their_checks_and_block_the_run(tmp_path):
    resources = {**build_resources(Settings(data_dir=tmp_path)), "simulator": DuplicatingSimulator()}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [ticks, tick_checks],
            partition_key=tick_partition("2026-01-02", "R_25"),
            resources=resources,
            instance=instance,
            run_config=QUIET,
            raise_on_error=False,
        )
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["no_duplicate_epochs"].passed and not checks["epochs_strictly_increasing"].passed
    assert checks["no_duplicate_epochs"].metadata["duplicates"].value == 100
    assert checks["finite_quotes"].passed and checks["quotes_on_pip_grid"].passed


def test_unsimulated_symbol_fails_with_a_clear_message(tmp_path):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [ticks],
            partition_key=tick_partition("2026-01-02", "RB100"),
            resources=build_resources(Settings(data_dir=tmp_path)),
            instance=instance,
            run_config=QUIET,
            raise_on_error=False,
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "RB100 has no published generation formula" in failure.step_failure_data.error.to_string()


@pytest.mark.parametrize("bad", ["2025-12-31|R_10", "2026-01-02|NOPE"])
def test_out_of_range_partitions_are_refused(bad, tmp_path):
    day, symbol = bad.split("|")
    with dg.instance_for_test() as instance, pytest.raises(dg.DagsterUnknownPartitionError):
        dg.materialize(
            [ticks],
            partition_key=tick_partition(day, symbol),
            resources=build_resources(Settings(data_dir=tmp_path)),
            instance=instance,
        )


UI_QUERY = """{ assetNodes { assetKey { path } partitionDefinition { type name }
  partitionKeysByDimension { name partitionKeys } } }"""


def test_the_ui_shows_the_dataset_dimension_on_models_evaluation_and_serving(tmp_path):
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:  # the UI's instance: DAGSTER_HOME=tmp_path
        instance.add_dynamic_partitions("dataset", ["default", "wide"])
    with dagster_webserver(tmp_path, tmp_path / "webserver.log") as query:
        nodes = {"/".join(n["assetKey"]["path"]): n for n in query(UI_QUERY)["assetNodes"]}
    per_dataset = {"training_dataset", "ensemble_model", "model_comparison", "backtest_report", "champion", "onnx_model"}
    per_dataset |= {f"{kind}_model" for kind in ("lstm", "cnn", "transformer", "xgboost")}
    for name in per_dataset:
        assert nodes[name]["partitionDefinition"] == {"type": "DYNAMIC", "name": "dataset"}, name
        assert nodes[name]["partitionKeysByDimension"] == [{"name": "default", "partitionKeys": ["default", "wide"]}], name
    assert nodes["features"]["partitionDefinition"]["type"] == "MULTIPARTITIONED"
