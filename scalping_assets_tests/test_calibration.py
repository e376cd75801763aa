"""Calibration: fitted on the rows it is given (the validation span), it undoes a known miscalibration
on other rows, leaves calibrated probabilities alone, is row-wise, per symbol, and survives JSON."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from scalping_assets.backtest.engine import ExecutionConfig, signal_sides
from scalping_assets.features.dataset import Dataset, DatasetMeta, DatasetSpec
from scalping_assets.models import calibration as C
from scalping_assets.models.family import ModelFamily, TrainedModel, last_rows
from scalping_assets.models.losses import balanced_class_weights


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _draw(q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row, drawn from its class probabilities."""
    return (rng.random(len(q))[:, None] > np.cumsum(q, axis=1)).sum(axis=1)


def _truth(n: int, seed: int, spread: float = 1.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true logits, true probabilities, labels drawn from them)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)) * spread
    q = _softmax(logits)
    return logits, q, _draw(q, rng)


def _miscalibrated(logits: np.ndarray, temperature: float, bias) -> np.ndarray:
    return _softmax(logits / temperature + np.asarray(bias))


@pytest.mark.parametrize("method", ["vector", "temperature"])
@pytest.mark.parametrize(("temperature", "bias"), [(2.5, [0.8, 0.0, -0.5]), (0.4, [0.0, -1.0, 0.3])])
def test_calibration_fitted_on_one_half_recovers_the_calibrated_ece_on_the_other(method, temperature, bias):
    logits, q, labels = _truth(40_000, seed=1)
    p = _miscalibrated(logits, temperature, bias)
    fit_rows, held = np.arange(20_000), np.arange(20_000, 40_000)
    symbols = np.full(len(labels), "R_100")
    calibration = C.fit(p[fit_rows], labels[fit_rows], symbols[fit_rows], method=method)
    after = calibration.apply(p[held], symbols[held])
    ece_before = C.expected_calibration_error(p[held], labels[held])
    ece_after = C.expected_calibration_error(after, labels[held])
    ece_true = C.expected_calibration_error(q[held], labels[held])
    for c in ece_true:
        assert ece_before[c] > 0.04, ece_before
        assert ece_after[c] <= ece_true[c] + 0.01, (c, ece_after, ece_true)
    assert calibration.symbols["R_100"].nll_after < calibration.symbols["R_100"].nll_before
    # The inverse of the miscalibration: scale = T, bias = -T·b up to a common constant.
    fitted = calibration.symbols["R_100"]
    assert np.allclose(fitted.scale, temperature, rtol=0.08)
    shifted = np.asarray(fitted.bias) - np.mean(fitted.bias)
    expected = -temperature * np.asarray(bias)
    assert np.allclose(shifted, expected - expected.mean(), atol=0.1 * max(1.0, temperature))


def test_calibrated_probabilities_are_left_unchanged():
    _, q, labels = _truth(30_000, seed=2)
    symbols = np.full(len(labels), "SIG_AR1")
    forced = C.fit(q, labels, symbols, alpha=None)  # the fit itself, significant or not
    fitted = forced.symbols["SIG_AR1"]
    assert np.allclose(fitted.scale, 1.0, atol=0.05)
    assert np.allclose(np.asarray(fitted.bias) - np.mean(fitted.bias), 0.0, atol=0.05)
    assert np.abs(forced.apply(q, "SIG_AR1") - q).max() < 0.02
    tested = C.fit(q, labels, symbols)  # the default: kept only where it beats the identity
    assert not tested.symbols["SIG_AR1"].significant and tested.symbols["SIG_AR1"].identity
    assert np.array_equal(tested.apply(q, symbols), q)


def test_only_the_miscalibrated_symbol_is_rescaled():
    logits, q, labels = _truth(20_000, seed=9)
    symbols = np.where(np.arange(len(labels)) % 2 == 0, "SIG_AR1", "R_100")
    p = np.where((symbols == "SIG_AR1")[:, None], _miscalibrated(logits, 1.0, [0.7, 0.0, -0.7]), q)
    calibration = C.fit(p, labels, symbols, horizon=10)  # 1,000 independent labels per symbol
    assert calibration.symbols["SIG_AR1"].significant and not calibration.symbols["R_100"].significant
    rows = symbols == "R_100"
    assert np.array_equal(calibration.apply(p[rows], symbols[rows]), p[rows])


