"""Datasets assembled day by day into Parquet shards, in memory bounded by a day of one symbol.

The in-memory assembly (`dataset.prepare_rows`) holds every symbol's whole span at once (features,
labels and ticks: about 0.5 GiB per million ticks). This one builds the same dataset in two passes over
(symbol, day) partitions:

1. `stage_rows`: per day and symbol, the base features (the feature store's, or computed after the
   previous day's last WARMUP_TICKS ticks), both labels (reading the next day's first `max_lookahead`
   ticks), the tick index and the quote go to a staging shard; the day's sample epochs of every symbol
   are appended, sorted, to one file. Days follow each other, so the pooled epochs lie sorted on disk
   and a split boundary (their quantile) is one element of a memory-mapped array.
2. `StagedRows.dataset` / `walk_forward`: per symbol, GARCH and the regime scale are fitted on the
   training span's staged quotes and RVs; then per day the fitted features are added (the GARCH filter
   first runs over the previous WARMUP_TICKS quotes), rows are split, purged and embargoed by
   `dataset.assign_splits` and kept by `dataset.kept_rows`, and the dataset's shard is written. The
   scaler is fitted on the training rows shard by shard (running moments: `StandardScaler.partial_fit`).

The rows equal the in-memory assembly's up to float rounding: every feature has a finite look-back
(at most WARMUP_TICKS ticks), labels look `max_lookahead` ticks ahead, and the cuts, purges and fits
are the same functions. Features are stored as float32: the models read them as float32 after scaling
anyway, and a feature's rounding (2^-24 relative) is far below its noise. Epochs, tick indices, labels,
resolve epochs and barrier moves stay exact (int64/float64): splits, purges, windows and backtests
compare them exactly, and the scaler and fitted features are fitted on exact float64 values.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from ..market.store import TickStore
from ..market.symbols import get_symbol
from . import registry as R
from .batch import fitted_features, log_returns_bp, pips
from .daily import FrameStore, features_after
from .dataset import (
    SHARDS,
    SPLITS,
    WALK_FORWARD,
    DatasetMeta,
    DatasetSpec,
    assign_splits,
    enough_samples,
    hash_rows,
    kept_rows,
    lower_quantile,
    scaler_fields,
    split_counts,
    split_cuts,
    walk_forward_cuts,
)
from .fitted import FittedFeatures, fit_features
from .garch import DEFAULT_MAX_FIT_OBS
from .labels import CLASSES, balance_of_counts, class_counts, label_frame

STAGING = ".staging"  # inside the dataset's folder while it is assembled; removed afterwards
CANDIDATES = "candidates.int64"  # the pooled sample epochs, sorted, raw int64
TICK_COLUMNS = ["epoch", "quote"]


@dataclass
class DaySource:
    """Where a streamed assembly reads its (symbol, day) partitions: the tick store, and the feature
    store when the `features` asset materialised them (else features are computed from the ticks)."""

    ticks: TickStore
    features: FrameStore | None = None

    def day_ticks(self, symbol: str, day: date, required: bool = True) -> pd.DataFrame | None:
        """The day's (epoch, quote); a missing day is an error naming its file, or None if not `required`."""
        if not required and not self.ticks.path(symbol, day).exists():
            return None
        return self.ticks.read_day(symbol, day)[TICK_COLUMNS]

    def day_features(self, symbol: str, day: date, warmup: pd.DataFrame, ticks: pd.DataFrame) -> pd.DataFrame:
        if self.features is not None:
            return self.features.read_day(symbol, day)
        return features_after(warmup, ticks, get_symbol(symbol).pip_size)


def _days(spec: DatasetSpec) -> list[date]:
    return [spec.start + timedelta(days=i) for i in range((spec.end - spec.start).days + 1)]


@dataclass
class _Carry:
    """What one symbol's next day needs from the days before: the last ticks, the tick count so far,
    and the day read ahead for the labels."""

    tail: pd.DataFrame
    tick: int
    ahead: pd.DataFrame


def _stage_day(spec: DatasetSpec, source: DaySource, symbol: str, day: date, carry: _Carry) -> pd.DataFrame:
    """Base features, labels, tick index and quote of every tick of (symbol, day), and whether it is a
    sample candidate (base features defined)."""
    pip = get_symbol(symbol).pip_size
    ticks = carry.ahead
    following = source.day_ticks(symbol, day + timedelta(days=1)) if day < spec.end else ticks.iloc[:0]
    # Labels look ahead: the next day's first ticks resolve the day's last labels, as in one long series.
    series = pd.concat([carry.tail, ticks, following.iloc[: spec.labels.max_lookahead]], ignore_index=True)
    labels = label_frame(series, pip, spec.labels).iloc[len(carry.tail) : len(carry.tail) + len(ticks)]
    features = source.day_features(symbol, day, carry.tail, ticks)
    frame = features.merge(labels, on="epoch", how="inner", validate="one_to_one")
    where = np.searchsorted(ticks["epoch"].to_numpy(), frame["epoch"].to_numpy())
    frame.insert(0, "tick", carry.tick + where)
    frame["quote"] = ticks["quote"].to_numpy(np.float64)[where]
    frame["candidate"] = np.isfinite(frame[R.feature_names(fitted=False)].to_numpy()).all(axis=1)
    carry.tail = pd.concat([carry.tail, ticks], ignore_index=True).iloc[-R.WARMUP_TICKS :]
    carry.tick += len(ticks)
    carry.ahead = following
    return frame


