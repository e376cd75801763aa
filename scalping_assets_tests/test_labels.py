"""Labels against a per-tick reference loop, and their resolution indices."""

import math

import numpy as np
import pytest

from scalping_assets.features.labels import (
    DOWN,
    NEUTRAL,
    UNRESOLVED,
    UP,
    Barriers,
    LabelSpec,
    class_balance,
    direction_labels,
    label_frame,
    triple_barrier_labels,
)
from scalping_assets_tests.feature_helpers import sim_ticks


def _walk(n: int, seed: int) -> np.ndarray:
    steps = np.random.default_rng(seed).integers(-3, 4, n)
    return (10_000 + np.cumsum(steps)) * 0.01


def _reference_barriers(quotes: np.ndarray, pip: float, b: Barriers) -> tuple[list[int], list[int]]:
    k = np.rint(quotes / pip).astype(int)
    labels, resolves = [], []
    for t in range(len(k)):
        if b.unit == "sigma":
            if t < 100:
                labels.append(UNRESOLVED), resolves.append(-1)
                continue
            sigma = math.sqrt(sum((k[i] - k[i - 1]) ** 2 for i in range(t - 99, t + 1)) / 100)
            if sigma == 0:
                labels.append(UNRESOLVED), resolves.append(-1)
                continue
            up, down = k[t] + b.take_profit * sigma, k[t] - b.stop_loss * sigma
        else:
            up, down = k[t] + b.take_profit, k[t] - b.stop_loss
        label, resolve = UNRESOLVED, -1
        for h in range(1, b.max_hold_ticks + 1):
            if t + h >= len(k):
                break
            if k[t + h] >= up:
                label, resolve = UP, t + h
                break
            if k[t + h] <= down:
                label, resolve = DOWN, t + h
                break
        else:
            label, resolve = NEUTRAL, t + b.max_hold_ticks
        labels.append(label), resolves.append(resolve)
    return labels, resolves


@pytest.mark.parametrize(
    "barriers",
    [
        Barriers(take_profit=5, stop_loss=3, max_hold_ticks=20, unit="pips"),
        Barriers(take_profit=2.5, stop_loss=4, max_hold_ticks=15, unit="sigma"),
    ],
)
def test_triple_barrier_equals_a_per_tick_loop(barriers):
    quotes = _walk(3_000, seed=1)
    label, resolve, move = triple_barrier_labels(quotes, 0.01, barriers)
    ref_label, ref_resolve = _reference_barriers(quotes, 0.01, barriers)
    assert label.tolist() == ref_label
    assert resolve.tolist() == ref_resolve
    assert {UP, DOWN, NEUTRAL, UNRESOLVED} <= set(label.tolist())
    k = np.rint(quotes / 0.01)
    done = resolve >= 0
    assert np.array_equal(move[done], k[resolve[done]] - k[done])
    assert (resolve[done] - np.flatnonzero(done) <= barriers.max_hold_ticks).all()


def test_direction_labels_with_a_neutral_band():
    quotes = _walk(500, seed=2)
    label, resolve = direction_labels(quotes, 0.01, horizon=7, threshold_bp=2.0)
    for t in range(len(quotes)):
        if t + 7 >= len(quotes):
            assert label[t] == UNRESOLVED and resolve[t] == -1
            continue
        move = 1e4 * math.log(round(quotes[t + 7] / 0.01) / round(quotes[t] / 0.01))
        assert label[t] == (UP if move > 2.0 else DOWN if move < -2.0 else NEUTRAL)
        assert resolve[t] == t + 7


def test_label_frame_resolve_epochs_and_balance():
    ticks = sim_ticks("SIG_AR1", 5_000)
    spec = LabelSpec(horizon=10, barriers=Barriers(take_profit=2, stop_loss=2, max_hold_ticks=30))
    frame = label_frame(ticks, 0.001, spec)
    epochs = ticks["epoch"].to_numpy()
    resolved = frame["direction"] >= 0
    assert (frame.loc[resolved, "direction_resolve_epoch"].to_numpy() == epochs[np.flatnonzero(resolved) + 10]).all()
    balance = class_balance(frame["direction"].to_numpy())
    assert sum(balance.values()) == pytest.approx(1.0)
    assert 0.4 < balance["UP"] < 0.6, "the planted AR(1) has no drift"
    resolved = frame["barrier"] >= 0
    assert (frame.loc[resolved, "barrier_resolve_epoch"] > frame.loc[resolved, "epoch"]).all()
    assert (frame.loc[~resolved, "barrier_resolve_epoch"] == -1).all()
    assert not resolved.iloc[:100].any(), "sigma barriers need 100 ticks of history"
    assert resolved.iloc[100:-30].all(), "every entry with history and 30 ticks ahead resolves"


def test_bad_label_specs_are_refused():
    with pytest.raises(ValueError):
        Barriers(take_profit=0)
    with pytest.raises(ValueError):
        LabelSpec(horizon=0)
