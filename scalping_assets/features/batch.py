"""Vectorised, causal feature computation over a whole tick series (training, backtest, the assets).

Every rolling statistic is a difference of prefix sums or a trailing max/min filter, so the cost is
O(n) per feature whatever the window. All windowed sums are sums of integers and therefore exact:
pip moves, signs and event flags are integers already, and |r| and r^2 are split into two 30-bit
fixed-point limbs (a resolution of 2^-60 bp or bp^2, far below float rounding of any tick's value).
Exact sums do not depend on where a series starts and equal the running sums of
`stream.FeatureState` bit for bit; float prefix sums would not (a crash tick leaves rounding of its
own size in every later window). Log returns are logs of integer pip ratios, so the two paths differ
by at most an ulp of each value. `registry` documents each column.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.ndimage import maximum_filter1d, minimum_filter1d

from . import registry as R
from .fitted import FittedFeatures
from .garch import garch_variance

LIMB = 2.0**30
# The high limbs of a window of 500 squared returns must sum below 2^63: |r| is clipped at this
# (a 41 % move in one tick, far beyond anything the tick checks let through).
MAX_ABS_RETURN_BP = math.sqrt(2**63 / LIMB / max(R.RV_WINDOWS)) * 0.99


def fixed_limbs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative x as integers (hi, lo) with x ~= hi / 2^30 + lo / 2^60."""
    scaled = x * LIMB
    hi = np.floor(scaled)
    return hi.astype(np.int64), np.rint((scaled - hi) * LIMB).astype(np.int64)


def limb_window_mean(limbs: tuple[np.ndarray, np.ndarray], w: int) -> np.ndarray:
    """Mean over the trailing w ticks (from tick 1 on) of a fixed-point series."""
    hi, lo = limbs
    return (trailing_sum(hi, w, 1) / LIMB + trailing_sum(lo, w, 1) / LIMB**2) / w


def log_returns_bp(k: np.ndarray) -> np.ndarray:
    """r_t = 1e4 ln(k_t / k_{t-1}) with r_0 = 0, clipped to +-MAX_ABS_RETURN_BP."""
    r = np.zeros(len(k))
    r[1:] = np.clip(1e4 * np.log(k[1:] / k[:-1]), -MAX_ABS_RETURN_BP, MAX_ABS_RETURN_BP)
    return r


class FeatureInputError(ValueError):
    """Ticks that features cannot be computed from; the message says which tick and why."""


def validate_ticks(epochs: np.ndarray, quotes: np.ndarray, pip_size: float) -> None:
    if len(epochs) != len(quotes):
        raise FeatureInputError(f"{len(epochs)} epochs but {len(quotes)} quotes")
    if len(quotes) == 0:
        raise FeatureInputError("no ticks to compute features from")
    bad = np.flatnonzero(~np.isfinite(quotes) | (quotes < pip_size / 2))
    if bad.size:
        raise FeatureInputError(
            f"quote at row {bad[0]} (epoch {epochs[bad[0]]}) is {quotes[bad[0]]}: quotes must be finite and at least half a pip"
        )
    steps = np.diff(epochs)
    if (steps <= 0).any():
        row = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise FeatureInputError(f"epochs must increase strictly: row {row} has epoch {epochs[row]} after {epochs[row - 1]}")


def trailing_sum(x: np.ndarray, w: int, first: int) -> np.ndarray:
    """Sum of x[t-w+1..t], defined for t >= first + w - 1 (x is meaningful from index `first`)."""
    n = len(x)
    out = np.full(n, np.nan)
    if n < first + w:
        return out
    cs = np.concatenate(([0], np.cumsum(x[first:])))
    sums = cs[w:] - cs[:-w]
    out[first + w - 1 :] = sums
    return out


