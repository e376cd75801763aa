"""Deriv's products as cost models: the catalog's figures and their sources, the engine equal to the
naive loop on every instrument, one hand-computed trade per instrument, the venue's trade caps, and a
clear error for a figure nobody has published."""

import asyncio
from datetime import date

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from scalping_assets.backtest.engine import ExecutionConfig, TickPath, exits_of, run_backtest, signal_sides
from scalping_assets.backtest.instruments import UnknownCostError, instrument_terms, trade_caps
from scalping_assets.backtest.reference import reference_backtest
from scalping_assets.backtest.report import backtest_predictions
from scalping_assets.market.deriv_client import DerivClient
from scalping_assets.market.simulator import simulator
from scalping_assets.market.symbols import (
    CallLimits,
    CfdCosts,
    Figure,
    MultiplierCosts,
    RiseFallCosts,
    SymbolCosts,
    _raw,
    catalog,
    get_symbol,
    venue,
)
from scalping_assets.testing.fake_deriv import FakeDerivServer, ServerThread
from scalping_assets_tests.backtest_helpers import random_proba, same_trades

DAY = date(2026, 1, 1)


def _costs(multiplier: tuple[int, float] | None = None, payout: float | None = None, spread: float | None = None) -> SymbolCosts:
    """Test figures, standing in for figures read live (the catalog's are unknown for most products)."""

    def figure(value):
        return Figure(value=value, source="test figure")

    return SymbolCosts(
        multiplier=MultiplierCosts(commission=None if multiplier is None else {multiplier[0]: figure(multiplier[1])}),
        rise_fall=RiseFallCosts(payout_ratio=figure(payout)),
        cfd=CfdCosts(spread=figure(spread)),
    )


# --- the catalog -------------------------------------------------------------------------------------------------

# Deriv's back-end tests pin these (symbol: (multiplier, commission rate)); every other figure is unknown.
PINNED = {
    "R_10": (100, 0.00005),
    "R_25": (50, 0.000126),
    "R_50": (20, 0.000252),
    "R_75": (15, 0.000378),
    "R_100": (10, 0.000504),
    "1HZ10V": (100, 0.00005),
    "1HZ100V": (10, 0.000504),
}


def test_the_catalog_holds_the_known_rates_with_their_source_and_nothing_else():
    raw = _raw()["symbols"]
    assert all("costs" in fields for fields in raw.values()), "every symbol says what it costs, unknown included"
    for name, spec in catalog().items():
        costs = spec.costs
        rates = {m: f.value for m, f in (costs.multiplier.commission or {}).items()}
        if name == "SIG_AR1":  # simulated, not Deriv's: frictionless by decision, and says so
            assert not spec.deriv and rates == {1: 0.0}
            assert costs.rise_fall.payout_ratio.value == 2.0 and costs.cfd.spread.value == 0.0
            assert "simulated" in costs.cfd.spread.source
            continue
        assert rates == ({PINNED[name][0]: PINNED[name][1]} if name in PINNED else {}), name
        assert costs.rise_fall.payout_ratio.value is None and costs.cfd.spread.value is None, name
        for figure in [*(costs.multiplier.commission or {}).values(), costs.rise_fall.payout_ratio, costs.cfd.spread]:
            assert figure.source.strip(), name
    assert "deriv-costs.md" in get_symbol("R_100").costs.multiplier.commission[10].source


def test_the_venue_caps_come_from_deriv_call_limits_and_can_be_overridden():
    # 220 general calls a minute, 14,400 an hour; a multiplier spends two (buy, sell), a Rise/Fall one.
    assert trade_caps(ExecutionConfig()) == (110, 7_200)
    assert trade_caps(ExecutionConfig(instrument="rise_fall")) == (220, 14_400)
    assert trade_caps(ExecutionConfig(instrument="cfd")) == (0, 0), "MT5, not the API"
    assert trade_caps(ExecutionConfig(instrument="spread")) == (0, 0), "the legacy model had no venue"
    assert trade_caps(ExecutionConfig(max_trades_per_minute=3, max_trades_per_hour=50)) == (3, 50)


