"""A dataset written as shards (`features.shards`), read a shard at a time.

`parts(split)` yields each shard's scaled rows of a split (what XGBoost's external-memory iterator
reads); `windows(split)` gives sequence windows over arrays on disk (what the torch families train
on), written once from the shards and memory-mapped, so a training run reads the rows its batches
touch instead of holding the split. `to_dataset()` is the whole dataset in memory, for what needs it.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import SHARDS, SPLITS, Dataset, DatasetMeta, SequenceWindows, shard_paths
from .labels import CLASSES, class_counts

WINDOWS = "windows"  # <folder>/windows/<split>/: x.npy (scaled features), y.npy, ends_<length>.npy


@dataclass
class ShardedDataset:
    folder: Path
    meta: DatasetMeta

    @classmethod
    def load(cls, folder: str | Path) -> ShardedDataset:
        folder = Path(folder)
        if not (folder / SHARDS).is_dir() or not (folder / "meta.json").exists():
            raise FileNotFoundError(
                f"no sharded dataset in {folder} (shards/ or meta.json missing): build it with shards.build_sharded"
            )
        return cls(folder, DatasetMeta.model_validate_json((folder / "meta.json").read_text()))

    @property
    def feature_names(self) -> list[str]:
        return self.meta.feature_names

    def frames(self, split: str, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """Each shard's rows of `split` (only `columns`, when given), in the dataset's row order."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; one of {SPLITS}")
        for path in shard_paths(self.folder, self.meta.spec):
            frame = pd.read_parquet(path, columns=columns and ["split", *columns], filters=[("split", "==", split)])
            if len(frame):
                yield frame

    def parts(self, split: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(scaled float32 features, target labels) of `split`, one shard at a time."""
        target = self.meta.spec.target
        for frame in self.frames(split, [*self.feature_names, target]):
            yield self.meta.scale(frame[self.feature_names].to_numpy()), frame[target].to_numpy(np.int64)

    def sample(self, split: str, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scaled features, targets, symbols) of every `stride`-th row of each symbol in `split`: the
        rows `rows[::stride]` of each symbol's part of the whole split would be."""
        target, names = self.meta.spec.target, self.feature_names
        parts, seen = [], {}
        for frame in self.frames(split, ["symbol", *names, target]):
            symbol = frame["symbol"].iloc[0]  # a shard holds one symbol
            parts.append(frame.iloc[-seen.get(symbol, 0) % stride :: stride])
            seen[symbol] = seen.get(symbol, 0) + len(frame)
        rows = pd.concat(parts, ignore_index=True)
        return self.meta.scale(rows[names].to_numpy()), rows[target].to_numpy(np.int64), rows["symbol"].to_numpy()

    def class_counts(self, split: str) -> np.ndarray:
        """Target labels per class in `split`."""
        target = self.meta.spec.target
        counts = [class_counts(f[target].to_numpy()) for f in self.frames(split, [target])]
        return np.sum(counts, axis=0) if counts else np.zeros(len(CLASSES), np.int64)

    def to_dataset(self) -> Dataset:
        return Dataset.load(self.folder)

    def windows(self, split: str, length: int | None = None) -> SequenceWindows:
        """`Dataset.windows` over memory-mapped arrays: the same windows, rows and values."""
        length = length or self.meta.spec.sequence_length
        folder = self.folder / WINDOWS / split
        if not (folder / "y.npy").exists():
            self._write_arrays(split, folder)
        ends_path = folder / f"ends_{length}.npy"
        if not ends_path.exists():
            _save_atomic(ends_path, self._window_ends(split, length))
        x, y = np.load(folder / "x.npy", mmap_mode="r"), np.load(folder / "y.npy", mmap_mode="r")
        return SequenceWindows(x, y, np.load(ends_path), length)

    def _write_arrays(self, split: str, folder: Path) -> None:
        """x.npy and y.npy of `split`, streamed from the shards into a folder renamed into place whole."""
        scratch = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
        scratch.mkdir(parents=True)
        n, width = self.meta.rows[split], len(self.feature_names)
        x = np.lib.format.open_memmap(scratch / "x.npy", "w+", np.float32, (n, width))
        y = np.lib.format.open_memmap(scratch / "y.npy", "w+", np.int64, (n,))
        row = 0
        for features, labels in self.parts(split):
            x[row : row + len(labels)], y[row : row + len(labels)] = features, labels
            row += len(labels)
        x.flush(), y.flush()
        del x, y
        shutil.rmtree(folder, ignore_errors=True)
        scratch.rename(folder)

    def _window_ends(self, split: str, length: int) -> np.ndarray:
        """Rows (of the split) that end `length` consecutive ticks of one symbol, as `Dataset.windows`."""
        ends, offset, previous, run = [], 0, None, 0
        for frame in self.frames(split, ["symbol", "tick"]):
            ticks = frame["tick"].to_numpy()
            symbol = frame["symbol"].iloc[0]  # a shard holds one symbol
            last = previous[1] if previous is not None and previous[0] == symbol else None
            lengths = _run_lengths(ticks, last, run)
            ends.append(offset + np.flatnonzero(lengths >= length))
            offset, previous, run = offset + len(ticks), (symbol, int(ticks[-1])), int(lengths[-1])
        return np.concatenate(ends) if ends else np.zeros(0, np.int64)


def _run_lengths(ticks: np.ndarray, last: int | None, run: int) -> np.ndarray:
    """Length of the run of consecutive ticks ending at each row; a run continues from the previous
    shard (its last tick `last`, run length `run`) when the first tick follows it."""
    index = np.arange(len(ticks))
    follows = np.diff(ticks, prepend=ticks[0] - 2 if last is None else last) == 1
    start = np.maximum.accumulate(np.where(follows, -1, index))
    return np.where(start >= 0, index - start + 1, index + 1 + run)


def _save_atomic(path: Path, values: np.ndarray) -> None:
    scratch = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.npy")
    np.save(scratch, values)
    scratch.rename(path)
