"""Feature parameters learnt from the training span only: GARCH(1,1) and the volatility-regime scale."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from pydantic import BaseModel

from .garch import DEFAULT_MAX_FIT_OBS, GarchParams, fit_garch

REGIME_LEVELS = np.linspace(0.0, 1.0, 101)


class FittedFeatures(BaseModel):
    """Everything a feature needs that was estimated on training data; saved with datasets and models."""

    garch: GarchParams
    rv_knots: list[float]  # percentiles 0..100 of the training span's regime RV

    def regime(self, rv: np.ndarray | float) -> np.ndarray | float:
        """Empirical CDF of the training RV at `rv`, interpolated between percentiles (NaN stays NaN).

        Tied percentiles (a clustered RV) keep the highest level, so the curve is a function even
        where it jumps.
        """
        xp, fp = _regime_curve(tuple(self.rv_knots))
        return np.interp(rv, xp, fp, left=0.0, right=1.0)


@lru_cache(maxsize=64)
def _regime_curve(knots: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    xp, last = np.unique(np.asarray(knots)[::-1], return_index=True)
    return xp, REGIME_LEVELS[len(knots) - 1 - last]


def fit_features(returns_bp: np.ndarray, regime_rv: np.ndarray, max_obs: int = DEFAULT_MAX_FIT_OBS) -> FittedFeatures:
    """Fit on training-span arrays: tick returns in bp and the regime RV column (NaNs are skipped)."""
    rv = np.asarray(regime_rv, np.float64)
    rv = rv[np.isfinite(rv)]
    if rv.size == 0:
        raise ValueError("no defined regime RV in the training span: is it shorter than the warm-up?")
    return FittedFeatures(garch=fit_garch(returns_bp, max_obs), rv_knots=np.quantile(rv, REGIME_LEVELS).tolist())