@contextmanager
def stage_rows(spec: DatasetSpec, source: DaySource, folder: str | Path) -> Iterator[StagedRows]:
    """Stage every (symbol, day) of `spec` under `folder` (the dataset's folder), day by day; the
    staging files are removed when the block ends. The day before `spec.start`, when stored, warms up
    the features, the labels' RMS move and the GARCH filter, as in the in-memory assembly."""
    root = Path(folder) / STAGING
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        yield _stage(spec, source, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _stage(spec: DatasetSpec, source: DaySource, root: Path) -> StagedRows:
    staging = FrameStore(root)
    carries, warmup = {}, {}
    for symbol in spec.symbols:
        before = source.day_ticks(symbol, spec.start - timedelta(days=1), required=False)
        before = before if before is not None else pd.DataFrame({c: [] for c in TICK_COLUMNS})
        carries[symbol] = _Carry(before.iloc[-R.WARMUP_TICKS :], len(before), source.day_ticks(symbol, spec.start))
        warmup[symbol] = before["quote"].to_numpy(np.float64)[-R.WARMUP_TICKS :]
    with open(root / CANDIDATES, "wb") as pool:
        for day in _days(spec):
            epochs = []
            for symbol in spec.symbols:
                frame = _stage_day(spec, source, symbol, day, carries[symbol])
                staging.write_day(symbol, day, frame)
                epochs.append(frame.loc[frame["candidate"], "epoch"].to_numpy(np.int64))
            np.sort(np.concatenate(epochs)).tofile(pool)
    size = (root / CANDIDATES).stat().st_size
    candidates = np.memmap(root / CANDIDATES, np.int64, "r") if size else np.zeros(0, np.int64)
    return StagedRows(spec, staging, enough_samples(spec, candidates), warmup)


@dataclass
class _Totals:
    """What a dataset's metadata sums over its shards (and the digest of its rows)."""

    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    classes: dict[str, np.ndarray] = field(default_factory=lambda: {s: np.zeros(len(CLASSES), np.int64) for s in SPLITS})
    dropped: dict[str, int] = field(default_factory=dict)
    scaler: StandardScaler = field(default_factory=StandardScaler)
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)

    def add(self, kept: pd.DataFrame, dropped: dict[str, int], target: str, names: list[str]) -> None:
        for split in SPLITS:
            part = kept.loc[kept["split"] == split]
            self.rows[split] += len(part)
            self.classes[split] += class_counts(part[target].to_numpy())
            if split == "train" and len(part):
                self.scaler.partial_fit(part[names].to_numpy(np.float64))
        self.dropped = {why: self.dropped.get(why, 0) + n for why, n in dropped.items()}


