"""Incremental features: one tick in, the feature vector of that tick out (what serving uses).

`FeatureState.update` returns the values `batch.compute_features` gives for the same tick of the
series seen so far. Every windowed statistic is an exact integer running sum (fixed-point limbs for
|r| and r^2), as in the batch path, and both paths use numpy's log, so they agree to the last bit on
the tests' 100k+ ticks; the promise is 1e-9 relative. About 30 us per tick.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from . import registry as R
from .batch import LIMB, MAX_ABS_RETURN_BP, FeatureInputError
from .fitted import FittedFeatures
from .garch import GarchFilter


# numpy's log, not math.log: they differ in the last bit for about 1 % of inputs, and the regime's
# empirical CDF can turn one bit of RV into a jump between percentiles.
def _log(x: float) -> float:
    return float(np.log(x))


_LOG2_FACTOR = {w: math.sqrt(4 * math.log(2) * w) for w in R.PARKINSON_WINDOWS}
NAN = math.nan


class _WindowSum:
    """Exact sum of the last `size` pushed integers."""

    def __init__(self, size: int):
        self.size = size
        self.values: deque = deque(maxlen=size)
        self.total = 0

    def push(self, x) -> None:
        if len(self.values) == self.size:
            self.total -= self.values[0]
        self.values.append(x)
        self.total += x

    @property
    def full(self) -> bool:
        return len(self.values) == self.size


class _LimbWindowMean:
    """Mean of the last `size` non-negative floats, summed exactly as two fixed-point limbs (as in batch)."""

    def __init__(self, size: int):
        self.size = size
        self.hi = _WindowSum(size)
        self.lo = _WindowSum(size)

    def push(self, x: float) -> None:
        scaled = x * LIMB
        hi = math.floor(scaled)
        self.hi.push(hi)
        self.lo.push(round((scaled - hi) * LIMB))

    @property
    def full(self) -> bool:
        return self.hi.full

    @property
    def mean(self) -> float:
        return (self.hi.total / LIMB + self.lo.total / LIMB**2) / self.size


class _WindowExtreme:
    """Max (sign=1) or min (sign=-1) of the last `size` values with a monotonic deque."""

    def __init__(self, size: int, sign: int):
        self.size = size
        self.sign = sign
        self.items: deque[tuple[int, int]] = deque()

    def push(self, index: int, x: int) -> int:
        while self.items and self.sign * self.items[-1][1] <= self.sign * x:
            self.items.pop()
        self.items.append((index, x))
        if self.items[0][0] <= index - self.size:
            self.items.popleft()
        return self.items[0][1]


class FeatureState:
    """Feature state of one symbol's tick stream. Feed ticks in order with `update`."""

    def __init__(self, pip_size: float, fitted: FittedFeatures | None = None, spread: bool = False):
        self.pip_size = pip_size
        self.fitted = fitted
        self.spread = spread
        self.names = R.feature_names(fitted=fitted is not None, spread=spread)
        self.n = 0
        self._last_epoch: int | None = None
        self._last_k = 0
        self._run = 0
        depth = max(R.WARMUP_TICKS, *R.VELOCITY_WINDOWS, *R.MOMENTUM_WINDOWS) + 1
        self._epochs: deque[int] = deque(maxlen=max(R.VELOCITY_WINDOWS) + 1)
        self._k_history: deque[int] = deque(maxlen=depth)
        self._momentum: deque[float] = deque(maxlen=R.ACCEL_WINDOW + 1)
        self._sign = {w: _WindowSum(w) for w in R.IMBALANCE_WINDOWS}
        self._abs_r = {w: _LimbWindowMean(w) for w in R.IMPACT_WINDOWS}
        self._r2 = {w: _LimbWindowMean(w) for w in R.RV_WINDOWS}
        self._k = {w: _WindowSum(w) for w in R.MEAN_REVERSION_WINDOWS}
        self._d2 = {w: _WindowSum(w) for w in R.MEAN_REVERSION_WINDOWS}
        extremes = set(R.PARKINSON_WINDOWS) | set(R.LEVEL_WINDOWS)
        self._high = {w: _WindowExtreme(w + 1, 1) for w in extremes}
        self._low = {w: _WindowExtreme(w + 1, -1) for w in extremes}
        self._event_d2 = _WindowSum(R.EVENT_SIGMA_WINDOW)
        self._events = _WindowSum(R.EVENT_HORIZON)
        self._last_event: tuple[int, int] | None = None  # (tick index, sign)
        self._garch = GarchFilter(fitted.garch, R.GARCH_WINDOW) if fitted is not None else None

    def update(self, epoch: int, quote: float, bid: float | None = None, ask: float | None = None) -> np.ndarray:
        """Feature vector (in `self.names` order) of this tick; NaN where the warm-up is not over."""
        if not (math.isfinite(quote) and quote >= self.pip_size / 2):
            raise FeatureInputError(f"quote at epoch {epoch} is {quote}: quotes must be finite and at least half a pip")
        if self._last_epoch is not None and epoch <= self._last_epoch:
            raise FeatureInputError(f"epochs must increase strictly: {epoch} after {self._last_epoch}")
        if self.spread and not (bid is not None and ask is not None and math.isfinite(bid) and math.isfinite(ask)):
            raise FeatureInputError(f"spread needs bid and ask on every tick; epoch {epoch} has none")
        t = self.n
        k = round(quote / self.pip_size)
        values: dict[str, float] = {}
        first = t == 0
        d = 0 if first else k - self._last_k
        s = (d > 0) - (d < 0)
        r = 0.0 if first else min(max(1e4 * _log(k / self._last_k), -MAX_ABS_RETURN_BP), MAX_ABS_RETURN_BP)
        self._epochs.append(epoch)
        self._k_history.append(k)
        if not first:
            for acc in self._sign.values():
                acc.push(s)
            for acc in self._abs_r.values():
                acc.push(abs(r))
            for acc in self._r2.values():
                acc.push(r * r)
            for acc in self._d2.values():
                acc.push(d * d)
        for acc in self._k.values():
            acc.push(k)

        values["tick_dir"] = NAN if first else float(s)
        values["tick_size"] = NAN if first else float(abs(d))
        for w in R.VELOCITY_WINDOWS:
            values[f"tick_velocity_{w}"] = w / (epoch - self._epochs[-1 - w]) if t >= w else NAN
        for w, acc in self._sign.items():
            values[f"imbalance_{w}"] = acc.total / w if acc.full else NAN
        self._run = 0 if s == 0 else (s * min(abs(self._run) + 1, R.RUN_CAP) if self._run * s > 0 else s)
        values["run_length"] = float(self._run) if t >= R.RUN_CAP else NAN
        for w, acc in self._abs_r.items():
            values[f"impact_{w}"] = acc.mean if acc.full else NAN
        for w, acc in self._r2.items():
            values[f"rv_{w}"] = math.sqrt(acc.mean) if acc.full else NAN
        if self.spread:
            values["spread"] = float(round((ask - bid) / self.pip_size))
        highs = {w: ext.push(t, k) for w, ext in self._high.items()}
        lows = {w: ext.push(t, k) for w, ext in self._low.items()}
        for w in R.PARKINSON_WINDOWS:
            values[f"parkinson_{w}"] = 1e4 * _log(highs[w] / lows[w]) / _LOG2_FACTOR[w] if t >= w else NAN
        rv_long = values["rv_500"]
        values["vol_ratio"] = NAN if math.isnan(rv_long) else (0.0 if rv_long == 0 else values["rv_20"] / rv_long)
        for w in R.LEVEL_WINDOWS:
            values[f"dist_support_{w}"] = 1e4 * _log(k / lows[w]) if t >= w else NAN
            values[f"dist_resistance_{w}"] = 1e4 * _log(highs[w] / k) if t >= w else NAN
        for w in R.MOMENTUM_WINDOWS:
            values[f"momentum_{w}"] = 1e4 * _log(k / self._k_history[-1 - w]) if t >= w else NAN
        a = R.ACCEL_WINDOW
        self._momentum.append(values[f"momentum_{a}"])
        values[f"accel_{a}"] = values[f"momentum_{a}"] - self._momentum[0] if t >= 2 * a else NAN
        for w in R.MEAN_REVERSION_WINDOWS:
            d2 = self._d2[w]
            if not d2.full:
                values[f"mr_z_{w}"] = NAN
            else:
                values[f"mr_z_{w}"] = 0.0 if d2.total == 0 else (w * k - self._k[w].total) / (w * math.sqrt(d2.total))
        values.update(self._event_values(t, d, s, k))
        hour = (epoch % 86400) / 3600.0
        values["hour"] = hour
        values["day_of_week"] = float((epoch // 86400 + 3) % 7)
        values["session"] = float(next(label for start, end, label in R.SESSIONS if start <= hour < end))
        if self.fitted is not None:
            variance = self._garch.update(r) if not first else NAN
            values["garch_sigma"] = math.sqrt(variance) if not math.isnan(variance) else NAN
            values["vol_regime"] = float(self.fitted.regime(values[f"rv_{R.REGIME_RV_WINDOW}"]))
        self._last_epoch, self._last_k = epoch, k
        self.n += 1
        return np.array([values[name] for name in self.names])

    def _event_values(self, t: int, d: int, s: int, k: int) -> dict[str, float]:
        w = R.EVENT_SIGMA_WINDOW
        event = 0
        if t >= w + 1:
            event = int(d * d * w > R.EVENT_SIGMAS**2 * self._event_d2.total and d != 0)
        if t >= 1:
            self._event_d2.push(d * d)
        self._events.push(event)
        if event:
            self._last_event = (t, s)
        if t < w + R.EVENT_HORIZON:
            return dict.fromkeys(("ticks_since_event", "last_event_sign", "event_rate", "trend_since_event"), NAN)
        since = R.EVENT_HORIZON if self._last_event is None else min(t - self._last_event[0], R.EVENT_HORIZON)
        sign = self._last_event[1] if since < R.EVENT_HORIZON else 0
        trend = 0.0 if since == 0 else 1e4 * _log(k / self._k_history[-1 - since]) / since
        return {
            "ticks_since_event": float(since),
            "last_event_sign": float(sign),
            "event_rate": self._events.total * (1000 / R.EVENT_HORIZON),
            "trend_since_event": trend,
        }
