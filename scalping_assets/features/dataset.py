"""Training datasets: temporal split with purge and embargo, training-span-only fitting, windows.

Split rule (all symbols share the calendar): the epochs of all candidate samples are cut at their
70 % and 85 % quantiles (configurable). A sample belongs to the span its tick lies in; it is purged
when its label (either kind) resolves at or after the next boundary, so no training label uses a
validation or test price, and no validation label a test price. The first `embargo_ticks` ticks of
each symbol after a boundary are dropped too. The GARCH parameters, the regime scale and the
normalisation are fitted on the training span only and applied unchanged to the later spans.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, model_validator
from sklearn.preprocessing import StandardScaler

from ..market.simulator import day_start_epoch
from ..market.symbols import get_symbol
from . import registry as R
from .batch import compute_features, fitted_features, log_returns_bp, pips
from .fitted import FittedFeatures, fit_features
from .labels import UNRESOLVED, LabelSpec, class_balance, label_frame

SPLITS = ("train", "validation", "test")


DATASET_SYMBOLS = ["SIG_AR1", "R_100", "CRASH1000"]  # the default: one symbol of each kind of dynamics


class SplitSpec(BaseModel):
    train: float = Field(default=0.70, gt=0, lt=1)
    validation: float = Field(default=0.15, gt=0, lt=1)
    test: float = Field(default=0.15, gt=0, lt=1)
    embargo_ticks: int = Field(default=100, ge=0, description="ticks dropped after each boundary, per symbol")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitSpec:
        if abs(self.train + self.validation + self.test - 1) > 1e-9:
            raise ValueError(f"split fractions must sum to 1, got {self.train} + {self.validation} + {self.test}")
        return self


class DatasetSpec(BaseModel):
    symbols: list[str] = Field(min_length=1)
    start: date
    end: date  # inclusive
    labels: LabelSpec = LabelSpec()
    target: Literal["direction", "barrier"] = "direction"
    sequence_length: int = Field(default=100, ge=1)
    split: SplitSpec = SplitSpec()

    @model_validator(mode="after")
    def _valid(self) -> DatasetSpec:
        for symbol in self.symbols:
            get_symbol(symbol)
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self

    @property
    def target_lookahead(self) -> int:
        """Ticks the training target looks ahead: rows this far apart have non-overlapping labels."""
        return self.labels.horizon if self.target == "direction" else self.labels.barriers.max_hold_ticks

    @property
    def start_epoch(self) -> int:
        return day_start_epoch(self.start)

    @property
    def end_epoch(self) -> int:
        """First epoch after the range."""
        return day_start_epoch(self.end + timedelta(days=1))


class DatasetMeta(BaseModel):
    spec: DatasetSpec
    feature_names: list[str]
    boundaries: list[int]  # epochs where validation and test begin
    until: int | None = None  # first epoch after the test span (walk-forward folds)
    scaler_mean: list[float]
    scaler_scale: list[float]
    fitted: dict[str, FittedFeatures]
    rows: dict[str, int]
    dropped: dict[str, int]
    class_balance: dict[str, dict[str, float]]
    fingerprint: str

    def scale(self, raw: np.ndarray) -> np.ndarray:
        """Raw feature rows normalised by the training-span scaler, as the models' float32 inputs."""
        return ((raw - np.asarray(self.scaler_mean)) / np.asarray(self.scaler_scale)).astype(np.float32)


@dataclass
class SequenceWindows:
    """Lazy (window, label) pairs: window i is rows ends[i]-L+1..ends[i] of one symbol's contiguous ticks."""

    x: np.ndarray  # scaled features of the split, float32, rows ordered by symbol then tick
    y: np.ndarray
    ends: np.ndarray
    length: int

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, index) -> tuple[np.ndarray, np.ndarray]:
        """One window (int index) as (L, F) and its label, or a batch (slice, array) as (B, L, F) and labels."""
        single = isinstance(index, int | np.integer)
        ends = np.atleast_1d(self.ends[index])
        rows = ends[:, None] - self.length + 1 + np.arange(self.length)
        windows = self.x[rows]
        return (windows[0], self.y[ends[0]]) if single else (windows, self.y[ends])


