"""Shared inputs and comparisons for the feature tests."""

from datetime import date
from functools import lru_cache

import numpy as np
import pandas as pd

from scalping_assets.features.batch import compute_features, log_returns_bp, pips
from scalping_assets.features.fitted import FittedFeatures, fit_features
from scalping_assets.market.simulator import simulator
from scalping_assets.market.symbols import get_symbol

# Parity and warm-up tolerance: |a - b| <= RTOL * max(|a|, |b|), plus ATOL for values that are 0 in
# exact arithmetic (a difference of two equal logs).
RTOL = 1e-9
ATOL = 1e-12


@lru_cache(maxsize=16)
def sim_ticks(symbol: str, n: int, seed: int = 7) -> pd.DataFrame:
    spec = get_symbol(symbol)
    days = -(-n // spec.ticks_per_day)
    frame = simulator(symbol, seed).days(date(2026, 1, 1), date(2026, 1, days))
    return frame.iloc[:n].reset_index(drop=True)


def fitted_on_prefix(ticks: pd.DataFrame, symbol: str, n_train: int) -> FittedFeatures:
    pip = get_symbol(symbol).pip_size
    head = ticks.iloc[:n_train]
    rv = compute_features(head, pip)["rv_100"].to_numpy()
    return fit_features(log_returns_bp(pips(head["quote"].to_numpy(), pip))[1:], rv)


def max_relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| / max(|a|, |b|) over entries defined in both (ATOL-level differences count as 0)."""
    both = ~np.isnan(a) & ~np.isnan(b)
    diff = np.abs(a[both] - b[both])
    scale = np.maximum(np.abs(a[both]), np.abs(b[both]))
    rel = np.where(diff <= ATOL, 0.0, diff / np.where(scale == 0, 1.0, scale))
    return float(rel.max()) if rel.size else 0.0


def assert_same_features(a: pd.DataFrame | np.ndarray, b: pd.DataFrame | np.ndarray, names: list[str], where: str) -> None:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape, where
    for j, name in enumerate(names):
        nan_a, nan_b = np.isnan(a[:, j]), np.isnan(b[:, j])
        assert (nan_a == nan_b).all(), f"{where}: {name} defined at different rows (first {np.flatnonzero(nan_a != nan_b)[0]})"
        err = max_relative_error(a[:, j], b[:, j])
        assert err <= RTOL, f"{where}: {name} differs by {err:.3g} relative"