@dataclass
class StagedRows:
    """Staged (symbol, day) rows, cut into any number of datasets (`dataset()` and/or `walk_forward(k)`)."""

    spec: DatasetSpec
    staging: FrameStore
    candidates: np.ndarray  # pooled sample epochs, sorted (memory-mapped)
    warmup: dict[str, np.ndarray]  # each symbol's quotes before spec.start (at most WARMUP_TICKS)

    def quantile(self, q: float, below: int | None = None) -> int:
        return lower_quantile(self.candidates, q, below)

    def dataset(self, folder: str | Path) -> DatasetMeta:
        """The temporal train/validation/test split at the spec's fractions, written to `folder`."""
        return self._assemble(Path(folder), split_cuts(self.spec, self.quantile), None)

    def walk_forward(self, folder: str | Path, folds: int) -> list[DatasetMeta]:
        """The walk-forward folds (`dataset.walk_forward_cuts`), each written beside the dataset in
        `folder` as `walk_forward/fold_k`, as `dataset.save_walk_forward` does (none: removed)."""
        root = Path(folder) / WALK_FORWARD
        shutil.rmtree(root, ignore_errors=True)
        cuts = walk_forward_cuts(self.spec, self.quantile, folds) if folds else []
        return [self._assemble(root / f"fold_{k}", b, until) for k, (b, until) in enumerate(cuts, start=1)]

    def _fit(self, symbol: str, boundary: int) -> FittedFeatures:
        """GARCH on the last DEFAULT_MAX_FIT_OBS training returns and the regime scale on every
        training RV of `symbol` (ticks from spec.start up to `boundary`; the very first tick of the
        history has no return)."""
        pip, rv_column = get_symbol(symbol).pip_size, f"rv_{R.REGIME_RV_WINDOW}"
        previous = self.warmup[symbol][-1:]
        returns, rvs = np.zeros(0), []
        for day in _days(self.spec):
            part = self.staging.read_day(symbol, day)
            if part.empty or part["epoch"].iloc[0] >= boundary:
                break
            quotes = part["quote"].to_numpy(np.float64)
            train = part["epoch"].to_numpy() < boundary
            if not len(previous):
                train[0] = False
            day_returns = log_returns_bp(pips(np.concatenate([previous if len(previous) else quotes[:1], quotes]), pip))[1:]
            returns = np.concatenate([returns, day_returns[train]])[-DEFAULT_MAX_FIT_OBS:]
            rvs.append(part[rv_column].to_numpy()[train])
            previous = quotes[-1:]
        return fit_features(returns, np.concatenate(rvs) if rvs else np.zeros(0))

    def _assemble(self, folder: Path, boundaries: list[int], until: int | None) -> DatasetMeta:
        """Cut at `boundaries`, drop rows from `until` on, fit on train only; write shards and meta.json."""
        spec, names = self.spec, R.feature_names(fitted=True)
        shards = FrameStore(folder / SHARDS)
        shutil.rmtree(folder / SHARDS, ignore_errors=True)
        (folder / "rows.parquet").unlink(missing_ok=True)  # an in-memory dataset's rows, replaced
        totals, fitted = _Totals(), {}
        for symbol in spec.symbols:
            fitted[symbol] = self._fit(symbol, boundaries[0])
            pip, filter_quotes = get_symbol(symbol).pip_size, self.warmup[symbol]
            first_after: list[int | None] = [None] * len(boundaries)
            for day in _days(spec):
                frame = self.staging.read_day(symbol, day)
                quotes = np.concatenate([filter_quotes, frame["quote"].to_numpy(np.float64)])
                rv = np.concatenate([np.full(len(filter_quotes), np.nan), frame[f"rv_{R.REGIME_RV_WINDOW}"].to_numpy()])
                for name, values in fitted_features(quotes, pip, rv, fitted[symbol]).items():
                    frame[name] = values[len(filter_quotes) :]
                filter_quotes = quotes[-R.WARMUP_TICKS :]
                first_after = _first_after(frame, boundaries, first_after)
                frame = frame if until is None else frame.loc[frame["epoch"] < until].copy()
                frame.insert(0, "symbol", symbol)
                # Before the boundary's tick is met, no row of the day lies after it: any index will do.
                known = [t if t is not None else 0 for t in first_after]
                frame["split"] = assign_splits(frame, boundaries, spec.split.embargo_ticks, known, until)
                kept, dropped = kept_rows(frame)
                totals.add(kept, dropped, spec.target, names)  # the scaler sees exact values
                kept[names] = kept[names].astype(np.float32)
                hash_rows(totals.digest, kept)  # the fingerprint: of the rows as stored
                shards.write_day(symbol, day, kept)
        meta = DatasetMeta(
            spec=spec,
            feature_names=names,
            boundaries=boundaries,
            until=until,
            **scaler_fields(totals.scaler),
            fitted=fitted,
            rows=split_counts(totals.rows),
            dropped=totals.dropped,
            class_balance={s: balance_of_counts(totals.classes[s]) for s in SPLITS},
            fingerprint=totals.digest.hexdigest()[:16],
        )
        (folder / "meta.json").write_text(meta.model_dump_json(indent=2))
        return meta


def _first_after(frame: pd.DataFrame, boundaries: list[int], known: list[int | None]) -> list[int | None]:
    """The symbol's tick index of its first tick at or after each boundary, once a day reaches it."""
    epochs = frame["epoch"].to_numpy()
    return [
        tick if tick is not None or not len(epochs) or epochs[-1] < b else int(frame["tick"].iloc[np.searchsorted(epochs, b)])
        for b, tick in zip(boundaries, known, strict=True)
    ]


def build_sharded(spec: DatasetSpec, source: DaySource, folder: str | Path, walk_forward_folds: int = 0) -> DatasetMeta:
    """Stage, then write the dataset (and its walk-forward folds) to `folder`; returns its metadata."""
    with stage_rows(spec, source, folder) as staged:
        meta = staged.dataset(folder)
        staged.walk_forward(folder, walk_forward_folds)
    return meta