@dataclass
class Dataset:
    frame: pd.DataFrame  # symbol, epoch, tick, split, raw features, labels
    meta: DatasetMeta

    @property
    def feature_names(self) -> list[str]:
        return self.meta.feature_names

    def rows(self, split: str) -> pd.DataFrame:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; one of {SPLITS}")
        return self.frame[self.frame["split"] == split]

    def scale(self, raw: np.ndarray) -> np.ndarray:
        return self.meta.scale(raw)

    def xy(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Scaled flat features and target labels of a split (for trees)."""
        part = self.rows(split)
        return self.scale(part[self.feature_names].to_numpy()), part[self.meta.spec.target].to_numpy(np.int64)

    def windows(self, split: str, length: int | None = None) -> SequenceWindows:
        """Sliding windows of `sequence_length` consecutive ticks of one symbol (for sequence models)."""
        length = length or self.meta.spec.sequence_length
        x, y = self.xy(split)
        part = self.rows(split)
        ticks = part["tick"].to_numpy()
        symbols = part["symbol"].to_numpy()
        ends = np.arange(length - 1, len(part))
        if len(ends):
            starts = ends - length + 1
            ends = ends[(ticks[ends] - ticks[starts] == length - 1) & (symbols[ends] == symbols[starts])]
        return SequenceWindows(x, y, ends, length)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder / SHARDS, ignore_errors=True)  # a streamed dataset's shards would shadow these rows
        self.frame.to_parquet(folder / "rows.parquet", index=False)
        (folder / "meta.json").write_text(self.meta.model_dump_json(indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Dataset:
        folder = Path(folder)
        if not (folder / "meta.json").exists():
            raise FileNotFoundError(f"no dataset in {folder} (meta.json missing): materialize training_dataset first")
        meta = DatasetMeta.model_validate_json((folder / "meta.json").read_text())
        if (folder / SHARDS).is_dir():  # assembled day by day (`features.shards`): the shards in order
            frame = pd.concat([pd.read_parquet(p) for p in shard_paths(folder, meta.spec)], ignore_index=True)
            return cls(frame, meta)
        return cls(pd.read_parquet(folder / "rows.parquet"), meta)


SHARDS = "shards"  # a streamed dataset's rows: <folder>/shards/<symbol>/<YYYY-MM-DD>.parquet


def shard_paths(folder: str | Path, spec: DatasetSpec) -> list[Path]:
    """Every shard of a streamed dataset in row order: symbols as in the spec, then days."""
    days = [spec.start + timedelta(days=i) for i in range((spec.end - spec.start).days + 1)]
    return [Path(folder) / SHARDS / symbol / f"{day.isoformat()}.parquet" for symbol in spec.symbols for day in days]


def _symbol_rows(
    spec: DatasetSpec, symbol: str, ticks: pd.DataFrame, features: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(in-range rows with base features and labels, all ticks) for one symbol."""
    pip = get_symbol(symbol).pip_size
    ticks = ticks.sort_values("epoch").reset_index(drop=True)
    epochs = ticks["epoch"].to_numpy(np.int64)
    if features is None:
        features = compute_features(ticks, pip)
    labels = label_frame(ticks, pip, spec.labels)
    frame = features.merge(labels, on="epoch", how="inner", validate="one_to_one")
    tick_index = pd.Series(np.arange(len(ticks)), index=epochs)
    frame.insert(0, "tick", tick_index.reindex(frame["epoch"]).to_numpy())
    frame.insert(0, "symbol", symbol)
    in_range = (frame["epoch"] >= spec.start_epoch) & (frame["epoch"] < spec.end_epoch)
    return frame.loc[in_range].reset_index(drop=True), ticks


def resolve_epochs(frame: pd.DataFrame) -> np.ndarray:
    """Epoch at which a row's labels are both known: purges and fold cuts are judged by it."""
    return np.maximum(frame["direction_resolve_epoch"].to_numpy(), frame["barrier_resolve_epoch"].to_numpy())


def assign_splits(
    frame: pd.DataFrame, boundaries: list[int], embargo: int, first_after: list[int], until: int | None
) -> pd.Series:
    """Each row's split (None: purged, embargoed or past `until`); `first_after[i]` is the symbol's tick
    index of its first tick at or after `boundaries[i]`."""
    epochs = frame["epoch"].to_numpy()
    split = np.select([epochs < boundaries[0], epochs < boundaries[1]], [0, 1], 2)
    resolve = resolve_epochs(frame)
    keep = np.ones(len(frame), bool)
    for i, boundary in enumerate(boundaries):
        keep &= ~((split == i) & (resolve >= boundary))  # purge: the label reaches into the next span
        keep &= ~((split == i + 1) & (frame["tick"].to_numpy() < first_after[i] + embargo))
    if until is not None:
        keep &= resolve < until  # a walk-forward fold's test labels stay inside its block
    labels = np.where(keep, np.array(SPLITS, dtype=object)[split], None)
    return pd.Series(labels, index=frame.index)


def hash_rows(digest: hashlib._Hash, frame: pd.DataFrame) -> None:
    """Feed `frame`'s row hashes to `digest`: rows hashed part by part give the digest of the whole."""
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())