# --- the execution config ----------------------------------------------------------------------------------------


def test_a_deriv_multiplier_is_the_default_and_legacy_configs_keep_their_meaning():
    default = ExecutionConfig()
    assert default.instrument == "multiplier" and default.multiplier is None and default.latency_ticks == 1
    terms = instrument_terms("R_100", default)
    assert (terms.multiplier, terms.commission_rate, terms.commission) == (10, 0.000504, pytest.approx(0.000504 * 1_000 * 10))
    assert terms.spread_pips == 0 and terms.stop_out_loss == default.stake
    # Deriv's floor (0.02, an older revision's): R_10 x100 on a stake of 1 would charge 0.005.
    assert instrument_terms("R_10", ExecutionConfig(stake=1)).commission == 0.02
    # A config that prices a spread, slippage or a flat commission and names no instrument is the legacy model.
    assert ExecutionConfig(spread_pips=1).instrument == "spread"
    assert ExecutionConfig(commission=0.05).instrument == "spread"
    assert instrument_terms("CRASH1000", ExecutionConfig(instrument="spread")).spread_pips == 1.0


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"commission": 1.0, "instrument": "multiplier"}, "commission: not part of the multiplier"),
        ({"spread_pips": 2.0, "instrument": "multiplier"}, "spread_pips: not part of the multiplier"),
        ({"slippage_pips": 0.5, "instrument": "rise_fall"}, "slippage_pips: not part of the rise_fall"),
        ({"latency_ticks": 0}, "entry spot is the tick after the purchase"),
        ({"unit": "money", "instrument": "cfd"}, "unit money: not part of the cfd"),
        ({"multiplier": 10, "instrument": "rise_fall"}, "multiplier"),
        ({"take_profit": 3.0, "instrument": "rise_fall"}, "take_profit: not part of the rise_fall"),
        ({"max_hold_seconds": 30, "instrument": "rise_fall"}, "max_hold_seconds"),
        ({"instrument": "futures"}, "instrument"),
    ],
)
def test_a_config_the_instrument_cannot_carry_is_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        ExecutionConfig(**fields)


# --- unknown figures ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "symbol,config,field",
    [
        ("CRASH1000", ExecutionConfig(), "costs.multiplier.commission"),
        ("stpRNG", ExecutionConfig(multiplier=100), "costs.multiplier.commission"),
        ("R_100", ExecutionConfig(multiplier=20), r"costs.multiplier.commission at x20 .*known at x10"),
        ("R_100", ExecutionConfig(instrument="rise_fall"), "costs.rise_fall.payout_ratio"),
        ("CRASH1000", ExecutionConfig(instrument="cfd"), "costs.cfd.spread"),
    ],
)
def test_a_backtest_needing_an_unknown_figure_fails_naming_the_symbol_and_the_field(symbol, config, field):
    ticks = simulator(symbol, 1).day(DAY).iloc[:500]
    with pytest.raises(UnknownCostError, match=rf"^{symbol}: {field}"):
        TickPath.build(symbol, ticks["epoch"].to_numpy(), ticks["quote"].to_numpy(), get_symbol(symbol).pip_size, config)
    predictions = pd.DataFrame({"symbol": symbol, "epoch": ticks["epoch"], "p_down": 0.0, "p_neutral": 0.0, "p_up": 1.0})
    with pytest.raises(UnknownCostError, match=symbol):  # the report refuses before any backtest runs
        backtest_predictions("x", {symbol: ticks}, predictions, config, int(ticks["epoch"].iloc[0]), int(ticks["epoch"].iloc[-1]))


