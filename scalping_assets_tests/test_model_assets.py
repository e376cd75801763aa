"""The model assets materialized for real: MLflow runs under one parent, registered versions, the comparison."""

from datetime import date

import dagster as dg
import numpy as np
import pytest

from scalping_assets.assets.backtest import backtest_report, champion
from scalping_assets.assets.models import BASE_MODEL_ASSETS, MODEL_ASSETS
from scalping_assets.definitions import build_resources, defs
from scalping_assets.features.dataset import Dataset, DatasetSpec, build_dataset, save_walk_forward, walk_forward_datasets
from scalping_assets.market.simulator import simulator
from scalping_assets.models.config import TrainConfig
from scalping_assets.models.ensemble import FittedStack, StackedEnsemble
from scalping_assets.models.pipeline import RAW_PREDICTIONS_ARTIFACT, load_trained
from scalping_assets.models.tracking import CHAMPION, PARENT_TAG
from scalping_assets.records import BacktestRecord, DatasetRecord, ExportRecord, GateRecord, ModelRecord
from scalping_assets.schedules import champion_promoted_sensor
from scalping_assets.settings import Settings
from serving.bundle import OnnxPredictor

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
DATASET = "sig"
FAST = {"epochs": 1, "max_train_windows": 1_000, "seeds": [0, 1]}
OOF_WINDOWS = 1_000  # per block of the stack's two


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    resources = build_resources(Settings(data_dir=data, seed=3))
    spec = DatasetSpec(symbols=["SIG_AR1"], start=date(2026, 1, 2), end=date(2026, 1, 2), sequence_length=20)
    ticks = simulator("SIG_AR1", 3).days(date(2026, 1, 1), date(2026, 1, 2))
    for day in (date(2026, 1, 1), date(2026, 1, 2)):
        resources["tick_store"].store().write_day("SIG_AR1", day, simulator("SIG_AR1", 3).day(day))
    dataset = build_dataset(spec, {"SIG_AR1": ticks})
    folder = dataset.save(resources["dataset_store"].folder(DATASET))
    save_walk_forward(folder, walk_forward_datasets(spec, {"SIG_AR1": ticks}, folds=2))
    meta = dataset.meta  # the record training_dataset would have written
    record = DatasetRecord(name=DATASET, path=str(folder), fingerprint=meta.fingerprint, symbols=spec.symbols,
                           start=spec.start, end=spec.end, rows=meta.rows, dropped=meta.dropped)  # fmt: skip
    resources["records"].store().save(["training_dataset", DATASET], record)
    config = {"ops": {asset.key.path[-1]: {"config": FAST} for asset in BASE_MODEL_ASSETS}}
    config["ops"]["xgboost_model"]["config"] = FAST | {"walk_forward": True}
    config["ops"]["ensemble_model"] = {"config": {"max_oof_windows": OOF_WINDOWS}}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", [DATASET])
        result = defs.resolve_job_def("models_job").execute_in_process(
            instance=instance, resources=resources, run_config={**QUIET, **config}, partition_key=DATASET
        )
        evaluation = defs.resolve_job_def("evaluation_job").execute_in_process(
            instance=instance,
            resources=resources,
            run_config={**QUIET, "ops": {"backtest_report": {"config": {"draws": 50}}}},
            partition_key=DATASET,
        )
        yield result, resources, evaluation, instance