def test_class_weighted_probabilities_trade_both_sides_again_once_calibrated():
    """The short-only defect in miniature: a symmetric symbol's probabilities from a loss weighted by
    the pooled class shares of a mostly-UP pool (p_c ∝ w_c q_c) enter short only at the default
    threshold; calibrated, they enter both ways about equally, as the true probabilities do."""
    rng = np.random.default_rng(3)
    n = 40_000
    up = 1 / (1 + np.exp(-rng.normal(0, 0.6, n)))  # symmetric: P(UP | x), no NEUTRAL
    q = np.column_stack([1 - up - 1e-3, np.full(n, 1e-3), up])
    labels = _draw(q, rng)
    pooled = np.concatenate([labels, np.full(2 * n, 2)])  # pooled with a symbol that is nearly always UP
    weights = balanced_class_weights(pooled, 3)
    assert weights[0] > 2 * weights[2]
    p = q * weights / (q * weights).sum(axis=1, keepdims=True)
    threshold = ExecutionConfig().min_confidence
    half = n // 2
    calibration = C.fit(p[:half], labels[:half], np.full(half, "SIG_AR1"))
    before = signal_sides(p[half:], threshold)
    after = signal_sides(calibration.apply(p[half:], "SIG_AR1"), threshold)
    ideal = signal_sides(q[half:], threshold)
    assert (before == 1).mean() < 0.05 and (before == -1).mean() > 0.6
    for side in (1, -1):
        assert abs((after == side).mean() - (ideal == side).mean()) < 0.03, ((after == side).mean(), (ideal == side).mean())


def test_apply_is_row_wise():
    logits, _, labels = _truth(5_000, seed=4)
    p = _miscalibrated(logits, 1.7, [0.2, -0.4, 0.1])
    symbols = np.where(np.arange(len(labels)) % 3 == 0, "CRASH1000", "R_100")
    calibration = C.fit(p, labels, symbols, min_rows=1_000)
    batch = calibration.apply(p[:400], symbols[:400])
    one_by_one = np.vstack([calibration.apply(p[i : i + 1], symbols[i : i + 1]) for i in range(400)])
    assert np.array_equal(batch, one_by_one)
    assert np.array_equal(batch[:1], calibration.apply(p[:1], str(symbols[0])))
    assert np.allclose(batch.sum(axis=1), 1.0)
    single = calibration.apply(p.astype(np.float32), symbols)  # what the nets and the ONNX graphs answer
    assert single.dtype == np.float32 and np.allclose(single.sum(axis=1), 1.0, atol=1e-6)
    assert np.allclose(single, calibration.apply(p, symbols), atol=1e-6)


def test_each_symbol_gets_its_own_parameters_and_a_small_one_the_pooled_ones():
    logits, q, labels = _truth(36_000, seed=5)
    symbols = np.array(["SIG_AR1", "R_100", "JD10"])[np.arange(len(labels)) % 3]
    symbols[:: 3 * 20] = "STPRNG"  # 600 rows: fewer than min_rows
    p = np.where(
        (symbols == "SIG_AR1")[:, None],
        _miscalibrated(logits, 1.0, [0.9, 0.0, -0.6]),
        _miscalibrated(logits, 0.5, [0.0, 0.0, 0.0]),
    )
    calibration = C.fit(p, labels, symbols, min_rows=2_000)
    assert set(calibration.symbols) == {"SIG_AR1", "R_100", "JD10"}
    sig, r100 = calibration.symbols["SIG_AR1"], calibration.symbols["R_100"]
    assert abs(sig.scale[0] - r100.scale[0]) > 0.3 and abs((sig.bias[0] - sig.bias[2]) - (r100.bias[0] - r100.bias[2])) > 1.0
    assert calibration.parameters("STPRNG") is calibration.pooled
    assert calibration.parameters("CRASH500") is calibration.pooled  # never seen: pooled
    for symbol in ("SIG_AR1", "R_100"):
        rows = symbols == symbol
        ece = C.expected_calibration_error(calibration.apply(p[rows], symbol), labels[rows])
        truth = C.expected_calibration_error(q[rows], labels[rows])
        assert all(ece[c] <= truth[c] + 0.015 for c in ece), (symbol, ece, truth)


def test_json_round_trip():
    logits, _, labels = _truth(6_000, seed=6)
    p = _miscalibrated(logits, 1.5, [0.3, -2.0, 0.0])
    symbols = np.where(np.arange(len(labels)) < 4_000, "SIG_AR1", "R_100")
    calibration = C.fit(p, labels, symbols)
    again = C.Calibration.model_validate_json(calibration.model_dump_json())
    assert again == calibration
    assert np.array_equal(again.apply(p, symbols), calibration.apply(p, symbols))