def test_a_figure_read_live_can_stand_in_for_an_unknown_one():
    ticks = simulator("CRASH1000", 1).day(DAY).iloc[:500]
    path = TickPath.build(
        "CRASH1000",
        ticks["epoch"].to_numpy(),
        ticks["quote"].to_numpy(),
        0.001,
        ExecutionConfig(),
        _costs(multiplier=(100, 0.0002)),
    )
    assert path.terms(ExecutionConfig()).commission == pytest.approx(0.0002 * 1_000 * 100)


# --- engine == naive loop, every instrument ----------------------------------------------------------------------

# Each case: (symbol, config, figures standing in for the catalog's or None, reasons the case must show).
CASES = {
    # The default on the catalog's pinned rates; several slots so that the minute's and the hour's caps bind.
    "multiplier": (
        "R_100",
        ExecutionConfig(min_confidence=0.6, max_positions=4, max_trades_per_minute=5, max_trades_per_hour=150),
        None,
        {"tp", "sl", "timeout"},
    ),
    "multiplier_1s": ("1HZ100V", ExecutionConfig(min_confidence=0.5, max_hold_ticks=20), None, {"tp", "sl", "timeout"}),
    # Deriv's limit orders as money amounts (the stop-loss must exceed the commission of 5.04).
    "multiplier_money": (
        "R_50",
        ExecutionConfig(unit="money", take_profit=2.3, stop_loss=8.1, max_hold_ticks=40, max_positions=2),
        None,
        {"tp", "sl", "timeout"},
    ),
    # A large multiplier and far barriers: the venue's stop-out closes most trades.
    "multiplier_stop_out": (
        "R_100",
        ExecutionConfig(multiplier=2_000, take_profit=2, stop_loss=60, max_hold_ticks=3, max_positions=3),
        _costs(multiplier=(2_000, 0.0001)),
        {"tp", "stop_out", "timeout"},
    ),
    # Crashes gap through both the stop-loss and the stop-out: the loss stops at the stake.
    "multiplier_crash": (
        "CRASH500",
        ExecutionConfig(multiplier=3_000, take_profit=3, stop_loss=6, max_hold_ticks=60, stake=50),
        _costs(multiplier=(3_000, 0.00002)),
        {"tp", "sl", "timeout"},
    ),
    "rise_fall": ("SIG_AR1", ExecutionConfig(instrument="rise_fall", max_hold_ticks=5, stake=10), None, {"timeout"}),
    "rise_fall_capped": (
        "R_10",
        ExecutionConfig(instrument="rise_fall", max_hold_ticks=7, max_positions=5, max_trades_per_minute=9, stake=10),
        _costs(payout=1.9),
        {"timeout"},
    ),
    "cfd": (
        "R_100",
        ExecutionConfig(instrument="cfd", take_profit=2, stop_loss=3, slippage_pips=0.5, slippage_sigma=0.1),
        _costs(spread=0.25),
        {"tp", "sl", "timeout"},
    ),
    "cfd_catalog": ("SIG_AR1", ExecutionConfig(instrument="cfd", max_positions=2), None, {"tp", "sl", "timeout"}),
    "spread": (
        "JD25",
        ExecutionConfig(spread_pips=2, commission=0.1, max_positions=3, max_trades_per_minute=4, latency_ticks=2),
        None,
        {"tp", "sl", "timeout"},
    ),
}


def _most_in_window(epochs: np.ndarray, seconds: int) -> int:
    epochs = np.sort(epochs)
    return int((np.arange(len(epochs)) - np.searchsorted(epochs, epochs - seconds, side="right") + 1).max())