def _fingerprint(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    hash_rows(digest, frame)
    return digest.hexdigest()[:16]


def lower_quantile(pool: np.ndarray, q: float, below: int | None = None) -> int:
    """`np.quantile(pool[pool < below], q, method="lower")` of a sorted pool, reading only the elements
    a binary search and the answer touch (a memory-mapped pool stays on disk)."""
    n = len(pool) if below is None else int(np.searchsorted(pool, below))
    return int(pool[int(np.floor((n - 1) * q))])  # numpy's "lower" index


@dataclass
class PreparedRows:
    """Per-symbol rows with base features and labels, computed once and cut into any number of splits
    (`prepare_rows`, then `dataset()` and/or `walk_forward(k)`)."""

    spec: DatasetSpec
    per_symbol: dict[str, tuple[pd.DataFrame, pd.DataFrame]]  # (rows, all ticks)
    candidates: np.ndarray  # pooled epochs of the rows whose base features are defined, sorted

    def quantile(self, q: float, below: int | None = None) -> int:
        return lower_quantile(self.candidates, q, below)

    def dataset(self) -> Dataset:
        """The temporal train/validation/test split at the spec's fractions."""
        return _assemble(self, split_cuts(self.spec, self.quantile))

    def walk_forward(self, folds: int) -> list[Dataset]:
        """The walk-forward folds of `walk_forward_cuts`, each a dataset of its own."""
        return [_assemble(self, boundaries, until) for boundaries, until in walk_forward_cuts(self.spec, self.quantile, folds)]


Quantile = Callable[[float, int | None], int]  # (q, below) -> the pooled sample epoch at that quantile


def split_cuts(spec: DatasetSpec, quantile: Quantile) -> list[int]:
    """Epochs where validation and test begin: the sample epochs' quantiles at the spec's fractions."""
    return [quantile(c, None) for c in np.cumsum([spec.split.train, spec.split.validation])]


def walk_forward_cuts(spec: DatasetSpec, quantile: Quantile, folds: int) -> list[tuple[list[int], int | None]]:
    """Expanding-window walk-forward: the samples are cut in time into `folds + 1` equal blocks;
    fold k tests on block k and trains on everything before it, its last `validation / (train +
    validation)` share held out for early stopping. Each fold is a dataset of its own, with the
    same purge and embargo at both of its boundaries, its test labels kept inside its block, and
    its fitted features and normaliser fitted on its own training span. Per fold: (boundaries, until)."""
    if folds < 1:
        raise ValueError(f"walk-forward needs at least one fold, got {folds}")
    split = spec.split
    edges = [quantile(i / (folds + 1), None) for i in range(1, folds + 1)] + [None]
    validation_share = split.validation / (split.train + split.validation)
    return [([quantile(1 - validation_share, edges[k]), edges[k]], edges[k + 1]) for k in range(folds)]


def prepare_rows(
    spec: DatasetSpec, ticks: dict[str, pd.DataFrame], features: dict[str, pd.DataFrame] | None = None
) -> PreparedRows:
    """Each symbol's rows from its ticks (which may start before `spec.start`: that is warm-up) and
    optionally its precomputed base features (computed here when absent)."""
    missing = [s for s in spec.symbols if s not in ticks or ticks[s].empty]
    if missing:
        raise ValueError(f"no ticks for {missing} between {spec.start} and {spec.end}")
    per_symbol = {s: _symbol_rows(spec, s, ticks[s], (features or {}).get(s)) for s in spec.symbols}
    base = R.feature_names(fitted=False)
    candidates = np.concatenate(
        [f["epoch"].to_numpy()[np.isfinite(f[base].to_numpy()).all(axis=1)] for f, _ in per_symbol.values()]
    )
    return PreparedRows(spec, per_symbol, np.sort(enough_samples(spec, candidates)))


def enough_samples(spec: DatasetSpec, candidates: np.ndarray) -> np.ndarray:
    """The pooled sample epochs, refused when too few to split."""
    if len(candidates) < 100:
        raise ValueError(f"only {len(candidates)} samples after warm-up in {spec.start}..{spec.end}: too few to split")
    return candidates


def _assemble(prepared: PreparedRows, boundaries: list[int], until: int | None = None) -> Dataset:
    """Cut at `boundaries` (validation and test start), drop rows from `until` on, fit on train only."""
    spec = prepared.spec
    frames, fitted = [], {}
    for symbol, (frame, tick_frame) in prepared.per_symbol.items():
        frame = frame if until is None else frame.loc[frame["epoch"] < until]
        frame = frame.copy()
        pip = get_symbol(symbol).pip_size
        quotes = tick_frame["quote"].to_numpy(np.float64)
        tick_epochs = tick_frame["epoch"].to_numpy(np.int64)
        train_ticks = (tick_epochs >= spec.start_epoch) & (tick_epochs < boundaries[0])
        train_ticks[0] = False  # the first tick has no return
        rows = frame["tick"].to_numpy()
        rv = np.full(len(quotes), np.nan)
        rv[rows] = frame[f"rv_{R.REGIME_RV_WINDOW}"].to_numpy()
        fitted[symbol] = fit_features(log_returns_bp(pips(quotes, pip))[train_ticks], rv[train_ticks])
        for name, values in fitted_features(quotes, pip, rv, fitted[symbol]).items():
            frame[name] = values[rows]
        first_after = np.searchsorted(tick_epochs, boundaries).tolist()
        frame["split"] = assign_splits(frame, boundaries, spec.split.embargo_ticks, first_after, until)
        frames.append(frame)
    frame, dropped = kept_rows(pd.concat(frames, ignore_index=True))
    names = R.feature_names(fitted=True)
    counts = split_counts({s: int((frame["split"] == s).sum()) for s in SPLITS})
    scaler = StandardScaler().fit(frame.loc[frame["split"] == "train", names].to_numpy())
    meta = DatasetMeta(
        spec=spec,
        feature_names=names,
        boundaries=boundaries,
        until=until,
        **scaler_fields(scaler),
        fitted=fitted,
        rows=counts,
        dropped=dropped,
        class_balance={s: class_balance(frame.loc[frame["split"] == s, spec.target].to_numpy()) for s in SPLITS},
        fingerprint=_fingerprint(frame),
    )
    return Dataset(frame, meta)


def scaler_fields(scaler: StandardScaler) -> dict[str, list[float]]:
    """The fitted scaler as DatasetMeta fields; a constant column is left unscaled (scale 1)."""
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return {"scaler_mean": scaler.mean_.tolist(), "scaler_scale": scale.tolist()}


def kept_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows a dataset keeps (every feature finite, both labels resolved, in a split), in the
    dataset's columns, and how many were dropped for which reason."""
    names = R.feature_names(fitted=True)
    target_resolved = (frame["direction"] != UNRESOLVED) & (frame["barrier"] != UNRESOLVED)
    finite = np.isfinite(frame[names].to_numpy()).all(axis=1)
    dropped = {
        "warm-up": int((~finite).sum()),
        "unresolved label": int((finite & ~target_resolved).sum()),
        "purge/embargo": int((finite & target_resolved & frame["split"].isna()).sum()),
    }
    frame = frame.loc[finite & target_resolved & frame["split"].notna()]
    return frame[["symbol", "epoch", "tick", "split", *names, *label_columns(frame)]].reset_index(drop=True), dropped


def split_counts(counts: dict[str, int]) -> dict[str, int]:
    """Rows per split, refused when a split is empty."""
    empty = [s for s, c in counts.items() if c == 0]
    if empty:
        raise ValueError(f"split(s) {empty} are empty after purge and embargo: widen the date range")
    return counts


def build_dataset(
    spec: DatasetSpec,
    ticks: dict[str, pd.DataFrame],
    features: dict[str, pd.DataFrame] | None = None,
) -> Dataset:
    return prepare_rows(spec, ticks, features).dataset()


def walk_forward_datasets(
    spec: DatasetSpec,
    ticks: dict[str, pd.DataFrame],
    features: dict[str, pd.DataFrame] | None = None,
    folds: int = 3,
) -> list[Dataset]:
    return prepare_rows(spec, ticks, features).walk_forward(folds)


WALK_FORWARD = "walk_forward"


def save_walk_forward(folder: str | Path, folds: list[Dataset]) -> list[Path]:
    """Replace the folds stored beside a dataset (none: remove them)."""
    root = Path(folder) / WALK_FORWARD
    shutil.rmtree(root, ignore_errors=True)
    return [fold.save(root / f"fold_{k + 1}") for k, fold in enumerate(folds)]


def load_walk_forward(folder: str | Path) -> list[Dataset]:
    root = Path(folder) / WALK_FORWARD
    paths = sorted(root.glob("fold_*"), key=lambda p: int(p.name.removeprefix("fold_")))
    if not paths:
        raise FileNotFoundError(f"no walk-forward folds in {root}: materialize training_dataset with walk_forward_folds >= 1")
    return [Dataset.load(p) for p in paths]


def label_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(("direction", "barrier"))]
