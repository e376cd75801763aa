"""Tick-by-tick execution of class-probability signals, with costs.

A signal at tick i (predicted class UP or DOWN with probability >= `min_confidence`) fills at tick
i + `latency_ticks`, if a position slot is free there and fewer than `max_trades_per_hour` entries
were filled in the hour up to that tick. The position exits at the first later tick whose quote
reaches the take-profit or the stop-loss (in pips, or in multiples of the RMS tick move of the 100
ticks up to the fill, exactly as the triple-barrier labels), or at the timeout (`max_hold_ticks`, or
`max_hold_seconds` when set), whichever comes first on the tick path; it exits at that tick's quote,
so a stop-loss gapped through by a crash costs the whole gap. A slot frees at the exit tick.

Fills pay half the spread plus slippage (fixed pips plus a multiple of the entry's RMS tick move)
on each side and a commission per trade. P&L is in account currency for a fixed `stake` per trade.

The loop is compiled with numba: it visits signal ticks only and walks each position's path once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from ..features.batch import pips
from ..features.labels import DOWN, UP, Barriers, barrier_distances, entry_sigma_pips

TAKE_PROFIT, STOP_LOSS, TIMEOUT = 0, 1, 2
REASONS = ("tp", "sl", "timeout")
HOUR = 3600


class ExecutionConfig(BaseModel):
    min_confidence: float = Field(default=0.55, ge=0, le=1, description="probability of the predicted class needed to enter")
    take_profit: float = Field(default=1.0, gt=0)
    stop_loss: float = Field(default=2.0, gt=0)
    unit: Literal["pips", "sigma"] = Field(default="sigma", description="of take_profit, stop_loss")
    max_hold_ticks: int = Field(default=10, ge=1)
    max_hold_seconds: float | None = Field(default=None, gt=0, description="timeout in seconds instead of ticks")
    max_positions: int = Field(default=1, ge=1)
    max_trades_per_hour: int | None = Field(default=None, ge=1)
    latency_ticks: int = Field(default=1, ge=0, description="the fill comes this many ticks after the signal")
    spread_pips: float = Field(default=1.0, ge=0, description="full spread; each fill pays half")
    slippage_pips: float = Field(default=0.0, ge=0, description="adverse slippage per fill")
    slippage_sigma: float = Field(default=0.0, ge=0, description="adverse slippage per fill, in RMS tick moves")
    commission: float = Field(default=0.0, ge=0, description="per trade, account currency")
    stake: float = Field(default=1_000.0, gt=0, description="notional per trade, account currency")
    capital: float = Field(default=10_000.0, gt=0, description="starting equity")

    def barriers(self) -> Barriers:
        return Barriers(
            take_profit=self.take_profit, stop_loss=self.stop_loss, max_hold_ticks=self.max_hold_ticks, unit=self.unit
        )


def signal_sides(proba: np.ndarray, min_confidence: float) -> np.ndarray:
    """+1 (buy) where UP is the predicted class with enough confidence, -1 for DOWN, else 0; rows
    without a prediction (NaN) never trade. Ties go to the first class, as numpy's argmax."""
    return _sides(np.ascontiguousarray(proba), min_confidence)


@numba.njit(cache=True)
def _sides(proba, min_confidence):
    out = np.zeros(proba.shape[0], np.int8)
    for i in range(proba.shape[0]):
        row = proba[i]
        if np.isnan(row[0]) or np.isnan(row[1]) or np.isnan(row[2]):
            continue
        best = 0
        if row[1] > row[best]:
            best = 1
        if row[2] > row[best]:
            best = 2
        if row[best] >= min_confidence:
            out[i] = 1 if best == UP else -1 if best == DOWN else 0
    return out


@numba.njit(cache=True)
def _exit_of(k, epochs, f, side, tp, sl, max_hold_ticks, max_hold_seconds):
    """(exit tick, reason) of a position filled at tick f; (-1, -1) if the series ends first."""
    entry = k[f]
    for j in range(f + 1, len(k)):
        move = side * (k[j] - entry)
        if move >= tp:
            return j, TAKE_PROFIT
        if move <= -sl:
            return j, STOP_LOSS
        if j - f >= max_hold_ticks or epochs[j] - epochs[f] >= max_hold_seconds:
            return j, TIMEOUT
    return -1, -1


@numba.njit(cache=True)
def _simulate(k, epochs, sides, tp, sl, latency, max_hold_ticks, max_hold_seconds, max_positions, max_per_hour):
    n = len(k)
    capacity = 0
    for i in range(n):
        capacity += sides[i] != 0
    signal = np.empty(capacity, np.int64)
    fill = np.empty(capacity, np.int64)
    exit_ = np.empty(capacity, np.int64)
    reason = np.empty(capacity, np.int8)
    slot_free_at = np.full(max_positions, -1, np.int64)  # exit tick of each slot's position
    count, oldest, unfinished = 0, 0, 0
    for i in range(n):
        side = sides[i]
        if side == 0:
            continue
        f = i + latency
        if f >= n:
            break
        slot = -1
        for p in range(max_positions):
            if slot_free_at[p] <= f:
                slot = p
                break
        if slot < 0 or not (np.isfinite(tp[f]) and np.isfinite(sl[f])):
            continue
        if max_per_hour > 0:
            while oldest < count and epochs[fill[oldest]] <= epochs[f] - HOUR:
                oldest += 1
            if count - oldest >= max_per_hour:
                continue
        x, why = _exit_of(k, epochs, f, side, tp[f], sl[f], max_hold_ticks, max_hold_seconds)
        if x < 0:
            slot_free_at[slot] = n  # open at the end of the data: holds its slot, never reported
            unfinished += 1
            continue
        signal[count], fill[count], exit_[count], reason[count] = i, f, x, why
        slot_free_at[slot] = x
        count += 1
    return signal[:count], fill[:count], exit_[:count], reason[:count], unfinished