def _trailing_max(x: np.ndarray, size: int) -> np.ndarray:
    return maximum_filter1d(x, size=size, origin=(size - 1) // 2)


def _trailing_min(x: np.ndarray, size: int) -> np.ndarray:
    return minimum_filter1d(x, size=size, origin=(size - 1) // 2)


def _masked(values: np.ndarray, valid_from: int) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64).copy()
    out[:valid_from] = np.nan
    return out


def _lagged(x: np.ndarray, lag: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    out[lag:] = x[: len(x) - lag]
    return out


def pips(quotes: np.ndarray, pip_size: float) -> np.ndarray:
    return np.rint(np.asarray(quotes, np.float64) / pip_size).astype(np.int64)


def _run_length(sign: np.ndarray) -> np.ndarray:
    n = len(sign)
    index = np.arange(n)
    starts = np.ones(n, bool)
    starts[1:] = (sign[1:] != sign[:-1]) | (sign[1:] == 0)
    run_start = np.maximum.accumulate(np.where(starts, index, 0))
    length = np.minimum(index - run_start + 1, R.RUN_CAP)
    return _masked(length * sign, R.RUN_CAP)


def _events(d: np.ndarray) -> np.ndarray:
    """Event flags (int8) from index EVENT_SIGMA_WINDOW + 1 on; the threshold is exact integer arithmetic."""
    w = R.EVENT_SIGMA_WINDOW
    d2 = d * d
    cs = np.concatenate(([0], np.cumsum(d2[1:])))  # cs[i] = sum of d2[1..i]
    event = np.zeros(len(d), np.int8)
    j = np.arange(w + 1, len(d))
    prior = cs[j - 1] - cs[j - 1 - w]
    event[j] = (d2[j] * w > R.EVENT_SIGMAS**2 * prior) & (d[j] != 0)
    return event


def base_features(epochs: np.ndarray, quotes: np.ndarray, pip_size: float) -> dict[str, np.ndarray]:
    """Every base feature as float64 columns of the same length as the ticks (NaN during warm-up)."""
    epochs = np.asarray(epochs, np.int64)
    quotes = np.asarray(quotes, np.float64)
    validate_ticks(epochs, quotes, pip_size)
    n = len(quotes)
    k = pips(quotes, pip_size)
    d = np.zeros(n, np.int64)
    d[1:] = np.diff(k)
    s = np.sign(d)
    r = log_returns_bp(k)
    out: dict[str, np.ndarray] = {"tick_dir": _masked(s, 1), "tick_size": _masked(np.abs(d), 1)}
    for w in R.VELOCITY_WINDOWS:
        velocity = np.full(n, np.nan)
        velocity[w:] = w / (epochs[w:] - epochs[:-w])
        out[f"tick_velocity_{w}"] = velocity
    for w in R.IMBALANCE_WINDOWS:
        out[f"imbalance_{w}"] = trailing_sum(s, w, 1) / w
    out["run_length"] = _run_length(s)
    abs_r, r2 = fixed_limbs(np.abs(r)), fixed_limbs(r * r)
    for w in R.IMPACT_WINDOWS:
        out[f"impact_{w}"] = limb_window_mean(abs_r, w)
    for w in R.RV_WINDOWS:
        out[f"rv_{w}"] = np.sqrt(limb_window_mean(r2, w))
    highs = {w: _trailing_max(k, w + 1) for w in set(R.PARKINSON_WINDOWS) | set(R.LEVEL_WINDOWS)}
    lows = {w: _trailing_min(k, w + 1) for w in highs}
    for w in R.PARKINSON_WINDOWS:
        out[f"parkinson_{w}"] = _masked(1e4 * np.log(highs[w] / lows[w]) / math.sqrt(4 * math.log(2) * w), w)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = out["rv_20"] / out["rv_500"]
    out["vol_ratio"] = np.where(out["rv_500"] == 0, 0.0, ratio)
    for w in R.LEVEL_WINDOWS:
        out[f"dist_support_{w}"] = _masked(1e4 * np.log(k / lows[w]), w)
        out[f"dist_resistance_{w}"] = _masked(1e4 * np.log(highs[w] / k), w)
    for w in R.MOMENTUM_WINDOWS:
        out[f"momentum_{w}"] = 1e4 * np.log(k / _lagged(k, w))
    a = R.ACCEL_WINDOW
    out[f"accel_{a}"] = out[f"momentum_{a}"] - _lagged(out[f"momentum_{a}"], a)
    for w in R.MEAN_REVERSION_WINDOWS:
        s1 = trailing_sum(k, w, 0)
        d2 = trailing_sum(d * d, w, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (w * k - s1) / (w * np.sqrt(d2))
        out[f"mr_z_{w}"] = np.where(d2 == 0, 0.0, z)
    out.update(_event_features(s, d, k))
    out.update(time_features(epochs))
    return out


def _event_features(s: np.ndarray, d: np.ndarray, k: np.ndarray) -> dict[str, np.ndarray]:
    n = len(d)
    horizon = R.EVENT_SIGMA_WINDOW + R.EVENT_HORIZON
    event = _events(d)
    index = np.arange(n)
    last = np.maximum.accumulate(np.where(event == 1, index, -(10**9)))
    since = np.minimum(index - last, R.EVENT_HORIZON)
    sign = np.where(since < R.EVENT_HORIZON, s[np.maximum(last, 0)], 0)
    rate = trailing_sum(event.astype(np.int64), R.EVENT_HORIZON, 0) * (1000 / R.EVENT_HORIZON)
    with np.errstate(divide="ignore", invalid="ignore"):
        trend = 1e4 * np.log(k / k[np.maximum(index - since, 0)]) / since
    trend = np.where(since == 0, 0.0, trend)
    return {
        "ticks_since_event": _masked(since, horizon),
        "last_event_sign": _masked(sign, horizon),
        "event_rate": _masked(rate, horizon),
        "trend_since_event": _masked(trend, horizon),
    }


def session_of_hour(hour: np.ndarray) -> np.ndarray:
    session = np.zeros(len(hour), np.int64)
    for start, end, label in R.SESSIONS:
        session[(hour >= start) & (hour < end)] = label
    return session


def time_features(epochs: np.ndarray) -> dict[str, np.ndarray]:
    seconds = epochs % 86400
    hour = seconds / 3600.0
    return {
        "hour": hour,
        "day_of_week": ((epochs // 86400 + 3) % 7).astype(np.float64),  # 1970-01-01 was a Thursday
        "session": session_of_hour(hour).astype(np.float64),
    }


def fitted_features(quotes: np.ndarray, pip_size: float, rv: np.ndarray, fitted: FittedFeatures) -> dict[str, np.ndarray]:
    """garch_sigma and vol_regime from the parameters fitted on the training span."""
    r = log_returns_bp(pips(quotes, pip_size))
    return {
        "garch_sigma": np.sqrt(garch_variance(r, fitted.garch, R.GARCH_WINDOW)),
        "vol_regime": fitted.regime(rv),
    }


def compute_features(
    ticks: pd.DataFrame, pip_size: float, fitted: FittedFeatures | None = None, spread: bool = False
) -> pd.DataFrame:
    """Feature frame (epoch + the registry's columns in order) for a tick frame with epoch and quote."""
    epochs = ticks["epoch"].to_numpy(np.int64)
    quotes = ticks["quote"].to_numpy(np.float64)
    columns = base_features(epochs, quotes, pip_size)
    if spread:
        bid = ticks["bid"].to_numpy(np.float64) if "bid" in ticks else np.full(len(ticks), np.nan)
        ask = ticks["ask"].to_numpy(np.float64) if "ask" in ticks else np.full(len(ticks), np.nan)
        missing = np.flatnonzero(~(np.isfinite(bid) & np.isfinite(ask)))
        if missing.size:
            raise FeatureInputError(
                f"spread needs bid and ask on every tick; row {missing[0]} (epoch {epochs[missing[0]]}) has none "
                "(ticks backfilled from ticks_history carry no bid/ask)"
            )
        columns["spread"] = np.rint((ask - bid) / pip_size)
    if fitted is not None:
        columns.update(fitted_features(quotes, pip_size, columns[f"rv_{R.REGIME_RV_WINDOW}"], fitted))
    names = R.feature_names(fitted=fitted is not None, spread=spread)
    frame = pd.DataFrame({name: columns[name] for name in names})
    frame.insert(0, "epoch", epochs)
    return frame
