"""The planted signal's Bayes accuracy, checked against exact simulation of the generator itself."""

import math
from datetime import timedelta

import numpy as np
import pytest
from scipy.stats import norm

from scalping_assets.market.planted import ar1_bayes_accuracy, bayes_direction_accuracy
from scalping_assets.market.simulator import DEFAULT_ORIGIN, TickSimulator
from scalping_assets.market.symbols import get_symbol


@pytest.fixture(scope="module")
def ar1_returns() -> np.ndarray:
    sim = TickSimulator("SIG_AR1", seed=21)
    days = [sim.simulate_day(DEFAULT_ORIGIN + timedelta(days=i)).prices for i in range(6)]
    return np.diff(np.log(np.concatenate(days)))


def _future_moves(returns: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(r_t, r_{t+1} + ... + r_{t+N}) for every t with a full horizon ahead."""
    csum = np.concatenate([[0.0], np.cumsum(returns)])
    t = np.arange(len(returns) - horizon)
    return returns[t], csum[t + horizon + 1] - csum[t + 1]


@pytest.mark.parametrize("horizon", [1, 3, 10])
def test_closed_form_matches_simulated_bayes_rule(ar1_returns, horizon):
    phi = get_symbol("SIG_AR1").generator.phi
    now, future = _future_moves(ar1_returns, horizon)
    # The Bayes rule predicts the sign of the conditional mean, i.e. sign(phi * r_t).
    hits = np.sign(phi * now) == np.sign(future)
    expected = bayes_direction_accuracy("SIG_AR1", horizon)
    se = math.sqrt(expected * (1 - expected) / len(hits))
    assert abs(hits.mean() - expected) < 4 * se, (hits.mean(), expected)
    assert expected > 0.5


def test_three_class_accuracy_matches_simulated_bayes_rule(ar1_returns):
    g = get_symbol("SIG_AR1").generator
    horizon, threshold = 5, 1.5e-4
    now, future = _future_moves(ar1_returns, horizon)
    j = np.arange(1, horizon + 1)
    weights = (1 - g.phi**j) / (1 - g.phi)
    mean = g.phi * weights[-1] * now
    noise = g.sigma * math.sqrt(np.sum(weights**2))
    p_down, p_up = norm.cdf((-threshold - mean) / noise), norm.sf((threshold - mean) / noise)
    choice = np.argmax(np.stack([p_down, 1 - p_down - p_up, p_up]), axis=0) - 1
    truth = np.where(future > threshold, 1, np.where(future < -threshold, -1, 0))
    hits = choice == truth
    expected = bayes_direction_accuracy("SIG_AR1", horizon, threshold)
    se = math.sqrt(expected * (1 - expected) / len(hits))
    assert abs(hits.mean() - expected) < 4 * se, (hits.mean(), expected)


def test_limits():
    # No autocorrelation, no edge; a huge band makes NEUTRAL certain.
    assert ar1_bayes_accuracy(0.0, 1e-4, 10) == pytest.approx(0.5)
    assert ar1_bayes_accuracy(0.5, 1e-4, 10, threshold=1.0) == pytest.approx(1.0)
    # The signal decays with the horizon.
    accuracies = [bayes_direction_accuracy("SIG_AR1", h) for h in (1, 2, 5, 10, 50)]
    assert accuracies == sorted(accuracies, reverse=True)
    # A tiny band agrees with the two-class closed form.
    assert ar1_bayes_accuracy(0.5, 1e-4, 10, threshold=1e-12) == pytest.approx(ar1_bayes_accuracy(0.5, 1e-4, 10), abs=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="no planted signal"):
        bayes_direction_accuracy("R_100")
    with pytest.raises(ValueError, match="horizon"):
        bayes_direction_accuracy("SIG_AR1", horizon=0)
    with pytest.raises(ValueError, match="threshold"):
        bayes_direction_accuracy("SIG_AR1", threshold=-1)
    with pytest.raises(ValueError, match="stationary"):
        ar1_bayes_accuracy(1.0, 1e-4, 5)