@pytest.mark.parametrize("seed", [3, 8])
@pytest.mark.parametrize("case", sorted(CASES))
def test_engine_equals_the_naive_loop_on_every_instrument(case, seed):
    symbol, config, costs, reasons = CASES[case]
    ticks = simulator(symbol, seed).day(DAY).iloc[:25_000]
    path = TickPath.build(
        symbol, ticks["epoch"].to_numpy(), ticks["quote"].to_numpy(), get_symbol(symbol).pip_size, config, costs
    )
    proba = random_proba(len(path.k), seed)
    result = run_backtest(path, proba, config)
    reference, unfinished = reference_backtest(path, signal_sides(proba, config.min_confidence), config)
    trades = result.trades
    same_trades(trades, reference)
    assert unfinished == result.unfinished
    assert len(trades) >= 200
    assert reasons <= set(trades["reason"].astype(str)), set(trades["reason"].astype(str))
    terms = path.terms(config)
    for cap, seconds in ((terms.max_per_minute, 60), (terms.max_per_hour, 3_600)):
        if cap:
            assert _most_in_window(trades["entry_epoch"].to_numpy(), seconds) <= cap
    if config.max_trades_per_minute:
        assert _most_in_window(trades["entry_epoch"].to_numpy(), 60) == config.max_trades_per_minute, "the cap binds"
    costs_taken = trades["spread_cost"] + trades["slippage_cost"] + trades["commission"] - trades["loss_beyond_stake"]
    np.testing.assert_allclose(trades["pnl_gross"] - costs_taken, trades["pnl_net"], atol=1e-9)
    if config.instrument == "multiplier":
        assert (trades["pnl_net"] >= -config.stake - 1e-9).all(), "a multiplier never loses more than its stake"
    if case == "multiplier_crash":
        assert (trades["loss_beyond_stake"] > 0).any() and (trades.loc[trades["loss_beyond_stake"] > 0, "side"] == 1).all()
    if config.instrument == "rise_fall":
        assert (trades["hold_ticks"] == config.max_hold_ticks).all()
        assert set(np.round(trades["pnl_net"], 9)) <= {round((terms.payout_ratio - 1) * config.stake, 9), -config.stake}


def test_sig_ar1_default_costs_are_frictionless():
    """The planted symbol under the default (a multiplier at x1 without commission) trades exactly as a
    costless notional of the stake: its backtests measure the signal."""
    ticks = simulator("SIG_AR1", 2).day(DAY).iloc[:20_000]
    legacy = ExecutionConfig(instrument="spread", spread_pips=0)
    proba = random_proba(len(ticks), 1)
    runs = []
    for config in (ExecutionConfig(), legacy):
        path = TickPath.build("SIG_AR1", ticks["epoch"].to_numpy(), ticks["quote"].to_numpy(), 0.001, config)
        runs.append(run_backtest(path, proba, config).trades)
    pd.testing.assert_series_equal(runs[0]["exit_tick"], runs[1]["exit_tick"])
    np.testing.assert_allclose(runs[0]["pnl_net"], runs[1]["pnl_net"], atol=1e-9)
    assert (runs[0]["commission"] == 0).all()


def test_exits_of_keeps_its_signature_and_takes_a_stop_out():
    ticks = simulator("R_100", 3).day(DAY).iloc[:3_000]
    config = ExecutionConfig(multiplier=2_000, take_profit=40, stop_loss=60, max_hold_ticks=50)
    path = TickPath.build(
        "R_100", ticks["epoch"].to_numpy(), ticks["quote"].to_numpy(), 0.01, config, _costs(multiplier=(2_000, 0.0001))
    )
    fills = np.arange(200, 2_500, 50)
    sides = np.where(fills % 100 == 0, 1, -1).astype(np.int8)
    plain, why = exits_of(path.k, path.epochs, fills, sides, path.tp, path.sl, 50, np.inf)
    assert set(why) <= {0, 1, 2}
    stopped, why_stopped = exits_of(
        path.k, path.epochs, fills, sides, path.tp, path.sl, 50, np.inf, path.terms(config).stop_out_move
    )
    assert 3 in set(why_stopped) and (stopped <= plain).all()


# --- one trade by hand per instrument ----------------------------------------------------------------------------