def test_a_class_missing_from_a_symbols_rows_stays_finite_in_json():
    rng = np.random.default_rng(7)
    up = rng.uniform(0.9, 1.0, 5_000)
    p = np.column_stack([1 - up, np.zeros_like(up), up])  # NEUTRAL never predicted, never observed
    labels = np.where(rng.random(5_000) < up, 2, 0)
    calibration = C.fit(p, labels, np.full(5_000, "CRASH1000"))
    assert all(np.isfinite(calibration.symbols["CRASH1000"].bias))
    assert C.Calibration.model_validate_json(calibration.model_dump_json()) == calibration
    assert np.isfinite(calibration.apply(p, "CRASH1000")).all()


def test_reliability_bins_and_png():
    _, q, labels = _truth(3_000, seed=8)
    curves = C.reliability(q, labels, bins=10)
    for c, curve in enumerate(curves.values()):
        assert sum(curve.counts) == len(labels)
        observed = np.average(curve.observed, weights=curve.counts)
        assert observed == pytest.approx((labels == c).mean())
    assert C.expected_calibration_error(q, labels) == {k: v.ece for k, v in curves.items()}
    # A constant prediction has one bin: its ECE is |prediction - frequency|.
    constant = np.tile([0.2, 0.3, 0.5], (len(labels), 1))
    assert C.expected_calibration_error(constant, labels)["up"] == pytest.approx(abs(0.5 - (labels == 2).mean()))
    png = C.reliability_png(labels, constant, q, "test", symbols=np.where(labels == 0, "A", "B"))
    assert png.startswith(b"\x89PNG")


# Leakage: a dataset whose test rows change gives the same calibration ----------------------------


class _LinearFamily(ModelFamily):
    """Softmax of a fixed linear map of each window's last row: a fitted model with no fitting."""

    kind, flavor, input = "linear-test", "none", "features"

    def __init__(self, weights: np.ndarray):
        self.weights = weights

    def fit(self, dataset, config, on_epoch=None):
        raise NotImplementedError

    def predict(self, model, windows):
        return _softmax(last_rows(windows) @ self.weights)

    def to_onnx(self, model, n_features, window):
        raise NotImplementedError


def _dataset(seed: int, test_seed: int) -> Dataset:
    """Two symbols, 6,000 rows each, split 60/20/20 in time; test rows drawn from their own seed."""
    symbols, n = ["SIG_AR1", "R_100"], 6_000
    frames = []
    for s, symbol in enumerate(symbols):
        rng = np.random.default_rng(seed + s)
        features = rng.normal(size=(n, 2))
        labels = _draw(_softmax(features @ np.array([[1.0, 0, -1.0], [0.5, 0, 0]])), rng)
        split = np.select([np.arange(n) < 0.6 * n, np.arange(n) < 0.8 * n], ["train", "validation"], "test").astype(object)
        test = split == "test"
        test_rng = np.random.default_rng(test_seed + s)
        features[test] = test_rng.normal(size=(test.sum(), 2)) * 3
        labels[test] = test_rng.integers(0, 3, test.sum())
        frames.append(
            pd.DataFrame(
                {"symbol": symbol, "epoch": 1_767_312_000 + np.arange(n), "tick": np.arange(n), "split": split}
                | {"f0": features[:, 0], "f1": features[:, 1], "direction": labels.astype(np.int8)}
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    spec = DatasetSpec(symbols=symbols, start=date(2026, 1, 2), end=date(2026, 1, 2), sequence_length=5)
    meta = DatasetMeta(
        spec=spec, feature_names=["f0", "f1"], boundaries=[0, 0], scaler_mean=[0.0, 0.0], scaler_scale=[1.0, 1.0],
        fitted={}, rows={}, dropped={}, class_balance={}, fingerprint="test",
    )  # fmt: skip
    return Dataset(frame, meta)


def test_the_validation_calibration_does_not_change_when_the_test_rows_do():
    family = _LinearFamily(np.array([[2.0, 0.0, -2.0], [0.0, 0.0, 0.0]]))  # over-confident, ignores f1
    model = TrainedModel(family=family, config=None, model=None)
    first = C.fit_validation(model, _dataset(seed=10, test_seed=100), min_rows=1_000, alpha=None)
    second = C.fit_validation(model, _dataset(seed=10, test_seed=200), min_rows=1_000, alpha=None)
    assert set(first.symbols) == {"SIG_AR1", "R_100"} and first.horizon == 10  # the spec's label horizon
    assert first == second
    assert first.symbols["SIG_AR1"].rows == len(_dataset(10, 100).windows("validation").ends) // 2
    assert first.symbols["SIG_AR1"].scale[0] < 0.8  # the over-confident model is tempered
    # ... while other validation rows do change it.
    assert C.fit_validation(model, _dataset(seed=11, test_seed=100), min_rows=1_000, alpha=None) != first
