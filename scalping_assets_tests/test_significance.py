"""The significance layer: the random trader follows the strategy's rules, its p-values are calibrated
on null data (and a baseline that breaks a rule is caught), a planted edge stays significant, and the
Sharpe ratios come with standard errors whose 95 % intervals cover."""

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, chisquare, kurtosis, skew
from statsmodels.stats.proportion import proportion_confint

from scalping_assets.backtest import significance as sig
from scalping_assets.backtest.engine import ExecutionConfig, TickPath, run_backtest, signal_sides
from scalping_assets.backtest.metrics import HOURS_PER_YEAR, equity_curve, hourly_returns, performance
from scalping_assets.backtest.report import backtest_predictions
from scalping_assets.backtest.significance import (
    MIN_SPAN_DAYS,
    annualised_sharpe_interval,
    p_value_vs_random,
    random_signal_expectancies,
    sharpe_standard_error,
    verdict,
    wilson_interval,
)
from scalping_assets.market.simulator import simulator
from scalping_assets.market.symbols import get_symbol

DAY = date(2026, 1, 1)
WARMUP = 200  # ticks before the pool: the RMS move of sigma barriers is defined after 100
# The Crash trap's exits: TP 0.5 RMS moves, SL 20, one slot. Long-only entries at random ticks.
TRAP = ExecutionConfig(min_confidence=0.5, take_profit=0.5, stop_loss=20, max_hold_ticks=30, spread_pips=1)
PLAIN = ExecutionConfig(min_confidence=0.5, take_profit=1, stop_loss=2, max_hold_ticks=10, spread_pips=1)
# Every rule the random trader must share: several slots, an hourly cap, latency, every cost.
BUSY = ExecutionConfig(
    take_profit=2,
    stop_loss=4,
    max_hold_ticks=30,
    max_positions=3,
    max_trades_per_hour=300,
    latency_ticks=2,
    slippage_pips=0.5,
    slippage_sigma=0.1,
    commission=0.05,
)


def _path(symbol: str, config: ExecutionConfig, rows: int, seed: int = 11) -> TickPath:
    ticks = simulator(symbol, seed).day(DAY).iloc[:rows]
    return TickPath.build(symbol, ticks["epoch"].to_numpy(), ticks["quote"].to_numpy(), get_symbol(symbol).pip_size, config)


def _random_signals(n: int, pool: np.ndarray, share: float, buy_share: float, rng: np.random.Generator) -> np.ndarray:
    """Class probabilities: NaN off the pool, NEUTRAL on it except a `share` of UP/DOWN signals."""
    proba = np.full((n, 3), np.nan)
    hot = pool[rng.random(len(pool)) < share]
    up = rng.random(len(hot)) < buy_share
    proba[pool] = (0.0, 1.0, 0.0)
    proba[hot[up]] = (0.0, 0.0, 1.0)
    proba[hot[~up]] = (1.0, 0.0, 0.0)
    return proba


def null_p_values(
    path: TickPath,
    config: ExecutionConfig,
    share: float,
    buy_share: float,
    seeds: int,
    draws: int,
    baseline_config: ExecutionConfig | None = None,
) -> np.ndarray:
    """p-values against the random trader of strategies whose signals are themselves random (the null)."""
    pool = np.arange(WARMUP, len(path.k))
    out = np.empty(seeds)
    for seed in range(seeds):
        proba = _random_signals(len(path.k), pool, share, buy_share, np.random.default_rng([seed, 1]))
        pnl = run_backtest(path, proba, config).trades["pnl_net"].to_numpy()
        sides = {path.symbol: signal_sides(proba, config.min_confidence)}
        baseline, _ = random_signal_expectancies(
            {path.symbol: path}, sides, {path.symbol: pool}, baseline_config or config, draws, seed
        )
        out[seed] = p_value_vs_random(float(pnl.mean()) if len(pnl) else math.nan, baseline)
    return out


def rejections(p_values: np.ndarray, alpha: float = 0.05) -> int:
    return int((p_values <= alpha + 1e-12).sum())


