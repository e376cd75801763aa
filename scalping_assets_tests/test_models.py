"""Models: the pipeline finds the planted signal, invents none on martingales, calibrates on the
validation span alone and logs the calibrated test predictions, and MLflow gives back exactly the
model it was given."""

import os
from datetime import date

import mlflow
import numpy as np
import pytest
import torch

from scalping_assets.backtest.runs import load_predictions
from scalping_assets.definitions import build_resources
from scalping_assets.features.dataset import Dataset, DatasetSpec, build_dataset, walk_forward_datasets
from scalping_assets.features.labels import PROBABILITY_COLUMNS
from scalping_assets.market.planted import bayes_direction_accuracy
from scalping_assets.market.simulator import simulator
from scalping_assets.models import calibration
from scalping_assets.models.config import profile_config
from scalping_assets.models.ensemble import ensemble_fit_predict, fit_stack
from scalping_assets.models.losses import FocalLoss, balanced_class_weights
from scalping_assets.models.nets import CNNMicrostructure, LSTMScalper, TransformerScalper
from scalping_assets.models.pipeline import train_candidate
from scalping_assets.models.tracking import Tracker
from scalping_assets.models.walk_forward import log_walk_forward, model_fit_predict, walk_forward
from scalping_assets.settings import Settings

HORIZON = 10
# Small and quick: a day of ticks, 50-tick windows, a few thousand training windows.
FAST = {"epochs": 3, "max_train_windows": 4_000, "max_eval_windows": 2_000}


def _spec_and_ticks(symbol: str, days: int, seed: int):
    last = date(2026, 1, 1 + days)
    spec = DatasetSpec(symbols=[symbol], start=date(2026, 1, 2), end=last, sequence_length=50)
    return spec, {symbol: simulator(symbol, seed).days(date(2026, 1, 1), last)}


def _dataset(symbol: str, days: int = 1, seed: int = 7):
    return build_dataset(*_spec_and_ticks(symbol, days, seed))


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow")
    return Tracker(f"sqlite:///{folder}/mlflow.db", artifact_root=str(folder / "artifacts"))


@pytest.fixture(scope="module")
def planted(tracker):
    dataset = _dataset("SIG_AR1", days=2)
    parent = tracker.parent_run_id("planted", "planted signal")
    return dataset, [
        train_candidate(dataset, profile_config("demo", kind, **FAST), tracker, parent) for kind in ("xgboost", "cnn")
    ]


def test_signal_recovery_reaches_most_of_the_bayes_excess_accuracy(planted):
    dataset, candidates = planted
    bayes = bayes_direction_accuracy("SIG_AR1", HORIZON)
    best = max(candidates, key=lambda c: c.metrics["accuracy"])
    chance = float(np.bincount(best.test_labels, minlength=3).max() / len(best.test_labels))
    excess = (best.metrics["accuracy"] - chance) / (bayes - chance)
    assert excess >= 0.8, f"best {best.name}: accuracy {best.metrics['accuracy']:.4f}, chance {chance:.4f}, Bayes {bayes:.4f}"
    assert best.edge["p_value"] < 1e-6


@pytest.mark.parametrize("symbol", ["R_100", "stpRNG"])
def test_no_false_discovery_on_martingales(symbol, tracker):
    dataset = _dataset(symbol)
    parent = tracker.parent_run_id(f"martingale-{symbol}", symbol)
    for kind in ("xgboost", "cnn"):
        candidate = train_candidate(dataset, profile_config("demo", kind, **FAST), tracker, parent)
        assert candidate.edge["p_value"] >= 0.01, f"{kind} on {symbol} 'beats' the majority class: {candidate.edge}"


