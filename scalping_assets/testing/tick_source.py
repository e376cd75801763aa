"""Simulated ticks addressed by epoch range: what the local Deriv server streams and serves as history."""

from __future__ import annotations

import math
from collections import OrderedDict
from datetime import date, timedelta

import numpy as np

from ..market.simulator import DEFAULT_ORIGIN, SimulatedDay, day_start_epoch, simulator
from ..market.store import epoch_day
from ..market.symbols import get_symbol

_CACHED_DAYS = 64


class SimulatedTicks:
    def __init__(self, seed: int = 7, origin: date = DEFAULT_ORIGIN):
        self.seed, self.origin = seed, origin
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
        return np.concatenate(epochs), np.concatenate(quotes)
