"""Dataset proofs: purged temporal splits, training-span-only fitting, windows within one symbol."""

from datetime import date

import numpy as np
import pytest

from scalping_assets.features import registry as R
from scalping_assets.features.dataset import (
    SPLITS,
    Dataset,
    DatasetSpec,
    SplitSpec,
    build_dataset,
    load_walk_forward,
    save_walk_forward,
    walk_forward_datasets,
)
from scalping_assets.features.labels import Barriers, LabelSpec
from scalping_assets.features.plots import NOISE, mutual_information, mutual_information_png
from scalping_assets.market.simulator import simulator
from scalping_assets.market.symbols import UnknownSymbolError

SYMBOLS = ["SIG_AR1", "CRASH500"]
SPEC = DatasetSpec(
    symbols=SYMBOLS,
    start=date(2026, 1, 2),
    end=date(2026, 1, 2),
    labels=LabelSpec(horizon=10, barriers=Barriers(take_profit=3, stop_loss=3, max_hold_ticks=200)),
    split=SplitSpec(embargo_ticks=300),
)


def _ticks(symbols=SYMBOLS):
    return {s: simulator(s, 7).days(date(2026, 1, 1), date(2026, 1, 2)) for s in symbols}


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return build_dataset(SPEC, _ticks())


def test_no_label_window_reaches_into_a_later_split(dataset):
    frame, (b1, b2) = dataset.frame, dataset.meta.boundaries
    resolve = frame[["direction_resolve_epoch", "barrier_resolve_epoch"]].max(axis=1)
    train, val, test = (frame["split"] == s for s in SPLITS)
    assert frame.loc[train, "epoch"].max() < b1 <= frame.loc[val, "epoch"].min()
    assert frame.loc[val, "epoch"].max() < b2 <= frame.loc[test, "epoch"].min()
    assert resolve[train].max() < b1, "a training label uses a validation price"
    assert resolve[val].max() < b2, "a validation label uses a test price"
    assert dataset.meta.dropped["purge/embargo"] > 0
    # Barrier labels can take up to 200 ticks: the purge must have removed the train rows just before b1.
    ticks = _ticks()
    for symbol in SYMBOLS:
        epochs = ticks[symbol]["epoch"].to_numpy()
        first_val = np.searchsorted(epochs, b1)
        rows = frame[(frame["symbol"] == symbol)]
        assert not rows["tick"].between(first_val, first_val + SPEC.split.embargo_ticks - 1).any(), "embargo not applied"


def test_split_fractions_and_determinism(dataset):
    rows = dataset.meta.rows
    total = sum(rows.values())
    assert rows["train"] / total == pytest.approx(0.70, abs=0.02)
    assert rows["validation"] / total == pytest.approx(0.15, abs=0.02)
    again = build_dataset(SPEC, _ticks())
    assert again.meta.fingerprint == dataset.meta.fingerprint
    assert np.isfinite(dataset.frame[dataset.feature_names].to_numpy()).all()


def test_scaler_and_fitted_features_use_the_training_span_only(dataset):
    ticks = _ticks()
    b1 = dataset.meta.boundaries[0]
    for symbol in SYMBOLS:
        after = ticks[symbol]["epoch"] >= b1
        # Wild later spans: a training-span fit cannot notice them.
        ticks[symbol].loc[after, "quote"] = np.round(ticks[symbol].loc[after, "quote"] * 1.3, 3)
    changed = build_dataset(SPEC, ticks)
    assert changed.meta.boundaries == dataset.meta.boundaries
    assert changed.meta.scaler_mean == dataset.meta.scaler_mean
    assert changed.meta.scaler_scale == dataset.meta.scaler_scale
    assert changed.meta.fitted == dataset.meta.fitted
    x_train, _ = dataset.xy("train")
    assert np.abs(x_train.mean(axis=0)).max() < 1e-3, "scaled training features are centred"
    assert not np.allclose(changed.xy("test")[0], dataset.xy("test")[0])


def test_sequence_windows_are_contiguous_ticks_of_one_symbol(dataset):
    windows = dataset.windows("validation", length=50)
    part = dataset.rows("validation")
    assert len(windows) > 0
    x, y = windows[np.arange(0, len(windows), 997)]
    assert x.shape[1:] == (50, len(dataset.feature_names))
    for i in range(0, len(windows), 997):
        end = windows.ends[i]
        rows = part.iloc[end - 49 : end + 1]
        assert rows["symbol"].nunique() == 1
        assert (np.diff(rows["tick"].to_numpy()) == 1).all()
    batch_x, batch_y = windows[2:6]
    assert batch_x.shape == (4, 50, len(dataset.feature_names)) and batch_y.shape == (4,)
    assert np.array_equal(batch_x[0], windows[2][0])
    expected = dataset.scale(part.iloc[windows.ends[0] - 49 : windows.ends[0] + 1][dataset.feature_names].to_numpy())
    assert np.array_equal(windows[0][0], expected)
    assert windows[0][1] == part[SPEC.target].iloc[windows.ends[0]]
    # One window per row except each contiguous run's first 49 rows.
    runs = (np.diff(part["tick"].to_numpy()) != 1) | (part["symbol"].to_numpy()[1:] != part["symbol"].to_numpy()[:-1])
    assert len(windows) == len(part) - 49 * (runs.sum() + 1)


