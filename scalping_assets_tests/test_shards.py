"""Datasets assembled day by day into shards equal the in-memory assembly, and models train from them.

Property: shards = whole. The same ticks, assembled in memory (`build_dataset`) and streamed day by
day from the tick store (`shards.build_sharded`), give the same boundaries, rows, labels, fits and
model inputs; features differ only by their float32 storage.
"""

from datetime import date

import numpy as np
import pytest

from scalping_assets.features.dataset import SPLITS, Dataset, DatasetSpec, SplitSpec, build_dataset, walk_forward_datasets
from scalping_assets.features.labels import Barriers, LabelSpec
from scalping_assets.features.sharded import ShardedDataset
from scalping_assets.features.shards import DaySource, build_sharded
from scalping_assets.market.simulator import simulator
from scalping_assets.market.store import TickStore
from scalping_assets.models.config import profile_config
from scalping_assets.models.families import family
from scalping_assets.models.train import train_torch
from scalping_assets.models.trees import predict_tree

SYMBOLS = ["SIG_AR1", "CRASH500"]
DAYS = [date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)]  # the first only warms up
SPEC = DatasetSpec(
    symbols=SYMBOLS,
    start=DAYS[1],
    end=DAYS[2],
    labels=LabelSpec(horizon=10, barriers=Barriers(take_profit=3, stop_loss=3, max_hold_ticks=200)),
    split=SplitSpec(embargo_ticks=300),
)
# A feature stored as float32 is within 2^-24 of its value; scaled by a training std, a value |x| std
# from the mean moves by about |x| 2^-24 (|x| < 100 here), far below any model's resolution.
SCALED_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> TickStore:
    store = TickStore(tmp_path_factory.mktemp("shards") / "ticks")
    for symbol in SYMBOLS:
        sim = simulator(symbol, 7)
        for day in DAYS:
            store.write_day(symbol, day, sim.day(day))
    return store


def _in_memory(store: TickStore, spec: DatasetSpec) -> dict:
    return {s: store.read(s, DAYS[0], spec.end_epoch) for s in spec.symbols}


@pytest.fixture(scope="module")
def both(store, tmp_path_factory) -> tuple[Dataset, ShardedDataset]:
    folder = tmp_path_factory.mktemp("sharded") / "ds"
    build_sharded(SPEC, DaySource(store), folder)
    return build_dataset(SPEC, _in_memory(store, SPEC)), ShardedDataset.load(folder)


def test_shards_equal_the_in_memory_dataset(both):
    memory, sharded = both
    meta = sharded.meta
    assert meta.boundaries == memory.meta.boundaries
    assert meta.rows == memory.meta.rows and meta.dropped == memory.meta.dropped
    assert meta.class_balance == memory.meta.class_balance
    assert meta.fitted == memory.meta.fitted  # GARCH and regime fitted on the same training values
    # Running moments over the training shards against one fit: the same to rounding.
    np.testing.assert_allclose(meta.scaler_mean, memory.meta.scaler_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(meta.scaler_scale, memory.meta.scaler_scale, rtol=1e-12)
    loaded = sharded.to_dataset().frame
    assert list(loaded.columns) == list(memory.frame.columns)
    for column in memory.frame.columns:
        if column in memory.feature_names:
            assert loaded[column].dtype == np.float32
            np.testing.assert_allclose(loaded[column], memory.frame[column], rtol=1e-6, atol=1e-9, err_msg=column)
        else:  # epochs, ticks, splits, labels, resolve epochs, barrier moves: exact
            assert loaded[column].equals(memory.frame[column]), column


def test_streamed_model_inputs_equal_the_in_memory_ones(both):
    memory, sharded = both
    for split in SPLITS:
        x, y = memory.xy(split)
        parts = list(sharded.parts(split))
        assert len(parts) == len(SYMBOLS) * (2 if split == "train" else 1)  # a shard per (symbol, day) it spans
        np.testing.assert_allclose(np.concatenate([p[0] for p in parts]), x, rtol=SCALED_TOLERANCE, atol=SCALED_TOLERANCE)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y)
        windows, mapped = memory.windows(split), sharded.windows(split)
        np.testing.assert_array_equal(mapped.ends, windows.ends)  # windows span the day boundary
        assert isinstance(mapped.x, np.memmap)
        np.testing.assert_array_equal(mapped.x, sharded.to_dataset().xy(split)[0])


def test_walk_forward_folds_stream_too(store, tmp_path):
    spec = SPEC.model_copy(update={"symbols": ["SIG_AR1"]})
    folds = walk_forward_datasets(spec, _in_memory(store, spec), folds=2)
    build_sharded(spec, DaySource(store), tmp_path, walk_forward_folds=2)
    for k, fold in enumerate(folds, start=1):
        streamed = ShardedDataset.load(tmp_path / "walk_forward" / f"fold_{k}").meta
        assert (streamed.boundaries, streamed.until, streamed.rows) == (fold.meta.boundaries, fold.meta.until, fold.meta.rows)
        assert streamed.fitted == fold.meta.fitted


def test_a_missing_day_is_refused_naming_its_file(store, tmp_path):
    spec = SPEC.model_copy(update={"end": date(2026, 1, 4)})
    with pytest.raises(FileNotFoundError, match=r"SIG_AR1 on 2026-01-04 .*2026-01-04\.parquet"):
        build_sharded(spec, DaySource(store), tmp_path / "ds")
    assert not (tmp_path / "ds" / ".staging").exists()


def test_torch_trains_from_shards_as_from_memory(both):
    """The same seed draws the same windows from the memory-mapped arrays as from the loaded frame:
    every batch, so every epoch's loss, is the same."""
    _, sharded = both
    loaded = sharded.to_dataset()
    config = profile_config("demo", "cnn", hidden=8, epochs=2, max_train_windows=1_500, max_eval_windows=500)
    build = family("cnn").build
    from_memory = train_torch(config, build, loaded.windows("train"), loaded.windows("validation"))
    from_shards = train_torch(config, build, sharded.windows("train"), sharded.windows("validation"))
    assert [(h.train_loss, h.val_loss) for h in from_shards.history] == [(h.train_loss, h.val_loss) for h in from_memory.history]


def test_xgboost_from_shards_predicts_close_to_memory(store, tmp_path):
    """XGBoost's external-memory path bins features by a sketch merged over the shards, the in-memory
    one by a sketch of the whole matrix: a few split thresholds move by a bin, so a few rows change
    leaf. The probabilities stay within 0.01 on average and the predicted class agrees on 98 %."""
    spec = SPEC.model_copy(update={"symbols": ["SIG_AR1"], "end": DAYS[1]})
    build_sharded(spec, DaySource(store), tmp_path)
    sharded, memory = ShardedDataset.load(tmp_path), build_dataset(spec, _in_memory(store, spec))
    config = profile_config("demo", "xgboost", n_estimators=20)
    from_memory, from_shards = family("xgboost").fit(memory, config), family("xgboost").fit(sharded, config)
    x, y = memory.xy("test")
    p_memory, p_shards = predict_tree(from_memory.model, x), predict_tree(from_shards.model, x)
    assert np.abs(p_shards - p_memory).mean() < 0.01
    assert (p_shards.argmax(1) == p_memory.argmax(1)).mean() > 0.98
    assert abs((p_shards.argmax(1) == y).mean() - (p_memory.argmax(1) == y).mean()) < 0.01