def _one_trade(symbol: str, quotes: list[float], config: ExecutionConfig, side: int = 1, costs: SymbolCosts | None = None):
    """A hand-made path, one signal at tick 0 (filled at tick 1), run through the engine and the naive loop."""
    epochs = np.arange(len(quotes)) + 1_767_225_600
    path = TickPath.build(symbol, epochs, np.array(quotes), get_symbol(symbol).pip_size, config, costs)
    proba = np.full((len(quotes), 3), np.nan)
    proba[0] = (0.0, 0.0, 1.0) if side > 0 else (1.0, 0.0, 0.0)
    trades = run_backtest(path, proba, config).trades
    reference, _ = reference_backtest(path, signal_sides(proba, config.min_confidence), config)
    same_trades(trades, reference)
    assert len(trades) == 1
    return trades.iloc[0]


def test_a_multiplier_take_profit_by_hand():
    # R_100 x10 (rate 0.000504), stake 100: commission 0.504. Long at 1000.00; +55 pips reaches the 50-pip take-profit.
    config = ExecutionConfig(unit="pips", take_profit=50, stop_loss=100, stake=100)
    t = _one_trade("R_100", [1000.00, 1000.00, 1000.20, 1000.55, 1000.60], config)
    assert (t["entry_tick"], t["exit_tick"], t["reason"]) == (1, 3, "tp")
    assert t["commission"] == pytest.approx(0.504)
    assert t["pnl_gross"] == pytest.approx(100 * 10 * 0.55 / 1000)  # 0.55
    assert t["pnl_net"] == pytest.approx(0.55 - 0.504)  # 0.046
    # The limit orders that close there: the take-profit barrier sits just inside the commission.
    assert t["take_profit_amount"] == pytest.approx(1000 * 0.50 / 1000 - 0.504)  # -0.004
    assert t["stop_loss_amount"] == pytest.approx(1000 * 1.00 / 1000 + 0.504)  # 1.504


def test_a_multiplier_money_take_profit_by_hand():
    # Take-profit 0.30 of profit: 1000 x 0.80 / 1000 - 0.504 = 0.296 is short of it, +0.81 gives 0.306.
    config = ExecutionConfig(unit="money", take_profit=0.3, stop_loss=0.9, stake=100)
    t = _one_trade("R_100", [1000.00, 1000.00, 1000.80, 1000.81, 1000.00], config)
    assert (t["exit_tick"], t["reason"]) == (3, "tp")
    assert t["pnl_net"] == pytest.approx(0.81 - 0.504)
    assert (t["take_profit_amount"], t["stop_loss_amount"]) == (pytest.approx(0.3), pytest.approx(0.9))


def test_a_multiplier_stop_out_by_hand():
    # Far barriers; a 12 % gap down: the loss would be 1000 x 0.12 + 0.504 = 120.504, the stake caps it at 100.
    config = ExecutionConfig(unit="pips", take_profit=50_000, stop_loss=30_000, stake=100)
    t = _one_trade("R_100", [1000.00, 1000.00, 999.50, 880.00, 900.00], config)
    assert (t["exit_tick"], t["reason"]) == (3, "stop_out")
    assert t["pnl_gross"] == pytest.approx(-120.0)
    assert t["pnl_net"] == pytest.approx(-100.0)
    assert t["loss_beyond_stake"] == pytest.approx(20.504)