@numba.njit(cache=True)
def exits_of(k, epochs, fills, sides, tp, sl, max_hold_ticks, max_hold_seconds):
    """Exit tick and reason of independent positions (no slot or rate limits): the random baseline."""
    exit_ = np.empty(len(fills), np.int64)
    reason = np.empty(len(fills), np.int8)
    for t in range(len(fills)):
        f = fills[t]
        exit_[t], reason[t] = _exit_of(k, epochs, f, sides[t], tp[f], sl[f], max_hold_ticks, max_hold_seconds)
    return exit_, reason


@dataclass
class TickPath:
    """One symbol's ticks prepared for execution: pip grid, barrier distances and RMS move per tick."""

    symbol: str
    epochs: np.ndarray
    quotes: np.ndarray
    pip: float
    k: np.ndarray  # quotes in pips, as float for the compiled loop
    tp: np.ndarray
    sl: np.ndarray
    sigma: np.ndarray

    @classmethod
    def build(cls, symbol: str, epochs: np.ndarray, quotes: np.ndarray, pip: float, config: ExecutionConfig) -> TickPath:
        k = pips(np.asarray(quotes, np.float64), pip)
        tp, sl = barrier_distances(k, config.barriers())
        return cls(
            symbol,
            np.asarray(epochs, np.int64),
            np.asarray(quotes, np.float64),
            pip,
            k.astype(np.float64),
            tp,
            sl,
            entry_sigma_pips(k),
        )

    def hold_limits(self, config: ExecutionConfig) -> tuple[int, float]:
        if config.max_hold_seconds is None:
            return config.max_hold_ticks, np.inf
        return len(self.k), float(config.max_hold_seconds)


def trade_frame(
    path: TickPath,
    config: ExecutionConfig,
    signal: np.ndarray,
    fill: np.ndarray,
    exit_: np.ndarray,
    reason: np.ndarray,
    sides: np.ndarray,
) -> pd.DataFrame:
    """One row per trade: times, fills, reason, gross/net P&L and what each cost took."""
    side = sides.astype(np.float64)
    entry_quote, exit_quote = path.quotes[fill], path.quotes[exit_]
    slip = (config.slippage_pips + config.slippage_sigma * np.nan_to_num(path.sigma[fill])) * path.pip
    half_spread = config.spread_pips / 2 * path.pip

    def pnl(entry_cost: np.ndarray | float, exit_cost: np.ndarray | float) -> np.ndarray:
        return config.stake * side * ((exit_quote - side * exit_cost) / (entry_quote + side * entry_cost) - 1)

    gross = pnl(0.0, 0.0)
    after_spread = pnl(half_spread, half_spread)
    after_slippage = pnl(half_spread + slip, half_spread + slip)
    return pd.DataFrame(
        {
            "symbol": path.symbol,
            "signal_epoch": path.epochs[signal],
            "entry_epoch": path.epochs[fill],
            "exit_epoch": path.epochs[exit_],
            "entry_tick": fill,
            "exit_tick": exit_,
            "side": sides.astype(np.int8),
            "entry_price": entry_quote + side * (half_spread + slip),
            "exit_price": exit_quote - side * (half_spread + slip),
            "reason": pd.Categorical.from_codes(reason, REASONS),
            "pips_gross": side * (path.k[exit_] - path.k[fill]),
            "pnl_gross": gross,
            "spread_cost": gross - after_spread,
            "slippage_cost": after_spread - after_slippage,
            "commission": config.commission,
            "pnl_net": after_slippage - config.commission,
            "hold_ticks": exit_ - fill,
            "hold_seconds": path.epochs[exit_] - path.epochs[fill],
        }
    )


@dataclass
class BacktestResult:
    trades: pd.DataFrame
    unfinished: int  # positions still open when the data ended (not in trades)
    signals: int  # ticks with an entry signal


def run_backtest(path: TickPath, proba: np.ndarray, config: ExecutionConfig) -> BacktestResult:
    """Execute the signals of `proba` (n_ticks, 3; NaN rows: no prediction) on one symbol's tick path."""
    if len(proba) != len(path.k):
        raise ValueError(f"{len(proba)} prediction rows for {len(path.k)} ticks of {path.symbol}")
    sides = signal_sides(proba, config.min_confidence)
    hold_ticks, hold_seconds = path.hold_limits(config)
    signal, fill, exit_, reason, unfinished = _simulate(
        path.k,
        path.epochs,
        sides,
        path.tp,
        path.sl,
        config.latency_ticks,
        hold_ticks,
        hold_seconds,
        config.max_positions,
        config.max_trades_per_hour or 0,
    )
    trades = trade_frame(path, config, signal, fill, exit_, reason, sides[signal])
    return BacktestResult(trades, int(unfinished), int((sides != 0).sum()))