def test_models_come_back_from_mlflow_predicting_exactly_the_same(planted, tracker):
    dataset, candidates = planted
    windows = dataset.windows("test")
    for candidate in candidates:
        family = candidate.model.family
        again = family.predict(family.load(tracker, candidate.model_uri), windows)
        assert np.array_equal(again, candidate.model.predict(dataset, "test")[0]), candidate.name
        version = tracker.client.get_model_version(candidate.registered_name, candidate.version)
        assert version.tags["model_type"] == candidate.model.config.kind
    runs = tracker.client.search_runs([tracker.experiment_id], f"tags.mlflow.parentRunId = '{candidates[0].run_id}'")
    assert runs == []  # candidates are children, not parents
    parent = tracker.client.get_run(candidates[0].run_id).data.tags["mlflow.parentRunId"]
    assert {
        r.info.run_id for r in tracker.client.search_runs([tracker.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    } >= {c.run_id for c in candidates}
    artifacts = {a.path for a in tracker.client.list_artifacts(candidates[0].run_id, "plots")}
    assert {"plots/confusion.png", "plots/reliability.png", "plots/learning_curves.png"} <= artifacts


@pytest.fixture(scope="module")
def weighted(tracker):
    """XGBoost with balanced class weights over SIG_AR1 pooled with CRASH1000 (~99 % UP): the weights
    scale SIG_AR1's odds towards DOWN, so that at the default threshold it signals short only."""
    symbols = ["SIG_AR1", "CRASH1000"]
    spec = DatasetSpec(symbols=symbols, start=date(2026, 1, 2), end=date(2026, 1, 2), sequence_length=50)
    dataset = build_dataset(spec, {s: simulator(s, 7).days(date(2026, 1, 1), date(2026, 1, 2)) for s in symbols})
    config = profile_config("demo", "xgboost", class_weights=True, n_estimators=60)
    return dataset, train_candidate(dataset, config, tracker)


def test_the_logged_test_predictions_and_metrics_are_of_the_calibrated_probabilities(weighted, tracker):
    dataset, candidate = weighted
    raw, labels = candidate.model.predict(dataset, "test")
    assert not candidate.calibration.parameters("SIG_AR1").identity
    assert set(candidate.calibration.symbols) == {"SIG_AR1", "CRASH1000"}
    calibrated = candidate.calibration.apply(raw, calibration.window_symbols(dataset, "test"))
    assert not np.allclose(calibrated, raw, atol=0.01)
    np.testing.assert_array_equal(candidate.test_proba, calibrated)
    # What backtests and trials read, and what the export bundles.
    np.testing.assert_array_equal(load_predictions(tracker, candidate.run_id)[PROBABILITY_COLUMNS].to_numpy(), calibrated)
    logged = calibration.Calibration.model_validate(tracker.load_dict(candidate.run_id, calibration.ARTIFACT))
    assert logged == candidate.calibration
    run = tracker.client.get_run(candidate.run_id)
    metrics = run.data.metrics
    assert metrics["test/accuracy"] == pytest.approx(float((calibrated.argmax(axis=1) == labels).mean()))
    for name in ("down", "up"):
        assert metrics[f"test/ece_{name}"] < metrics[f"test/uncalibrated/ece_{name}"] / 2, name
    # The short-only defect, and its repair: the calibrated SIG_AR1 signals go both ways.
    assert metrics["test/uncalibrated/SIG_AR1/long_share"] < 0.05
    assert 0.3 < metrics["test/SIG_AR1/long_share"] < 0.7
    assert "plots/reliability.png" in {a.path for a in tracker.client.list_artifacts(candidate.run_id, "plots")}


def test_the_calibration_is_fitted_on_the_validation_rows_alone(weighted, tracker):
    """Other test rows (labels and features) give other test predictions and the same calibration."""
    dataset, candidate = weighted
    frame = dataset.frame.copy()
    test = frame["split"].to_numpy() == "test"
    rng = np.random.default_rng(0)
    target = dataset.meta.spec.target
    frame.loc[test, target] = rng.permutation(frame.loc[test, target].to_numpy())
    frame.loc[test, dataset.feature_names] = rng.normal(size=(test.sum(), len(dataset.feature_names)))
    again = train_candidate(Dataset(frame, dataset.meta), candidate.model.config, tracker)
    assert not np.array_equal(again.test_labels, candidate.test_labels)
    assert not np.allclose(again.test_proba, candidate.test_proba)
    assert again.calibration == candidate.calibration
    assert candidate.calibration.pooled.rows == len(dataset.windows("validation").ends)


def test_training_is_deterministic_for_a_seed(planted, tracker):
    dataset, candidates = planted
    cnn = next(c for c in candidates if c.model.config.kind == "cnn")
    again = train_candidate(dataset, cnn.model.config, tracker)
    assert np.array_equal(again.test_proba, cnn.test_proba)


@pytest.mark.parametrize("net", [LSTMScalper, CNNMicrostructure, TransformerScalper])
def test_sequence_models_answer_three_classes_and_never_look_past_the_window_end(net):
    torch.manual_seed(0)
    model = net(6, 16, 2, 2, 0.0) if net is not CNNMicrostructure else net(6, 16, 2, 3, 0.0)
    model.eval()
    x = torch.randn(4, 30, 6)
    out = model(x)
    assert out.shape == (4, 3)
    if net is TransformerScalper:
        # Causal mask: the last token's answer is the same whether or not later steps existed.
        longer = torch.cat([x, torch.randn(4, 5, 6)], dim=1)
        hidden = model.encoder(model.position(model.project(longer)), mask=torch.triu(torch.full((35, 35), float("-inf")), 1))
        short = model.encoder(model.position(model.project(x)), mask=torch.triu(torch.full((30, 30), float("-inf")), 1))
        assert torch.allclose(hidden[:, 29], short[:, 29], atol=1e-5)


def test_focal_loss_and_class_weights():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    target = torch.tensor([0, 2])
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert torch.isclose(FocalLoss(0.0)(logits, target), ce)
    assert FocalLoss(2.0)(logits, target) < ce  # easy examples count less
    weights = balanced_class_weights(np.array([0] * 90 + [2] * 10 + [1]), 3)
    assert weights[2] > weights[0] and weights[1] == 5.0  # the all-but-absent class is capped


@pytest.mark.parametrize("max_oof_windows", [None, 3_000])
def test_stacked_ensemble_learns_only_from_out_of_fold_predictions(planted, max_oof_windows):
    dataset, candidates = planted
    configs = [c.model.config for c in candidates]
    stack = fit_stack(dataset, configs, folds=3, max_oof_windows=max_oof_windows)
    frame = dataset.frame
    resolve = frame[["direction_resolve_epoch", "barrier_resolve_epoch"]].max(axis=1).to_numpy()
    epochs = frame["epoch"].to_numpy()
    assert len(stack.folds) == 3
    for fold in stack.folds:
        assert not set(fold.trained_on) & set(fold.predicted), "a base model predicted a row it was trained on"
        block_start = epochs[fold.predicted].min()
        before = fold.trained_on[epochs[fold.trained_on] < block_start]
        assert (resolve[before] < block_start).all(), "a training label reaches into the held-out block"
    assert (frame["split"].to_numpy()[stack.oof_rows] == "train").all()
    assert stack.meta.n_features_in_ == 3 * len(configs)
    assert len(stack.oof_rows) == len(np.unique(stack.oof_rows)), "each training row predicted once"
    if max_oof_windows is not None:  # a sample of each block's windows, and the stack fitted on those alone
        assert all(len(fold.predicted) == max_oof_windows for fold in stack.folds)
        assert len(stack.oof_rows) == 3 * max_oof_windows
    proba = stack.predict([c.model.predict(dataset, "test")[0] for c in candidates])  # what the stack was fitted on
    accuracy = float((proba.argmax(axis=1) == candidates[0].test_labels).mean())
    best = max(c.metrics["accuracy"] for c in candidates)
    assert accuracy >= best - 0.01, f"ensemble {accuracy:.4f} vs best base {best:.4f}"


@pytest.mark.parametrize("symbol", ["SIG_AR1", "R_100"])
def test_walk_forward_finds_the_planted_signal_in_every_fold_and_none_in_a_martingale(symbol, tracker):
    folds = walk_forward_datasets(*_spec_and_ticks(symbol, 2, 7), folds=3)
    result = walk_forward(folds, model_fit_predict(profile_config("demo", "xgboost", **FAST)))
    summary = result.aggregate()
    assert [f.fold for f in result.folds] == [1, 2, 3]
    if symbol == "SIG_AR1":
        assert all(f.accuracy > f.majority_accuracy and f.p_value < 1e-3 for f in result.folds), result.records()
        assert summary["combined_p_value"] < 1e-9
    else:
        assert summary["combined_p_value"] >= 0.01, result.records()
    run_id = log_walk_forward(tracker, f"xgboost-{symbol}", result, None, {"model_type": "xgboost"})
    history = tracker.client.get_metric_history(run_id, "wf_accuracy")
    assert [m.step for m in history] == [1, 2, 3]
    assert tracker.client.get_run(run_id).data.metrics["wf_accuracy_mean"] == pytest.approx(summary["accuracy_mean"])


def test_the_ensemble_walks_forward_with_its_bases_refitted_per_fold():
    spec, ticks = _spec_and_ticks("SIG_AR1", 1, 5)
    folds = walk_forward_datasets(spec, ticks, folds=2)
    configs = [profile_config("demo", "xgboost", seed=s, n_estimators=40) for s in (0, 1)]
    result = walk_forward(folds, ensemble_fit_predict(configs, folds=2))
    assert len(result.folds) == 2
    assert all(f.accuracy > f.majority_accuracy for f in result.folds), result.records()


def test_two_trackers_in_one_process_keep_to_their_own_stores_and_leave_mlflows_globals_alone(planted, tmp_path, monkeypatch):
    dataset, _ = planted
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    first = Tracker(f"sqlite:///{tmp_path}/first.db", artifact_root=str(tmp_path / "first"))
    second = Tracker(f"sqlite:///{tmp_path}/second.db", artifact_root=str(tmp_path / "second"))
    config = profile_config("demo", "xgboost", n_estimators=5)
    a = train_candidate(dataset, config, first)
    b = train_candidate(dataset, config, second)  # interleaved with a use of the first
    assert first.load_model("xgboost", f"models:/{a.registered_name}/{a.version}") is not None
    assert second.load_model("xgboost", b.model_uri) is not None
    # Each store holds its own run and version, none of the other's.
    assert [r.info.run_id for r in first.search_runs("tags.model_type = 'xgboost'")] == [a.run_id]
    assert [r.info.run_id for r in second.search_runs("tags.model_type = 'xgboost'")] == [b.run_id]
    assert first.version_run_id(a.registered_name, a.version) == a.run_id
    assert second.version_run_id(b.registered_name, b.version) == b.run_id
    # The user's setting and the process's fluent URIs are as they were.
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == before and mlflow.active_run() is None
    resources = build_resources(Settings(data_dir=tmp_path / "data"))
    assert resources["mlflow_store"].process_config_and_initialize().tracking_uri == "http://mlflow.example:5000"