def test_every_model_family_trains_logs_and_registers(run):
    result, resources, *_ = run
    assert result.success
    tracker = resources["mlflow_store"].tracker()
    parents = tracker.client.search_runs([tracker.experiment_id], f"tags.{PARENT_TAG} = '{result.run_id}'")
    assert len(parents) == 1, "one parent run per Dagster run"
    children = tracker.client.search_runs([tracker.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    walks = [r for r in children if r.data.tags.get("walk_forward") == "true"]
    children = [r for r in children if r not in walks]
    assert sorted(r.info.run_name for r in walks) == ["xgboost-seed0-walk-forward", "xgboost-seed1-walk-forward"]
    assert all(len(tracker.client.get_metric_history(r.info.run_id, "wf_accuracy")) == 2 for r in walks)
    assert sorted(r.data.tags["model_type"] for r in children) == sorted(
        ["lstm", "cnn", "transformer", "xgboost"] * 2 + ["ensemble"]
    )
    for child in children:
        assert "test/accuracy" in child.data.metrics
        assert ("oof_rows" if child.data.tags["model_type"] == "ensemble" else "curves/val_loss") in child.data.metrics
        assert child.info.end_time - child.info.start_time < parents[0].info.end_time - parents[0].info.start_time
        assert child.data.tags["git_commit"]
    versions = tracker.client.search_model_versions("name = 'scalping-SIG_AR1-h10'")
    assert len(versions) == 9
    loaded = tracker.load_model("pyfunc", f"models:/scalping-SIG_AR1-h10/{versions[0].version}")
    assert loaded.metadata.signature is not None


def test_the_stack_reads_what_its_bases_logged_and_that_is_what_they_predict(run):
    result, resources, *_ = run
    records, tracker = resources["records"].store(), resources["mlflow_store"].tracker()
    dataset = Dataset.load(records.load(["training_dataset", DATASET], DatasetRecord).path)
    ensemble = records.load(["ensemble_model", DATASET], ModelRecord).candidates[0]
    run_data = tracker.client.get_run(ensemble.run_id).data
    assert run_data.params["max_oof_windows"] == str(OOF_WINDOWS) and run_data.metrics["oof_rows"] == 2 * OOF_WINDOWS
    firsts = [records.load([a.key.path[-1], DATASET], ModelRecord).candidates[0] for a in BASE_MODEL_ASSETS]
    bases = [load_trained(tracker, TrainConfig(**c.config), c.model_uri) for c in firsts]
    stack = FittedStack(StackedEnsemble(tracker.load_model("sklearn", ensemble.model_uri)), bases)
    # The stack was calibrated and scored on its bases' logged predictions; the bases loaded back from
    # MLflow predicting every window again give the same probabilities, to the bit.
    logged = tracker.load_arrays(ensemble.run_id, RAW_PREDICTIONS_ARTIFACT)
    assert sorted(logged) == ["test", "validation"]
    for split, proba in logged.items():
        np.testing.assert_array_equal(proba, stack.predict(dataset, split)[0])


def test_model_comparison_tabulates_every_candidate(run):
    result, resources, *_ = run
    metadata = result.asset_materializations_for_node("model_comparison")[0].metadata
    rows = metadata["comparison"].value.records
    assert {r.data["model"] for r in rows} == {"lstm", "cnn", "transformer", "xgboost", "ensemble"}
    assert all(r.data["seeds"] == (1 if r.data["model"] == "ensemble" else 2) for r in rows)
    assert "data:image/png;base64," in metadata["chart"].value
    xgb = result.asset_materializations_for_node("xgboost_model")[0].metadata
    tracker = resources["mlflow_store"].tracker()
    links = {k: v.value for k, v in xgb.items() if k.startswith("mlflow_run_")}
    assert sorted(links) == ["mlflow_run_xgboost-seed0", "mlflow_run_xgboost-seed1"]
    assert all(url.startswith(f"{tracker.ui_url}/#/experiments/{tracker.experiment_id}/runs/") for url in links.values())
    assert metadata["mlflow_compare"].value.startswith(f"{tracker.ui_url}/#/compare-runs?runs=")
    assert isinstance(metadata["best_accuracy"].value, float)
    walks = xgb["walk_forward"].value
    assert len(walks) == 2 and all(len(w["folds"]) == 2 for w in walks)
    assert "data:image/png;base64," in xgb["walk_forward_chart"].value
    assert "walk_forward" not in result.asset_materializations_for_node("cnn_model")[0].metadata


def test_every_candidate_is_backtested_and_the_gate_decides(run):
    result, resources, evaluation, _ = run
    assert evaluation.success
    records = resources["records"].store()
    report = records.load(["backtest_report", DATASET], BacktestRecord)
    assert len(report.results) == 9, "4 families x 2 seeds and the ensemble"
    assert 1 <= report.trials <= 9, "9 candidates, correlated: at most 9 effective trials"
    trained = {c.run_id for a in MODEL_ASSETS for c in records.load([a.key.path[-1], DATASET], ModelRecord).candidates}
    assert {r.candidate.run_id for r in report.results} == trained
    tracker = resources["mlflow_store"].tracker()
    for result in report.results:
        run_data = tracker.client.get_run(result.run_id).data  # the backtest's own run, a child of the training
        assert run_data.tags["mlflow.parentRunId"] == result.candidate.run_id
        assert run_data.metrics["backtest/trades"] == result.summary["trades"]
        assert run_data.metrics["backtest/SIG_AR1/trades"] == result.per_symbol["SIG_AR1"]["trades"]
        assert run_data.tags["backtest_verdict"] == result.verdict
        assert result.report_url == tracker.artifact_url(result.run_id, "backtest/report.html")
        assert result.verdict.startswith(("The edge is", "No trades"))
        assert set(result.per_symbol) == {"SIG_AR1"}
        assert result.per_symbol["SIG_AR1"]["trades"] == result.summary["trades"], "one symbol: its trades are all trades"
    shown = evaluation.asset_materializations_for_node("backtest_report")[0].metadata
    assert "data:image/png;base64," in next(v.value for k, v in shown.items() if k.startswith("plots_"))
    assert {k: v.value for k, v in shown.items() if k.startswith("report_")} == {
        f"report_{r.candidate.name}": r.report_url for r in report.results
    }
    gate = records.load(["champion", DATASET], GateRecord)
    assert gate.registered_model == "scalping-SIG_AR1-h10"
    assert set(gate.failures) == {r.candidate.name for r in report.results}
    assert all(set(by_symbol) == {"SIG_AR1"} for by_symbol in gate.failures.values()), "judged per symbol"
    champion = tracker.alias_version(gate.registered_model, CHAMPION)
    if any(gate.cleared.values()):
        assert gate.promoted and champion == gate.champion
    else:
        assert champion is None and not gate.promoted
    for r in report.results:
        tags = tracker.version_tags(gate.registered_model, r.candidate.version)
        assert tags["cleared_symbols"] == ",".join(gate.cleared[r.candidate.name])
        described = tracker.client.get_model_version(gate.registered_model, r.candidate.version).description
        assert [p.split(":", 1)[0] for p in described.split("\n\n")] == ["**model**", "**backtest**", "**gate**"]
    shown = evaluation.asset_materializations_for_node("champion")[0].metadata
    assert {(r.data["candidate"], r.data["symbol"]): r.data["cleared"] for r in shown["gate"].value.records} == {
        (name, symbol): not reasons for name, by_symbol in gate.failures.items() for symbol, reasons in by_symbol.items()
    }


# Every candidate with a trade passes: the export below needs a champion whatever the backtests say.
LENIENT_GATE = {"min_win_rate": 0.0, "min_sharpe": -1e9, "max_drawdown_pct": 101.0, "min_deflated_sharpe": 0.0,
                "max_p_value": 1.01, "min_trades": 1}  # fmt: skip


def test_the_champion_is_exported_to_onnx_with_parity_checks(run):
    _, resources, _, instance = run
    # The gate alone, on the stored backtest record.
    gate = dg.materialize(
        [champion, backtest_report.to_source_asset()],
        instance=instance,
        resources=resources,
        run_config={**QUIET, "ops": {"champion": {"config": LENIENT_GATE}}},
        partition_key=DATASET,
    )
    assert gate.success
    decision = resources["records"].store().load(["champion", DATASET], GateRecord)
    context = dg.build_sensor_context(instance=instance, resources={"records": resources["records"]}, definitions=defs)
    with dg.partition_loading_context(dynamic_partitions_store=instance):  # the dataset partitions are the instance's
        tick = champion_promoted_sensor.evaluate_tick(context)
    if decision.promoted:
        assert [r.run_key for r in tick.run_requests] == [f"{decision.registered_model}:{decision.champion}"]
        assert [r.partition_key for r in tick.run_requests] == [DATASET], "the export of the same dataset"
    else:
        assert not tick.run_requests and "kept the champion" in tick.skip_message
    exported = defs.resolve_job_def("serving_job").execute_in_process(
        instance=instance, resources=resources, run_config=QUIET, partition_key=DATASET
    )
    assert exported.success
    checks = {c.check_name: c for c in exported.get_asset_check_evaluations()}
    assert checks["fp32_parity"].passed and checks["fp32_parity"].metadata["max_abs_diff"].value <= 1e-4
    # A healthy export passes: an INT8 variant under the bar is dropped and FP32 served, as the check says.
    int8 = checks["int8_agreement"]
    assert int8.passed and int8.description.startswith("champion v"), int8.description
    record = resources["records"].store().load(["onnx_model", DATASET], ExportRecord)
    tracker = resources["mlflow_store"].tracker()
    name = record.registered_model
    assert record.versions[CHAMPION] == tracker.alias_version(name, CHAMPION)
    run_id = tracker.client.get_model_version(name, record.versions[CHAMPION]).run_id
    assert "onnx/manifest.json" in {a.path for a in tracker.client.list_artifacts(run_id, "onnx")}
    predictor = OnnxPredictor(record.bundles[CHAMPION])
    cleared = tracker.version_tags(name, record.versions[CHAMPION])["cleared_symbols"].split(",")
    assert predictor.manifest.cleared_symbols == cleared, "the bundle carries the symbols the gate cleared"
    window = np.zeros((3, predictor.manifest.window, len(predictor.manifest.feature_names)))
    assert np.allclose(predictor.predict(window).sum(axis=1), 1, atol=1e-5)
