"""Simulated ticks addressed by epoch range: what the local Deriv server streams and serves as history."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from ..market.simulator import DEFAULT_ORIGIN, SimulatedDay, day_start_epoch, simulator
from ..market.store import epoch_day, parse_epoch
from ..market.symbols import get_symbol

_CACHED_DAYS = 64


@dataclass(frozen=True)
class VolatilityChange:
    """From `epoch` on, `symbol`'s log-price moves `factor` times as far from where it stood at the
    change: the same path (its planted signal too) at `factor` times the volatility, without a jump."""

    symbol: str
    epoch: int
    factor: float

    def __post_init__(self) -> None:
        if not self.factor > 0:
            raise ValueError(f"volatility change of {self.symbol}: the factor must be positive, got {self.factor}")

    @classmethod
    def parse(cls, text: str) -> VolatilityChange:
        """`SYMBOL=FACTOR@TIME` (TIME an epoch or ISO time, UTC), e.g. `SIG_AR1=3@2026-01-04`."""
        symbol, eq, rest = text.partition("=")
        factor, at, when = rest.partition("@")
        if not (eq and at and symbol and factor and when):
            raise ValueError(f"a volatility change is SYMBOL=FACTOR@TIME, e.g. SIG_AR1=3@2026-01-04; got {text!r}")
        get_symbol(symbol)  # UnknownSymbolError names it
        return cls(symbol, parse_epoch(when), float(factor))


class SimulatedTicks:
    def __init__(self, seed: int = 7, origin: date = DEFAULT_ORIGIN, changes: tuple[VolatilityChange, ...] = ()):
        self.seed, self.origin = seed, origin
        self.changes = {c.symbol: c for c in changes}
        self._days: OrderedDict[tuple[str, date], SimulatedDay] = OrderedDict()

    def _day(self, symbol: str, day: date) -> SimulatedDay:
        key = (symbol, day)
        if key not in self._days:
            self._days[key] = simulator(symbol, self.seed, self.origin).simulate_day(day)
            if len(self._days) > _CACHED_DAYS:
                self._days.popitem(last=False)
        self._days.move_to_end(key)
        return self._days[key]

    def between(self, symbol: str, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        """Epochs and quotes of the ticks with lo <= epoch <= hi (clipped to the simulation origin)."""
        lo = max(math.ceil(lo), day_start_epoch(self.origin))
        hi = math.floor(hi)
        if hi < lo:
            return np.empty(0, np.int64), np.empty(0)
        interval = get_symbol(symbol).tick_interval_s
        epochs, quotes = [], []
        day = epoch_day(lo)
        while day_start_epoch(day) <= hi:
            sim = self._day(symbol, day)
            start = day_start_epoch(day)
            first = max(0, -(-(lo - start) // interval))
            last = min(len(sim.epochs) - 1, (hi - start) // interval)
            if last >= first:
                epochs.append(sim.epochs[first : last + 1])
                quotes.append(sim.quotes[first : last + 1])
            day += timedelta(days=1)
        if not epochs:
            return np.empty(0, np.int64), np.empty(0)
        epochs, quotes = np.concatenate(epochs), np.concatenate(quotes)
        if symbol in self.changes:
            quotes = self._changed(self.changes[symbol], epochs, quotes)
        return epochs, quotes

    def _changed(self, change: VolatilityChange, epochs: np.ndarray, quotes: np.ndarray) -> np.ndarray:
        after = epochs >= change.epoch
        if not after.any():
            return quotes
        sim = self._day(change.symbol, epoch_day(change.epoch))
        at = min(int(np.searchsorted(sim.epochs, change.epoch)), len(sim.epochs) - 1)
        anchor = sim.quotes[at]  # where the price stood when the change came
        changed = quotes.copy()
        changed[after] = anchor * np.exp(change.factor * np.log(quotes[after] / anchor))
        return np.round(changed, get_symbol(change.symbol).pip_decimals)