def test_each_draw_is_the_strategys_signals_rearranged_through_the_same_engine_call(monkeypatch):
    path = _path("CRASH500", BUSY, 20_000)
    pool = np.arange(WARMUP, len(path.k), 2)  # predictions on every other tick only
    proba = _random_signals(len(path.k), pool, 0.2, 0.7, np.random.default_rng(0))
    sides = signal_sides(proba, BUSY.min_confidence)
    seen = []

    def spy(p, q, config):
        drawn = signal_sides(q, config.min_confidence)
        seen.append((p is path, config is BUSY, (drawn > 0).sum(), (drawn < 0).sum(), set(np.flatnonzero(drawn))))
        return run_backtest(p, q, config)

    monkeypatch.setattr(sig, "run_backtest", spy)
    expectancy, win_rate = random_signal_expectancies({"CRASH500": path}, {"CRASH500": sides}, {"CRASH500": pool}, BUSY, 5, 3)
    assert len(seen) == 5 and np.isfinite(expectancy).all() and np.isfinite(win_rate).all()
    for same_path, same_config, buys, sells, where in seen:
        assert same_path and same_config, "the strategy's own tick path and execution config"
        assert (buys, sells) == ((sides > 0).sum(), (sides < 0).sum()), "the strategy's signal count and buy/sell mix"
        assert where <= set(pool.tolist()), "signals only where the strategy had a prediction"
    assert seen[0][4] != seen[1][4], "each draw scatters the signals anew"

    monkeypatch.undo()
    again, _ = random_signal_expectancies({"CRASH500": path}, {"CRASH500": sides}, {"CRASH500": pool}, BUSY, 7, 3)
    np.testing.assert_array_equal(again[:5], expectancy)  # seeded, and draw d does not depend on the count
    other, _ = random_signal_expectancies({"CRASH500": path}, {"CRASH500": sides}, {"CRASH500": pool}, BUSY, 5, 4)
    assert not np.array_equal(other, expectancy)
    none, _ = random_signal_expectancies({"CRASH500": path}, {"CRASH500": np.zeros_like(sides)}, {"CRASH500": pool}, BUSY, 3)
    assert np.isnan(none).all() and p_value_vs_random(math.nan, none) == 1.0


@pytest.mark.parametrize(
    "symbol,config,share,buy_share",
    [("R_100", PLAIN, 0.1, 0.5), ("CRASH500", TRAP, 0.3, 1.0)],
    ids=["martingale", "crash-trap-exits"],
)
def test_p_values_are_calibrated_on_null_data(symbol, config, share, buy_share):
    """Strategies with random signals get p-values uniform on {1/20, ..., 1} (19 draws each). Exact in
    theory (the strategy is then one more draw of its random trader), on a martingale and on CRASH500
    alike; the old baseline of independent entries rejected 21.5 % of the CRASH500 nulls (n = 400)."""
    seeds, draws = 200, 19
    p = null_p_values(_path(symbol, config, 20_000), config, share, buy_share, seeds, draws)
    k = rejections(p)
    assert binomtest(k, seeds, 0.05).pvalue > 0.001, f"{k}/{seeds} rejected at 0.05"
    counts = np.bincount(np.rint(p * (draws + 1)).astype(int) - 1, minlength=draws + 1)
    assert chisquare(counts).pvalue > 0.001, counts


def test_the_calibration_check_catches_a_baseline_that_ignores_the_slot_limit():
    """The same null as above, but the random trader may hold 50 positions where the strategy holds
    one: its entries no longer wait for exits, and the check sees it. (This is what the old baseline of
    independent positions did.)"""
    seeds, draws = 100, 19
    p = null_p_values(
        _path("CRASH500", TRAP, 20_000), TRAP, 0.3, 1.0, seeds, draws, TRAP.model_copy(update={"max_positions": 50})
    )
    k = rejections(p)
    assert binomtest(k, seeds, 0.05, alternative="greater").pvalue < 1e-6, f"only {k}/{seeds} rejected"


def test_a_planted_edge_is_significant_against_the_random_trader():
    """Trade SIG_AR1's planted AR(1) the Bayes way (follow a large last return), latency 1, the default
    exits: the random trader with the same signals scattered never does as well."""
    symbol = "SIG_AR1"
    ticks = simulator(symbol, 5).day(DAY).iloc[:20_000]
    start, end = int(ticks["epoch"].iloc[2_000]), int(ticks["epoch"].iloc[-1]) + 1
    test = ticks[ticks["epoch"] >= start]
    r = np.log(test["quote"].to_numpy() / ticks["quote"].shift(1)[ticks["epoch"] >= start].to_numpy())
    cut = np.quantile(np.abs(r), 0.8)
    up, down = r > cut, r < -cut
    predictions = pd.DataFrame(
        {"symbol": symbol, "epoch": test["epoch"], "p_down": down * 1.0, "p_neutral": ~(up | down) * 1.0, "p_up": up * 1.0}
    )
    report = backtest_predictions("planted", {symbol: ticks}, predictions, ExecutionConfig(), start, end, draws=99)
    assert report.stats["p_value_vs_random"] == pytest.approx(0.01), report.verdict
    assert report.stats["significant"] == 1.0 and report.verdict.startswith("The edge is significant")
    assert report.stats["baseline_expectancy_mean"] < 0 < report.stats["expectancy_ci_low"]


