"""Bayes-optimal direction accuracy of the planted AR(1) signal.

Log-returns follow r_t = phi * r_{t-1} + sigma * eps_t. The move over the next N ticks,
S = r_{t+1} + ... + r_{t+N}, given everything known at t is Gaussian with
mean m = a * r_t, a = phi (1 - phi^N) / (1 - phi), and variance
v = sigma^2 * sum_{j=1..N} ((1 - phi^j) / (1 - phi))^2 (the process is Markov in r_t).
With r_t stationary, m ~ N(0, s^2), s = a * sigma / sqrt(1 - phi^2). Predicting sign(m):
    P(correct) = 1/2 + arctan(s / sqrt(v)) / pi        (two Gaussians, same-sign probability).
With a NEUTRAL band |S| <= threshold, the Bayes rule picks the likeliest of the three classes
for each m, and the accuracy is that maximum averaged over m (adaptive quadrature).
Both ignore quote rounding, which only removes information: they are upper bounds for a model.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.integrate import quad
from scipy.stats import norm

from .symbols import AR1Generator, get_symbol


def _moments(phi: float, sigma: float, horizon: int) -> tuple[float, float]:
    """Stdev of the conditional mean and of the conditional error of the N-tick log move."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 tick, got {horizon}")
    if not -1 < phi < 1:
        raise ValueError(f"phi must lie in (-1, 1) for a stationary AR(1), got {phi}")
    j = np.arange(1, horizon + 1)
    weights = (1 - phi**j) / (1 - phi)
    a = phi * weights[-1]
    signal = abs(a) * sigma / math.sqrt(1 - phi**2)
    noise = sigma * math.sqrt(float(np.sum(weights**2)))
    return signal, noise


def ar1_bayes_accuracy(phi: float, sigma: float, horizon: int, threshold: float = 0.0) -> float:
    """Best achievable accuracy of an N-tick direction label (2 classes, or 3 with a threshold)."""
    signal, noise = _moments(phi, sigma, horizon)
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    if threshold == 0:
        return 0.5 + math.atan(signal / noise) / math.pi

    def best_class_probability(z: float) -> float:
        m = signal * z
        p_down = norm.cdf((-threshold - m) / noise)
        p_up = norm.sf((threshold - m) / noise)
        return max(p_down, p_up, 1 - p_down - p_up) * norm.pdf(z)

    # In standard units z = m / s the integrand is symmetric and has kinks where the best class
    # changes: adaptive quadrature over z in [0, 12] (the tail beyond is below 1e-32).
    value, _ = quad(best_class_probability, 0, 12, epsabs=1e-12, limit=200)
    return 2 * value


def bayes_direction_accuracy(symbol: str = "SIG_AR1", horizon: int = 10, threshold: float = 0.0) -> float:
    """Bayes-optimal direction accuracy at `horizon` ticks for a planted-signal symbol.

    `threshold` is in log-return units: moves with |log(S_{t+N}/S_t)| <= threshold are NEUTRAL.
    """
    spec = get_symbol(symbol)
    if not isinstance(spec.generator, AR1Generator):
        raise ValueError(f"{symbol} carries no planted signal; its best accuracy is chance level")
    return ar1_bayes_accuracy(spec.generator.phi, spec.generator.sigma, horizon, threshold)
