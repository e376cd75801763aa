"""One engine, two drivers: the incremental engine, fed a day tick by tick, makes exactly the trades
the batch engine makes on the whole day, bit for bit, on every instrument, unit, cap and latency;
and a state journaled as JSON half-way and restored in a new engine changes nothing."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalping_assets.backtest.engine import ExecutionConfig, TickPath, run_backtest, signal_sides
from scalping_assets.backtest.incremental import EngineState, IncrementalEngine, signal_side
from scalping_assets.market.simulator import simulator
from scalping_assets.market.symbols import get_symbol
from scalping_assets_tests.backtest_helpers import random_proba
from scalping_assets_tests.test_backtest import BUSY, DAY, PLAIN
from scalping_assets_tests.test_instruments import CASES, _costs

ALL = {name: (symbol, config, costs) for name, (symbol, config, costs, _) in CASES.items()}
ALL |= {"busy_spread": ("CRASH500", BUSY, None), "plain_spread": ("R_100", PLAIN, None)}
ALL |= {
    "multiplier_money": (
        "R_100",
        ExecutionConfig(unit="money", take_profit=1.0, stop_loss=2.0, max_positions=2, stake=100),
        None,
    )
}


def _feed(engine: IncrementalEngine, epochs, quotes, proba, start: int = 0, stop: int | None = None) -> list[dict]:
    trades = []
    for i in range(start, len(epochs) if stop is None else stop):
        row = None if np.isnan(proba[i]).all() else proba[i]
        trades += engine.on_tick(int(epochs[i]), float(quotes[i]), row).trades
    return trades


def _bit_for_bit(batch: pd.DataFrame, incremental: list[dict]) -> None:
    # Closed in exit order; the batch engine lists them in signal order.
    frame = pd.DataFrame(incremental).sort_values("entry_tick", kind="stable").reset_index(drop=True)
    assert len(frame) == len(batch)
    assert frame["order_id"].tolist() == [f"{s}-{e}" for s, e in zip(batch["symbol"], batch["signal_epoch"], strict=True)]
    for column in batch.columns:
        a, b = batch[column], frame[column]
        if column in ("symbol", "reason"):
            assert a.astype(str).tolist() == b.astype(str).tolist(), column
        else:
            # Bit for bit: the same float64 values (NaN where both are NaN), not merely close ones.
            assert np.array_equal(a.to_numpy(np.float64), b.to_numpy(np.float64), equal_nan=True), column


def _day(symbol: str, seed: int, rows: int):
    ticks = simulator(symbol, seed).day(DAY).iloc[:rows]
    return ticks["epoch"].to_numpy(), ticks["quote"].to_numpy()


@pytest.mark.parametrize("case", sorted(ALL))
def test_the_incremental_engine_makes_the_batch_engines_trades_bit_for_bit(case):
    symbol, config, costs = ALL[case]
    epochs, quotes = _day(symbol, 5, 20_000)
    pip = get_symbol(symbol).pip_size
    path = TickPath.build(symbol, epochs, quotes, pip, config, costs)
    proba = random_proba(len(epochs), 5)
    batch = run_backtest(path, proba, config)
    engine = IncrementalEngine(symbol, pip, config, costs)
    trades = _feed(engine, epochs, quotes, proba)
    assert len(batch.trades) >= 100
    _bit_for_bit(batch.trades, trades)
    assert len(engine.open_positions) == batch.unfinished
    assert engine.state.signals == batch.signals


@pytest.mark.parametrize("case", ["busy_spread", "multiplier_money", "rise_fall_capped"])
def test_a_state_journaled_half_way_and_restored_changes_nothing(case):
    symbol, config, costs = ALL[case]
    epochs, quotes = _day(symbol, 6, 8_000)
    pip = get_symbol(symbol).pip_size
    proba = random_proba(len(epochs), 6)
    batch = run_backtest(TickPath.build(symbol, epochs, quotes, pip, config, costs), proba, config)
    first = IncrementalEngine(symbol, pip, config, costs)
    trades = _feed(first, epochs, quotes, proba, stop=4_321)
    assert first.open_positions or first.snapshot().pending, "the cut should fall while something is open"
    journaled = json.loads(first.snapshot().model_dump_json())  # what a journal stores
    second = IncrementalEngine(symbol, pip, config, costs, state=EngineState.model_validate(journaled))
    trades += _feed(second, epochs, quotes, proba, start=4_321)
    _bit_for_bit(batch.trades, trades)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    instrument=st.sampled_from(["multiplier", "rise_fall", "cfd", "spread"]),
    unit=st.sampled_from(["pips", "sigma", "money"]),
    latency=st.integers(1, 3),
    positions=st.integers(1, 3),
    hold=st.integers(1, 40),
    per_minute=st.one_of(st.none(), st.integers(1, 6)),
    per_hour=st.one_of(st.none(), st.integers(5, 200)),
    confidence=st.floats(0.34, 0.7),
    seed=st.integers(0, 10_000),
)
def test_any_config_gives_the_same_trades_both_ways(
    instrument, unit, latency, positions, hold, per_minute, per_hour, confidence, seed
):
    fields = {"instrument": instrument, "latency_ticks": latency, "max_positions": positions, "max_hold_ticks": hold}
    fields |= {"max_trades_per_minute": per_minute, "max_trades_per_hour": per_hour, "min_confidence": confidence}
    costs = None
    if instrument == "rise_fall":
        costs = _costs(payout=1.85)
    elif instrument in ("multiplier", "cfd", "spread"):
        if unit == "money" and instrument != "multiplier":
            unit = "sigma"
        fields |= {"unit": unit, "take_profit": 2.0, "stop_loss": 3.0}  # money: above the commission of 1
        if instrument == "multiplier":
            costs = _costs(multiplier=(50, 0.0002))
            fields |= {"multiplier": 50, "stake": 100}
        if instrument == "cfd":
            costs = _costs(spread=0.2)
    config = ExecutionConfig(**fields)
    symbol = "R_50"
    epochs, quotes = _day(symbol, seed % 7, 3_000)
    pip = get_symbol(symbol).pip_size
    proba = random_proba(len(epochs), seed)
    batch = run_backtest(TickPath.build(symbol, epochs, quotes, pip, config, costs), proba, config)
    engine = IncrementalEngine(symbol, pip, config, costs)
    _bit_for_bit(batch.trades, _feed(engine, epochs, quotes, proba))
    assert len(engine.open_positions) == batch.unfinished


def test_one_rows_signal_is_the_batch_rule():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet([1, 1, 1], size=5_000)
    proba[::50] = np.nan
    proba[1::50] = [0.4, 0.2, 0.4]  # a tie goes to the first class, as numpy's argmax
    for confidence in (0.34, 0.4, 0.55):
        expected = signal_sides(proba, confidence)
        assert [signal_side(row, confidence) for row in proba] == expected.tolist()
    assert signal_side(None, 0.5) == 0


def test_an_epoch_that_does_not_increase_is_refused_naming_the_symbol():
    engine = IncrementalEngine("R_100", 0.01, ExecutionConfig())
    engine.on_tick(100, 1000.0)
    with pytest.raises(ValueError, match="R_100: epochs must increase strictly: 100 after 100"):
        engine.on_tick(100, 1000.5)
