"""The models' edge test is calibrated: on martingale ticks no predictor beats the majority rule, and
the test rejects at its nominal rate — where taking the span's majority accuracy as a known constant
rejected two to four times too often."""

import math
from datetime import date

import numpy as np
import pytest
from scipy.stats import binomtest

from scalping_assets.features.labels import DOWN, UP, direction_labels
from scalping_assets.market.simulator import simulator
from scalping_assets.models.metrics import edge_test, independent_rows, sign_test

RUNS, TRAIN, TEST, HORIZON = 2000, 2000, 5000, 10


@pytest.fixture(scope="module")
def null_runs():
    """2,000 (training, test) stretches of 1HZ100V, a martingale: labels only, nothing to learn."""
    ticks = simulator("1HZ100V", 11).days(date(2026, 1, 1), date(2026, 6, 15))
    y, _ = direction_labels(ticks["quote"].to_numpy(), 0.01, HORIZON, 0.0)
    size = TRAIN + TEST
    assert len(y) >= RUNS * size + HORIZON
    return [(y[i * size : i * size + TRAIN], y[i * size + TRAIN : (i + 1) * size]) for i in range(RUNS)]


def _predictors(rng: np.random.Generator, majority: int, n: int) -> dict[str, np.ndarray]:
    other = DOWN if majority == UP else UP
    return {
        "random up/down": rng.choice([UP, DOWN], size=n),
        "always the other direction": np.full(n, other),  # wins whenever the span leans its way
    }


def _within_tolerance(rejections: int, alpha: float) -> bool:
    """The rate is within 3.5 binomial standard errors of alpha (a false alarm about once in 2,000)."""
    return abs(rejections / RUNS - alpha) <= 3.5 * math.sqrt(alpha * (1 - alpha) / RUNS)


def test_the_edge_test_rejects_at_its_nominal_rate_on_null_data(null_runs):
    rng = np.random.default_rng(1)
    p_values: dict[str, list[float]] = {}
    naive: dict[str, list[float]] = {}
    for train, test in null_runs:
        majority = int(np.bincount(train, minlength=3).argmax())
        rows = independent_rows(len(test), HORIZON)
        for name, predicted in _predictors(rng, majority, len(test)).items():
            p_values.setdefault(name, []).append(edge_test(test, predicted, majority, HORIZON)["p_value"])
            # The former test: the span's majority accuracy taken as a known constant.
            hits, base = int((predicted[rows] == test[rows]).sum()), float((test[rows] == majority).mean())
            naive.setdefault(name, []).append(binomtest(hits, len(rows), base, alternative="greater").pvalue)
    for name in p_values:
        p, old = np.array(p_values[name]), np.array(naive[name])
        for alpha in (0.05, 0.01):
            assert _within_tolerance(int((p < alpha).sum()), alpha), f"{name}: {(p < alpha).mean():.4f} at {alpha}"
        # The check can fail: the unpaired test does, by far.
        assert (old < 0.05).mean() > 0.05 + 3.5 * math.sqrt(0.05 * 0.95 / RUNS), name


def test_the_sign_test_counts_only_rows_where_exactly_one_is_right():
    y = np.array([UP, UP, DOWN, DOWN, UP, DOWN])
    predicted = np.array([UP, DOWN, DOWN, DOWN, UP, UP])  # majority rule: always UP
    edge = edge_test(y, predicted, UP, 1)
    assert (edge["wins_over_majority"], edge["losses_to_majority"]) == (2, 1)
    assert edge["p_value"] == pytest.approx(sign_test(2, 1)) and sign_test(0, 0) == 1.0
    assert sign_test(60, 40) < 0.05 < sign_test(55, 45)