def test_the_annualised_sharpe_comes_with_its_standard_error_span_and_warning():
    path = _path("R_100", PLAIN, 20_000)
    proba = _random_signals(len(path.k), np.arange(WARMUP, len(path.k)), 0.1, 0.5, np.random.default_rng(0))
    trades = run_backtest(path, proba, PLAIN).trades
    start, end = int(path.epochs[0]), int(path.epochs[-1]) + 1
    hourly = hourly_returns(equity_curve(trades, PLAIN.capital), PLAIN.capital, start, end)
    days = (end - start) / 86_400
    stats = annualised_sharpe_interval(hourly, HOURS_PER_YEAR, days, len(trades))
    sharpe = stats["sharpe_annualised"]
    assert sharpe == performance(trades, PLAIN.capital, start, end)["sharpe_annualised"]
    # Mertens (2002) by hand: Var(SR) = (1 - skew SR + (kurt - 1) / 4 SR^2) / (n - 1), per hour.
    hourly_sr = hourly.mean() / hourly.std(ddof=1)
    g3, g4 = skew(hourly), kurtosis(hourly, fisher=False)
    se = math.sqrt((1 - g3 * hourly_sr + (g4 - 1) / 4 * hourly_sr**2) / (len(hourly) - 1)) * math.sqrt(HOURS_PER_YEAR)
    assert stats["sharpe_annualised_se"] == pytest.approx(se)
    assert stats["sharpe_annualised_ci_low"] == pytest.approx(sharpe - 1.959964 * se)
    assert stats["sharpe_annualised_ci_high"] == pytest.approx(sharpe + 1.959964 * se)
    assert stats["sharpe_annualised_lower"] == stats["sharpe_annualised_ci_low"]
    assert stats["span_days"] == pytest.approx(days) and stats["sharpe_span_short"] == 1.0
    long_enough = annualised_sharpe_interval(hourly, HOURS_PER_YEAR, MIN_SPAN_DAYS, 30)
    assert long_enough["sharpe_span_short"] == 0.0
    assert annualised_sharpe_interval(hourly, HOURS_PER_YEAR, 365, 29)["sharpe_span_short"] == 1.0, "too few trades"
    flat = annualised_sharpe_interval(np.zeros(24), HOURS_PER_YEAR, 1, 0)
    assert math.isnan(flat["sharpe_annualised"]) and math.isnan(flat["sharpe_annualised_lower"])

    head = {"expectancy": 0.1, "expectancy_ci_low": 0.0, "expectancy_ci_high": 0.2, "baseline_expectancy_mean": 0.0}
    head |= {"p_value_vs_random": 0.5, "deflated_sharpe": 0.5, "trials": 1, "significant": 0.0}
    short = verdict(head | stats)
    assert f"Annualised Sharpe {sharpe:.2f} (95 % CI {stats['sharpe_annualised_ci_low']:.2f} to " in short
    assert f"over {days:.3g} day(s)" in short and "too short for an annualised figure" in short
    assert "too short" not in verdict(head | long_enough)


@pytest.mark.parametrize("draw", ["normal", "skewed"])
def test_the_sharpe_intervals_cover_the_true_sharpe_ratio(draw):
    """95 % intervals from 720 hourly returns (30 days) cover the true Sharpe ratio about 95 % of the
    time, for normal returns and for skewed, heavy-tailed ones (where Lo's IID variance alone is off)."""
    rng = np.random.default_rng(5)
    reps, n = 2_000, 720
    if draw == "normal":
        true_sr = 0.1
        samples = rng.normal(true_sr, 1.0, (reps, n))
    else:  # lognormal(0, 0.8) minus a constant: skewness ~ 3, kurtosis ~ 20
        mean, std = math.exp(0.32), math.sqrt((math.exp(0.64) - 1) * math.exp(0.64))
        samples = rng.lognormal(0.0, 0.8, (reps, n)) - mean + 0.1 * std
        true_sr = 0.1
    covered = 0
    for returns in samples:
        s = annualised_sharpe_interval(returns, HOURS_PER_YEAR, 30, 100)
        scale = math.sqrt(HOURS_PER_YEAR)
        covered += s["sharpe_annualised_ci_low"] <= true_sr * scale <= s["sharpe_annualised_ci_high"]
    assert abs(covered / reps - 0.95) < 0.015, covered / reps


def test_per_trade_numbers_carry_their_uncertainty():
    pnl = np.random.default_rng(1).normal(0.05, 1.0, 400)
    stats = sig.significance(pnl, np.zeros(19), trials=1, trial_sharpes=[])
    sharpe = pnl.mean() / pnl.std(ddof=1)
    assert stats["sharpe_per_trade_se"] == pytest.approx(
        sharpe_standard_error(sharpe, 400, skew(pnl), kurtosis(pnl, fisher=False))
    )
    assert stats["sharpe_per_trade_se"] == pytest.approx(math.sqrt((1 + sharpe**2 / 2) / 399), rel=0.05)  # Lo, IID normal
    wins = int((pnl > 0).sum())
    low, high = proportion_confint(wins, 400, method="wilson")
    assert (stats["win_rate_ci_low"], stats["win_rate_ci_high"]) == pytest.approx((low, high))
    assert wilson_interval(0, 10)[0] == 0.0 and math.isnan(wilson_interval(0, 0)[0])
