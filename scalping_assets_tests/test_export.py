"""ONNX export: every family within 1e-4 of the trained model (both calibrated: what is served is what
was backtested), INT8 kept only where measured faster and within tolerance, and the served features
and predictions identical to training's."""

import json
import shutil

import numpy as np
import pytest

from scalping_assets.features.labels import PROBABILITY_COLUMNS
from scalping_assets.models import calibration
from scalping_assets.models.config import MODEL_KINDS
from scalping_assets.models.ensemble import FittedStack
from scalping_assets.models.pipeline import prediction_frame
from serving.bundle import MANIFEST, OnnxPredictor
from serving.export import FP32_TOLERANCE, ExportError, export_version, predict_windows

from .serving_helpers import SYMBOL


@pytest.mark.parametrize("kind", ["xgboost", "lstm", "cnn", "transformer", "ensemble"])
def test_every_family_exports_within_tolerance_of_the_trained_model(served_models, kind):
    report = served_models.export(kind)
    candidate = served_models.candidates[kind]
    assert report.fp32_max_abs_diff <= FP32_TOLERANCE
    assert report.logged
    # Independently of the export's own measurement: the bundle against the candidate's test evaluation
    # (its calibrated, logged predictions), and against the calibration of the trained model's own output.
    predictor = OnnxPredictor(report.folder, "fp32")
    dataset = served_models.dataset
    windows, symbols = dataset.windows("test"), calibration.window_symbols(dataset, "test")
    onnx_proba = predict_windows(predictor, windows, symbols)
    assert onnx_proba.shape == candidate.test_proba.shape
    assert np.abs(onnx_proba - candidate.test_proba).max() <= FP32_TOLERANCE
    trained = candidate.model
    if kind == "ensemble":
        trained = FittedStack(candidate.model, [served_models.candidates[k].model for k in MODEL_KINDS])
    raw = trained.predict(dataset, "test")[0]
    assert np.abs(onnx_proba - candidate.calibration.apply(raw, symbols)).max() <= FP32_TOLERANCE
    assert predictor.calibration == candidate.calibration and report.manifest.calibration == calibration.ARTIFACT

    manifest = report.manifest
    assert manifest.version == candidate.version and manifest.kind == kind
    assert len(manifest.parts) == (4 if kind == "ensemble" else 1) and (manifest.meta is not None) == (kind == "ensemble")
    artifacts = {a.path for a in served_models.tracker.client.list_artifacts(candidate.run_id, "onnx")}
    assert {"onnx/manifest.json", f"onnx/{calibration.ARTIFACT}"} <= artifacts
    assert all(f"onnx/{p.fp32}" in artifacts for p in manifest.parts)
    if kind == "xgboost":
        assert report.int8_agreement is None and not report.int8_kept  # trees: nothing to quantise
    else:
        faster = report.latency_us["int8"]["p50"] < report.latency_us["fp32"]["p50"]
        assert report.int8_kept == (report.int8_agreement >= 0.99 and faster)
        assert (manifest.precision == "int8") == report.int8_kept
        assert all((p.int8 is not None) == report.int8_kept for p in manifest.parts if p.name != "xgboost")


def test_served_features_and_predictions_are_training_s_own(served_models):
    """From raw ticks alone the bundle rebuilds the test rows' features (batch and streaming paths)
    and the candidate's logged test probabilities."""
    report = served_models.export("cnn")
    predictor = OnnxPredictor(report.folder, "fp32")
    dataset, ticks = served_models.dataset, served_models.ticks
    test = dataset.rows("test")
    logged = prediction_frame(dataset, served_models.candidates["cnn"].test_proba)
    epochs = ticks["epoch"].to_numpy()
    names = dataset.feature_names
    for row in np.linspace(0, len(logged) - 1, 6).astype(int):
        epoch = int(logged["epoch"].iloc[row])
        end = int(np.searchsorted(epochs, epoch)) + 1
        window = ticks.iloc[end - predictor.manifest.min_ticks : end]
        raw = predictor.features_from_ticks(SYMBOL, window["epoch"].to_numpy(), window["quote"].to_numpy())
        expected = test.loc[test["epoch"] <= epoch, names].to_numpy()[-predictor.manifest.window :]
        np.testing.assert_allclose(raw, expected, rtol=1e-9, atol=1e-12)
        state = predictor.feature_state(SYMBOL)
        streamed = [state.update(int(e), float(q)) for e, q in zip(window["epoch"], window["quote"], strict=True)]
        np.testing.assert_allclose(np.stack(streamed[-predictor.manifest.window :]), expected, rtol=1e-9, atol=1e-12)
        served = predictor.predict(raw[None], SYMBOL)[0]
        np.testing.assert_allclose(served, logged[PROBABILITY_COLUMNS].iloc[row].to_numpy(), atol=FP32_TOLERANCE)


def test_the_bundle_calibrates_per_symbol_after_the_graphs_and_an_older_bundle_serves_them_as_they_are(served_models, tmp_path):
    """A bundle's calibration.json is applied per symbol after the ONNX graphs; one exported before
    calibration (no calibration.json, no manifest entry) serves the graphs' probabilities unchanged."""
    folder = shutil.copytree(served_models.export("xgboost").folder, tmp_path / "bundle")
    manifest = json.loads((folder / MANIFEST).read_text())
    tilted = calibration.ClassScaling(scale=[2.0, 1.0, 0.5], bias=[0.4, 0.0, -0.4], rows=0)
    chosen = calibration.Calibration(pooled=calibration.IDENTITY, symbols={SYMBOL: tilted})
    (folder / calibration.ARTIFACT).write_text(chosen.model_dump_json())
    (folder / MANIFEST).write_text(json.dumps(manifest | {"calibration": calibration.ARTIFACT}))
    predictor = OnnxPredictor(folder)
    windows = served_models.dataset.windows("test")[np.arange(64)][0]  # scaled, as the graphs read them
    graphs = predictor.graphs(windows)
    served = predictor.predict_scaled(windows)  # a one-symbol bundle: its symbol
    assert not np.allclose(served, graphs, atol=0.01)
    np.testing.assert_array_equal(served, chosen.apply(graphs, SYMBOL))
    np.testing.assert_array_equal(predictor.predict_scaled(windows, [SYMBOL] * len(windows)), served)
    assert predictor.info()["calibrated"]

    (folder / calibration.ARTIFACT).unlink()
    (folder / MANIFEST).write_text(json.dumps({k: v for k, v in manifest.items() if k != "calibration"}))
    older = OnnxPredictor(folder)
    np.testing.assert_array_equal(older.predict_scaled(windows), graphs)
    assert not older.info()["calibrated"]

    (folder / MANIFEST).write_text(json.dumps(manifest | {"calibration": None, "symbols": [SYMBOL, "R_100"]}))
    with pytest.raises(ValueError, match="symbols: required"):
        OnnxPredictor(folder).predict_scaled(windows)


def test_export_refuses_a_dataset_the_model_was_not_trained_on(served_models, tmp_path):
    dataset = served_models.dataset
    other = type(dataset)(dataset.frame, dataset.meta.model_copy(update={"fingerprint": "0123456789abcdef"}))
    candidate = served_models.candidates["xgboost"]
    with pytest.raises(ExportError, match="trained on dataset"):
        export_version(served_models.tracker, candidate.registered_name, candidate.version, other, tmp_path / "b")