def test_a_rise_fall_contract_by_hand():
    # Stake 10, payout 1.95 x stake, 3 ticks: Rise from 1000.00 (tick 1) to 1000.01 (tick 4) wins 9.50.
    config = ExecutionConfig(instrument="rise_fall", max_hold_ticks=3, stake=10)
    win = _one_trade("R_100", [1000.00, 1000.00, 999.90, 1000.30, 1000.01, 1000.50], config, costs=_costs(payout=1.95))
    assert (win["entry_tick"], win["exit_tick"], win["reason"]) == (1, 4, "timeout")
    assert (win["pnl_gross"], win["pnl_net"], win["commission"]) == (10.0, pytest.approx(9.5), pytest.approx(0.5))
    # Fall on an unchanged quote: an equal quote loses the stake (the house keeps it).
    tie = _one_trade("R_100", [1000.00, 1000.00, 999.90, 999.80, 1000.00], config, side=-1, costs=_costs(payout=1.95))
    assert (tie["pnl_gross"], tie["pnl_net"], tie["commission"]) == (0.0, -10.0, 10.0)


def test_a_cfd_trade_by_hand():
    # Spread 0.60 (60 pips of R_100), notional 1000, short: sells at 1000.00 - 0.30, buys back at 999.00 + 0.30.
    config = ExecutionConfig(instrument="cfd", unit="pips", take_profit=100, stop_loss=100)
    t = _one_trade("R_100", [1000.00, 1000.00, 999.50, 999.00, 999.00], config, side=-1, costs=_costs(spread=0.6))
    assert (t["exit_tick"], t["reason"]) == (3, "tp")
    assert (t["entry_price"], t["exit_price"]) == (pytest.approx(999.70), pytest.approx(999.30))
    assert t["pnl_gross"] == pytest.approx(1.0)
    assert t["pnl_net"] == pytest.approx(1000 * 0.40 / 999.70)
    assert t["commission"] == 0
    # A spread configured for the run (Deriv's MT5 table of the day) replaces the catalog's.
    override = ExecutionConfig(instrument="cfd", unit="pips", take_profit=100, stop_loss=100, spread_pips=20)
    t = _one_trade("R_100", [1000.00, 1000.00, 999.50, 999.00, 999.00], override, side=-1, costs=_costs(spread=0.6))
    assert t["pnl_net"] == pytest.approx(1000 * 0.80 / 999.90)


def test_a_legacy_spread_trade_by_hand():
    # Spread 2 pips, commission 0.05, notional 1000: buys at 1000.01, sells at 1000.49.
    config = ExecutionConfig(spread_pips=2, commission=0.05, unit="pips", take_profit=50, stop_loss=50)
    t = _one_trade("R_100", [1000.00, 1000.00, 1000.50, 1000.00], config)
    assert (t["entry_price"], t["exit_price"]) == (pytest.approx(1000.01), pytest.approx(1000.49))
    assert t["pnl_net"] == pytest.approx(1000 * (1000.49 / 1000.01 - 1) - 0.05)


def test_the_venue_s_call_limits_read_live_set_the_trade_caps():
    fake = FakeDerivServer(seed=1, rate_limit_per_minute=100, strict=True)
    with ServerThread(fake) as thread:

        async def read() -> CallLimits:
            async with DerivClient(thread.url) as client:
                return await client.api_call_limits()

        limits = asyncio.run(read())
    assert not fake.schema_violations
    assert (limits.minutely, limits.hourly) == (100, 6_000) and thread.url in limits.source
    offline = venue().api_call_limits
    assert (offline.minutely, offline.hourly) == (220, 14_400)
    # A multiplier spends two calls a trade (buy, then sell at the timeout), a tick contract one.
    assert trade_caps(ExecutionConfig(instrument="multiplier"), limits) == (50, 3_000)
    assert trade_caps(ExecutionConfig(instrument="rise_fall"), limits) == (100, 6_000)
    assert trade_caps(ExecutionConfig(instrument="multiplier")) == (110, 7_200)
    assert trade_caps(ExecutionConfig(instrument="cfd"), limits) == (0, 0)  # MT5: not an API call
    assert trade_caps(ExecutionConfig(instrument="multiplier", max_trades_per_minute=7), limits) == (7, 3_000)
    with pytest.raises(ValueError, match="max_requestes_general unreadable in here"):
        CallLimits.from_website_status({"api_call_limits": {}}, "here")