def _assert_purged(fold: Dataset) -> None:
    frame, (validation_from, test_from), until = fold.frame, fold.meta.boundaries, fold.meta.until
    resolve = frame[["direction_resolve_epoch", "barrier_resolve_epoch"]].max(axis=1)
    train, val, test = (frame["split"] == s for s in SPLITS)
    assert resolve[train].max() < validation_from, "a training label uses a validation price"
    assert resolve[val].max() < test_from, "a validation label uses a test price"
    assert frame.loc[test, "epoch"].min() >= test_from
    if until is not None:
        assert resolve[test].max() < until, "a test label reaches into the next fold's block"


def test_walk_forward_folds_expand_purge_and_fit_on_their_own_training_span():
    ticks = _ticks()
    folds = walk_forward_datasets(SPEC, ticks, folds=3)
    assert len(folds) == 3
    for fold in folds:
        _assert_purged(fold)
    # Expanding window; the test blocks tile the later samples without overlap.
    assert [f.meta.rows["train"] for f in folds] == sorted(f.meta.rows["train"] for f in folds)
    assert folds[0].meta.rows["train"] < folds[2].meta.rows["train"] / 2
    for earlier, later in zip(folds, folds[1:], strict=False):
        assert earlier.meta.until == later.meta.boundaries[1]
        assert earlier.rows("test")["epoch"].max() < later.meta.boundaries[1]
    assert folds[-1].meta.until is None
    # Rewriting every price from the first fold's test block on: that fold's fit cannot see it, the next ones do.
    test_from = folds[0].meta.boundaries[1]
    for symbol in SYMBOLS:
        after = ticks[symbol]["epoch"] >= test_from
        ticks[symbol].loc[after, "quote"] = np.round(ticks[symbol].loc[after, "quote"] * 1.3, 3)
    changed = walk_forward_datasets(SPEC, ticks, folds=3)
    assert changed[0].meta.scaler_mean == folds[0].meta.scaler_mean
    assert changed[0].meta.fitted == folds[0].meta.fitted
    assert changed[1].meta.scaler_mean != folds[1].meta.scaler_mean


def test_walk_forward_folds_are_stored_beside_the_dataset(dataset, tmp_path):
    folder = dataset.save(tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match="walk_forward_folds"):
        load_walk_forward(folder)
    folds = walk_forward_datasets(SPEC, _ticks(), folds=2)
    save_walk_forward(folder, folds)
    assert [f.meta for f in load_walk_forward(folder)] == [f.meta for f in folds]
    save_walk_forward(folder, [])
    with pytest.raises(FileNotFoundError):
        load_walk_forward(folder)
    with pytest.raises(ValueError, match="at least one fold"):
        walk_forward_datasets(SPEC, _ticks(), folds=0)


def test_save_and_load_round_trip(dataset, tmp_path):
    folder = dataset.save(tmp_path / "ds")
    loaded = Dataset.load(folder)
    assert loaded.meta == dataset.meta
    assert loaded.frame.equals(dataset.frame)
    with pytest.raises(FileNotFoundError, match="materialize training_dataset"):
        Dataset.load(tmp_path / "nothing")


def test_first_day_without_history_loses_only_the_warmup():
    spec = SPEC.model_copy(update={"start": date(2026, 1, 1), "end": date(2026, 1, 1), "symbols": ["SIG_AR1"]})
    ds = build_dataset(spec, {"SIG_AR1": simulator("SIG_AR1", 7).day(date(2026, 1, 1))})
    assert ds.meta.dropped["warm-up"] == R.WARMUP_TICKS
    assert ds.frame["tick"].min() >= R.WARMUP_TICKS


def test_bad_specs_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="sum to 1"):
        SplitSpec(train=0.8, validation=0.15, test=0.15)
    with pytest.raises(ValueError, match="before start"):
        DatasetSpec(symbols=["R_100"], start=date(2026, 1, 3), end=date(2026, 1, 2))
    with pytest.raises(UnknownSymbolError, match="NOPE"):
        DatasetSpec(symbols=["NOPE"], start=date(2026, 1, 2), end=date(2026, 1, 2))
    with pytest.raises(ValueError, match="no ticks"):
        build_dataset(SPEC, {"SIG_AR1": _ticks()["SIG_AR1"]})


def test_mutual_information_finds_the_informative_column_and_ignores_constants():
    rng = np.random.default_rng(0)
    n = 6_000
    signal = rng.normal(size=n)
    y = (signal + 0.5 * rng.normal(size=n) > 0).astype(int)
    x = np.column_stack([signal, rng.normal(size=n), np.zeros(n)])
    groups = np.array(["A"] * n)
    scores = mutual_information(x, y, groups, ["signal", "noise", "constant"], stride=1)["A"]
    assert scores["constant"] == 0.0
    assert scores["signal"] > 0.2
    assert abs(scores["noise"]) < 5 * max(scores[NOISE], 1e-3)
    png = mutual_information_png({"A": scores}, "mi")
    assert png.startswith(b"\x89PNG")
