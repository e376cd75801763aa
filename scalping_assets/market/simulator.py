"""Seeded, vectorised simulator of Deriv synthetic indices, following the published formulas.

Every (seed, symbol, UTC day) owns an independent random stream, and a day's path starts from the
exact (unrounded) state the previous day ended in. Days are always generated one at a time through
the same code, so generating days 1-3 at once is bit-for-bit the same as generating day 1, then 2,
then 3, in this process or in another one.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from .symbols import (
    AR1Generator,
    CrashBoomGenerator,
    GBMGenerator,
    JumpGenerator,
    StepGenerator,
    SymbolSpec,
    get_symbol,
)

DEFAULT_ORIGIN = date(2026, 1, 1)

# Mean of the folded normal |N(1, 1)| that scales Crash/Boom move sizes.
FOLDED_NORMAL_MEAN = math.sqrt(2 / math.pi) * math.exp(-0.5) + math.erf(1 / math.sqrt(2))

# Path state carried from one day to the next: (price,), (price, last log-return) or (steps,).
State = tuple[float, ...]


class NotSimulatedError(ValueError):
    """The symbol has no published generation formula, so it can be collected but not simulated."""


@dataclass(frozen=True)
class SimulatedDay:
    epochs: np.ndarray  # int64 seconds
    prices: np.ndarray  # unrounded path
    quotes: np.ndarray  # rounded to the pip, what Deriv publishes

    def to_frame(self, symbol: str) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "epoch": self.epochs,
                "quote": self.quotes,
                "symbol": pd.Categorical.from_codes(np.zeros(len(self.epochs), np.int8), [symbol]),
            }
        )


def day_start_epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def _compound(start: float, log_returns: np.ndarray) -> np.ndarray:
    path = np.cumsum(log_returns, out=log_returns)
    np.exp(path, out=path)
    path *= start
    return path


def _gbm(spec: SymbolSpec, g: GBMGenerator, state: State, rng: np.random.Generator, n: int):
    dt = spec.dt
    lr = rng.standard_normal(n)
    lr *= g.sigma * math.sqrt(dt)
    lr += (-g.dividend - 0.5 * g.sigma**2) * dt
    if g.daily_reset:
        # Bull/Bear restart from their reset level at 00:00 GMT, which is the day's first tick.
        lr[0] = 0.0
        start = spec.initial_quote
    else:
        start = state[0]
    path = _compound(start, lr)
    return path, (path[-1],)


def _crash_boom(spec: SymbolSpec, g: CrashBoomGenerator, state: State, rng: np.random.Generator, n: int):
    events = rng.random(n) < 1.0 / g.mean_event_gap
    size = np.abs(rng.standard_normal(n) + 1.0)
    event_coef, quiet_coef = (g.mdt, g.mut) if g.event == "down" else (g.mut, g.mdt)
    lr = np.where(events, event_coef, quiet_coef)
    lr *= size
    lr *= math.sqrt(spec.dt) / FOLDED_NORMAL_MEAN
    path = _compound(state[0], lr)
    return path, (path[-1],)


def _jump(spec: SymbolSpec, g: JumpGenerator, state: State, rng: np.random.Generator, n: int):
    dt, sigma = spec.dt, g.sigma
    rate = g.jumps_per_day * spec.tick_interval_s / 86_400
    jumps = rng.random(n) < rate * math.exp(-rate)
    lr = rng.standard_normal(n)
    lr *= sigma * math.sqrt(dt)
    lr += -0.5 * sigma**2 * dt
    # mu = -J^2 sigma^2 / 2 makes a jump tick a martingale step too.
    mu = -0.5 * g.jump_scale**2 * sigma**2
    lr[jumps] += mu * dt + g.jump_scale * sigma * math.sqrt(dt) * rng.standard_normal(int(jumps.sum()))
    path = _compound(state[0], lr)
    return path, (path[-1],)


def _step(spec: SymbolSpec, g: StepGenerator, state: State, rng: np.random.Generator, n: int):
    # The state counts steps from the initial quote, so the path stays exactly on the step grid.
    moves = rng.integers(0, 2, n, dtype=np.int64) * 2 - 1
    steps = np.cumsum(moves) + int(state[0])
    return spec.initial_quote + g.step * steps, (int(steps[-1]),)


def _ar1(spec: SymbolSpec, g: AR1Generator, state: State, rng: np.random.Generator, n: int):
    price, last_return = state
    eps = rng.standard_normal(n) * g.sigma
    lr, _ = lfilter([1.0], [1.0, -g.phi], eps, zi=[g.phi * last_return])
    final_return = lr[-1]
    path = _compound(price, lr)
    return path, (path[-1], final_return)


_KERNELS: dict[type, Callable] = {
    GBMGenerator: _gbm,
    CrashBoomGenerator: _crash_boom,
    JumpGenerator: _jump,
    StepGenerator: _step,
    AR1Generator: _ar1,
}


def _initial_state(spec: SymbolSpec) -> State:
    if isinstance(spec.generator, StepGenerator):
        return (0,)
    if isinstance(spec.generator, AR1Generator):
        return (spec.initial_quote, 0.0)
    return (spec.initial_quote,)


class TickSimulator:
    """Ticks of one symbol for one seed; the series starts at `origin` 00:00 UTC at the initial quote."""

    def __init__(self, symbol: str, seed: int = 0, origin: date = DEFAULT_ORIGIN):
        spec = get_symbol(symbol)
        if spec.generator is None:
            raise NotSimulatedError(
                f"{symbol} has no published generation formula; it can be collected from Deriv but "
                "not simulated. Simulated symbols: see scalping_assets.market.symbols.simulated_symbols()"
            )
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.spec, self.seed, self.origin = spec, seed, origin
        self._kernel = _KERNELS[type(spec.generator)]
        self._symbol_key = zlib.crc32(symbol.encode())
        self._start_states: dict[date, State] = {origin: _initial_state(spec)}

    def _rng(self, day: date) -> np.random.Generator:
        seq = np.random.SeedSequence(self.seed, spawn_key=(self._symbol_key, day.toordinal()))
        return np.random.Generator(np.random.PCG64(seq))

    def _generate(self, day: date, state: State) -> tuple[np.ndarray, State]:
        return self._kernel(self.spec, self.spec.generator, state, self._rng(day), self.spec.ticks_per_day)

    def _start_state(self, day: date) -> State:
        if day < self.origin:
            raise ValueError(f"{day} is before the simulation origin {self.origin}")
        if day in self._start_states:
            return self._start_states[day]
        cursor = max(d for d in self._start_states if d < day)
        state = self._start_states[cursor]
        while cursor < day:
            _, state = self._generate(cursor, state)
            cursor += timedelta(days=1)
            self._start_states[cursor] = state
        return state

    def simulate_day(self, day: date) -> SimulatedDay:
        state = self._start_state(day)
        prices, end_state = self._generate(day, state)
        self._start_states[day + timedelta(days=1)] = end_state
        spec = self.spec
        epochs = day_start_epoch(day) + np.arange(spec.ticks_per_day, dtype=np.int64) * spec.tick_interval_s
        return SimulatedDay(epochs, prices, np.round(prices, spec.pip_decimals))

    def day(self, day: date) -> pd.DataFrame:
        return self.simulate_day(day).to_frame(self.spec.symbol)

    def days(self, first: date, last: date) -> pd.DataFrame:
        """Ticks of every day from `first` to `last` inclusive, in order."""
        if last < first:
            raise ValueError(f"last day {last} is before first day {first}")
        n_days = (last - first).days + 1
        frames = [self.day(first + timedelta(days=i)) for i in range(n_days)]
        return pd.concat(frames, ignore_index=True)


@lru_cache(maxsize=256)
def simulator(symbol: str, seed: int = 0, origin: date = DEFAULT_ORIGIN) -> TickSimulator:
    """A shared simulator, so that repeated days reuse the day-start states already computed."""
    return TickSimulator(symbol, seed, origin)
