"""Parquet tick store: one file per (symbol, UTC day), written atomically, read by time range.

Layout: `<root>/<symbol>/<YYYY-MM-DD>.parquet`. A write goes to a hidden temporary file in the same
directory, is flushed to disk and then renamed over the target, so a reader sees either the old
partition or the new one, never a half-written file, and rewriting a day replaces it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .simulator import day_start_epoch
from .symbols import SECONDS_PER_DAY, get_symbol

TICK_SCHEMA = pa.schema(
    [
        pa.field("epoch", pa.int64(), nullable=False),
        pa.field("quote", pa.float64(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("bid", pa.float64()),
        pa.field("ask", pa.float64()),
    ],
    metadata={"scalping.schema": "ticks/1"},
)
REQUIRED_COLUMNS = ("epoch", "quote")
_TMP_PREFIX = "."


class TickStoreError(RuntimeError):
    """A partition that cannot be written or read; the message names the file."""


def _as_epoch(value: int | date | datetime | pd.Timestamp) -> int:
    if isinstance(value, datetime | pd.Timestamp):
        if value.tzinfo is None:
            raise ValueError(f"timestamp {value} has no time zone; ticks are indexed in UTC")
        return int(value.timestamp())
    if isinstance(value, date):
        return day_start_epoch(value)
    return int(value)


def parse_epoch(text: str | None) -> int | None:
    """An epoch (digits) or an ISO time, UTC unless it names a zone, as epoch seconds."""
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    moment = datetime.fromisoformat(text)
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


def epoch_day(epoch: int) -> date:
    return datetime.fromtimestamp(epoch, UTC).date()


def write_atomic(target: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write `target` with `write(file)` through a temporary file, fsync and rename: all or nothing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f"{_TMP_PREFIX}{target.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    tmp = target.with_name(f"{_TMP_PREFIX}{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as sink:
            write(sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def write_parquet_atomic(table: pa.Table, target: Path) -> Path:
    """Write `table` to `target` as zstd Parquet, all or nothing."""

    def write(sink: BinaryIO) -> None:
        with pq.ParquetWriter(sink, table.schema, compression="zstd") as writer:
            writer.write_table(table)

    return write_atomic(target, write)


class TickStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, symbol: str, day: date) -> Path:
        get_symbol(symbol)
        return self.root / symbol / f"{day.isoformat()}.parquet"

    def _to_table(self, symbol: str, day: date, ticks: pd.DataFrame) -> pa.Table:
        missing = [c for c in REQUIRED_COLUMNS if c not in ticks.columns]
        if missing:
            raise ValueError(f"ticks for {symbol} {day} lack column(s) {missing}")
        if "symbol" in ticks.columns and len(ticks) and not (ticks["symbol"].astype(str) == symbol).all():
            others = sorted(set(ticks["symbol"].astype(str)) - {symbol})
            raise ValueError(f"ticks written to {symbol} contain other symbols: {others}")
        epochs = ticks["epoch"].to_numpy(np.int64)
        start = day_start_epoch(day)
        outside = (epochs < start) | (epochs >= start + SECONDS_PER_DAY)
        if outside.any():
            bad = int(epochs[outside][0])
            raise ValueError(f"tick at epoch {bad} ({epoch_day(bad)}) does not belong to partition {symbol} {day}")
        n = len(ticks)
        columns = {
            "epoch": pa.array(epochs, pa.int64()),
            "quote": pa.array(ticks["quote"].to_numpy(np.float64), pa.float64()),
            "symbol": pa.array(np.full(n, symbol, dtype=object), pa.string()),
        }
        for side in ("bid", "ask"):
            values = ticks[side].to_numpy(np.float64) if side in ticks.columns else np.full(n, np.nan)
            columns[side] = pa.array(values, pa.float64(), from_pandas=True)
        return pa.Table.from_pydict(columns, schema=TICK_SCHEMA)

    def write_day(self, symbol: str, day: date, ticks: pd.DataFrame) -> Path:
        """Atomically replace the partition (symbol, day) with `ticks`; returns its path."""
        target = self.path(symbol, day)
        return write_parquet_atomic(self._to_table(symbol, day, ticks), target)

    def _read_file(self, path: Path, columns: list[str] | None = None) -> pa.Table:
        # One open file for the footer and the pages: the collector replaces a day's file while
        # sensors and assets read it, and a second open by path could pair the old footer with the
        # new file's pages. The rename keeps what an open file reads whole.
        try:
            source = open(path, "rb")  # noqa: SIM115 (closed below, after the pages are read)
        except OSError as exc:
            raise TickStoreError(f"{path}: not a readable Parquet tick file ({exc})") from exc
        with source:
            try:
                parquet = pq.ParquetFile(source)
            except (pa.ArrowException, OSError) as exc:
                raise TickStoreError(f"{path}: not a readable Parquet tick file ({exc})") from exc
            expected = {f.name: f.type for f in TICK_SCHEMA}
            actual = {f.name: f.type for f in parquet.schema_arrow}
            if any(actual.get(name) != typ for name, typ in expected.items()):
                raise TickStoreError(f"{path}: foreign Parquet file; expected columns {expected}, found {actual}")
            try:
                return parquet.read(columns=columns)
            except (pa.ArrowException, OSError) as exc:
                raise TickStoreError(f"{path}: corrupt Parquet tick file ({exc})") from exc

    def read_day(self, symbol: str, day: date) -> pd.DataFrame:
        path = self.path(symbol, day)
        if not path.exists():
            raise FileNotFoundError(f"no ticks stored for {symbol} on {day} (expected {path})")
        return self._read_file(path).to_pandas()

    def days(self, symbol: str) -> list[date]:
        folder = self.root / symbol
        if not folder.is_dir():
            return []
        days = []
        for path in folder.glob("*.parquet"):
            if path.name.startswith(_TMP_PREFIX):
                continue
            try:
                days.append(date.fromisoformat(path.stem))
            except ValueError as exc:
                raise TickStoreError(f"{path}: file name is not a YYYY-MM-DD partition") from exc
        return sorted(days)

    def read(
        self,
        symbol: str,
        start: int | date | datetime | None = None,
        end: int | date | datetime | None = None,
    ) -> pd.DataFrame:
        """Ticks of `symbol` with start <= epoch < end (epochs, dates or tz-aware datetimes)."""
        lo = _as_epoch(start) if start is not None else None
        hi = _as_epoch(end) if end is not None else None
        if lo is not None and hi is not None and hi < lo:
            raise ValueError(f"end {end} is before start {start}")
        first_day = epoch_day(lo) if lo is not None else None
        last_day = epoch_day(hi - 1) if hi is not None else None
        tables = [
            self._read_file(self.path(symbol, day))
            for day in self.days(symbol)
            if (first_day is None or day >= first_day) and (last_day is None or day <= last_day)
        ]
        if not tables:
            return TICK_SCHEMA.empty_table().to_pandas()
        frame = pa.concat_tables(tables).to_pandas()
        mask = np.ones(len(frame), bool)
        if lo is not None:
            mask &= frame["epoch"].to_numpy() >= lo
        if hi is not None:
            mask &= frame["epoch"].to_numpy() < hi
        return frame.loc[mask].reset_index(drop=True)

    def last_epoch(self, symbol: str) -> int | None:
        days = self.days(symbol)
        if not days:
            return None
        epochs = self._read_file(self.path(symbol, days[-1]), columns=["epoch"]).column("epoch")
        return int(pc.max(epochs).as_py()) if len(epochs) else None
