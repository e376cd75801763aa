"""Labels: N-tick direction with a neutral band, and triple-barrier outcomes in the backtest's units.

Both record the tick index at which each label resolves, so datasets can purge samples whose label
window crosses a split boundary. Labels look into the future by definition; nothing else may.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from .batch import pips, trailing_sum

DOWN, NEUTRAL, UP = 0, 1, 2
CLASSES = ("DOWN", "NEUTRAL", "UP")
PROBABILITY_COLUMNS = [f"p_{c.lower()}" for c in CLASSES]  # how predictions are stored
UNRESOLVED = -1
SIGMA_WINDOW = 100


class Barriers(BaseModel):
    """Take-profit above and stop-loss below the entry quote (as for a long), and a timeout.

    unit "pips": distances in pips; unit "sigma": multiples of the RMS pip move per tick over the last
    100 ticks before entry (known at entry). A long position wins on UP, loses on DOWN; a short the reverse.
    """

    take_profit: float = Field(default=3.0, gt=0)
    stop_loss: float = Field(default=3.0, gt=0)
    max_hold_ticks: int = Field(default=60, ge=1)
    unit: Literal["pips", "sigma"] = "sigma"


class LabelSpec(BaseModel):
    horizon: int = Field(default=10, ge=1, description="ticks ahead for the direction label")
    threshold_bp: float = Field(default=0.0, ge=0, description="|move| <= threshold (basis points) is NEUTRAL")
    barriers: Barriers = Barriers()

    @property
    def max_lookahead(self) -> int:
        return max(self.horizon, self.barriers.max_hold_ticks)


def entry_sigma_pips(k: np.ndarray) -> np.ndarray:
    """RMS pip move per tick over the SIGMA_WINDOW ticks up to t (NaN before)."""
    d = np.zeros(len(k), np.int64)
    d[1:] = np.diff(k)
    return np.sqrt(trailing_sum(d * d, SIGMA_WINDOW, 1) / SIGMA_WINDOW)


def direction_labels(quotes: np.ndarray, pip_size: float, horizon: int, threshold_bp: float) -> tuple[np.ndarray, np.ndarray]:
    """(label, resolve index): UP if 1e4 ln(q_{t+N} / q_t) > threshold, DOWN if < -threshold."""
    k = pips(quotes, pip_size)
    n = len(k)
    label = np.full(n, UNRESOLVED, np.int8)
    resolve = np.full(n, -1, np.int64)
    if n > horizon:
        move = 1e4 * np.log(k[horizon:] / k[:-horizon])
        label[: n - horizon] = np.where(move > threshold_bp, UP, np.where(move < -threshold_bp, DOWN, NEUTRAL))
        resolve[: n - horizon] = np.arange(horizon, n)
    return label, resolve


def barrier_distances(k: np.ndarray, barriers: Barriers) -> tuple[np.ndarray, np.ndarray]:
    """Take-profit and stop-loss distances in pips for an entry at each tick (NaN where undefined)."""
    if barriers.unit == "pips":
        return np.full(len(k), barriers.take_profit), np.full(len(k), barriers.stop_loss)
    sigma = entry_sigma_pips(k)
    sigma[sigma == 0] = np.nan  # a flat window gives no scale: no label rather than a zero-width barrier
    return barriers.take_profit * sigma, barriers.stop_loss * sigma


def triple_barrier_labels(quotes: np.ndarray, pip_size: float, barriers: Barriers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label, resolve index, move in pips at resolution) of an entry at every tick.

    UP when some later quote within max_hold_ticks reaches entry + take_profit before any reaches
    entry - stop_loss, DOWN for the reverse, NEUTRAL at the timeout; UNRESOLVED when the series ends first.
    """
    k = pips(quotes, pip_size)
    n = len(k)
    tp, sl = barrier_distances(k, barriers)
    upper, lower = k + tp, k - sl
    label = np.full(n, UNRESOLVED, np.int8)
    resolve = np.full(n, -1, np.int64)
    pending = np.flatnonzero(np.isfinite(upper))
    for h in range(1, barriers.max_hold_ticks + 1):
        pending = pending[pending + h < n]
        future = k[pending + h]
        hit_up = future >= upper[pending]
        hit_down = future <= lower[pending]
        label[pending[hit_up]] = UP
        label[pending[hit_down]] = DOWN
        done = hit_up | hit_down
        resolve[pending[done]] = pending[done] + h
        pending = pending[~done]
    label[pending] = NEUTRAL
    resolve[pending] = pending + barriers.max_hold_ticks
    move = np.full(n, np.nan)
    ok = resolve >= 0
    move[ok] = k[resolve[ok]] - k[ok]
    return label, resolve, move


def label_frame(ticks: pd.DataFrame, pip_size: float, spec: LabelSpec) -> pd.DataFrame:
    """Both labels for every tick, with the epoch at which each resolves (-1: unresolved)."""
    epochs = ticks["epoch"].to_numpy(np.int64)
    quotes = ticks["quote"].to_numpy(np.float64)
    direction, dir_resolve = direction_labels(quotes, pip_size, spec.horizon, spec.threshold_bp)
    barrier, bar_resolve, move = triple_barrier_labels(quotes, pip_size, spec.barriers)
    return pd.DataFrame(
        {
            "epoch": epochs,
            "direction": direction,
            "direction_resolve_epoch": np.where(dir_resolve >= 0, epochs[np.maximum(dir_resolve, 0)], -1),
            "barrier": barrier,
            "barrier_resolve_epoch": np.where(bar_resolve >= 0, epochs[np.maximum(bar_resolve, 0)], -1),
            "barrier_ticks": np.where(bar_resolve >= 0, bar_resolve - np.arange(len(epochs)), -1),
            "barrier_move_pips": move,
        }
    )


def class_counts(labels: np.ndarray) -> np.ndarray:
    """Resolved labels per class (DOWN, NEUTRAL, UP): what streamed datasets add up shard by shard."""
    resolved = labels[labels != UNRESOLVED]
    return np.bincount(resolved.astype(np.int64), minlength=len(CLASSES))


def class_balance(labels: np.ndarray) -> dict[str, float]:
    """Share of each class among resolved labels (NaN shares when none is resolved)."""
    return balance_of_counts(class_counts(labels))


def balance_of_counts(counts: np.ndarray) -> dict[str, float]:
    total = int(np.sum(counts))
    return {name: (float(counts[i]) / total if total else math.nan) for i, name in enumerate(CLASSES)}
