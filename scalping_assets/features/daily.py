"""Per-day features across partition boundaries, and a store for derived day frames.

Features of day D are computed on the last WARMUP_TICKS ticks of day D-1 followed by day D, so no
value depends on where a file starts; only the very first stored day has warm-up rows (NaN). Labels
are not stored per day: a dataset labels its continuous span at once (`features.dataset`).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..market.store import TickStore, TickStoreError, write_parquet_atomic
from ..market.symbols import get_symbol
from .batch import compute_features
from .registry import WARMUP_TICKS


class FrameStore:
    """Derived frames (features) as `<root>/<symbol>/<YYYY-MM-DD>.parquet`, written atomically."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, symbol: str, day: date) -> Path:
        get_symbol(symbol)
        return self.root / symbol / f"{day.isoformat()}.parquet"

    def write_day(self, symbol: str, day: date, frame: pd.DataFrame) -> Path:
        return write_parquet_atomic(pa.Table.from_pandas(frame, preserve_index=False), self.path(symbol, day))

    def read_day(self, symbol: str, day: date) -> pd.DataFrame:
        path = self.path(symbol, day)
        if not path.exists():
            raise FileNotFoundError(f"nothing stored for {symbol} on {day} (expected {path})")
        try:
            return pq.read_table(path).to_pandas()
        except (pa.ArrowException, OSError) as exc:
            raise TickStoreError(f"{path}: unreadable Parquet file ({exc})") from exc

    def missing(self, symbol: str, days: list[date]) -> list[date]:
        return [day for day in days if not self.path(symbol, day).exists()]


def _neighbour(store: TickStore, symbol: str, day: date) -> pd.DataFrame | None:
    return store.read_day(symbol, day) if store.path(symbol, day).exists() else None


def day_features(store: TickStore, symbol: str, day: date) -> tuple[pd.DataFrame, int]:
    """(features of the day's ticks, number of warm-up ticks taken from the previous day)."""
    ticks = store.read_day(symbol, day)
    previous = _neighbour(store, symbol, day - timedelta(days=1))
    warmup = previous.tail(WARMUP_TICKS) if previous is not None else ticks.iloc[:0]
    return features_after(warmup, ticks, get_symbol(symbol).pip_size), len(warmup)


def features_after(warmup: pd.DataFrame, ticks: pd.DataFrame, pip_size: float) -> pd.DataFrame:
    """Features of `ticks` computed after the `warmup` ticks that precede them (at most WARMUP_TICKS count)."""
    frame = compute_features(pd.concat([warmup, ticks], ignore_index=True), pip_size)
    return frame.iloc[len(warmup) :].reset_index(drop=True)


def warmup_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows with at least one undefined feature (the warm-up at the start of the stored history)."""
    return ~np.isfinite(frame.drop(columns="epoch").to_numpy()).all(axis=1)
