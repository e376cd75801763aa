"""Backtester proofs: the compiled engine equals a naive per-tick loop, the metrics equal an independent
computation, and the gate promotes the planted signal and refuses martingales and the Crash trap."""

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from scalping_assets.backtest.engine import ExecutionConfig, TickPath, run_backtest, signal_sides
from scalping_assets.backtest.metrics import performance
from scalping_assets.backtest.promotion import (
    CHAMPION,
    PREVIOUS,
    GateCandidate,
    GateCriteria,
    gate_failures,
    promote,
    rollback,
)
from scalping_assets.backtest.reference import reference_backtest
from scalping_assets.backtest.report import backtest_predictions
from scalping_assets.backtest.runs import candidate_runs, load_predictions, log_backtest
from scalping_assets.backtest.trials import count_trials
from scalping_assets.features.dataset import DatasetSpec, build_dataset
from scalping_assets.market.simulator import simulator
from scalping_assets.market.symbols import get_symbol
from scalping_assets.models.config import profile_config
from scalping_assets.models.pipeline import train_candidate
from scalping_assets.models.tracking import Tracker
from scalping_assets_tests.backtest_helpers import random_proba, same_trades

DAY = date(2026, 1, 1)
FAST = {"epochs": 3, "max_train_windows": 4_000, "max_eval_windows": 2_000}
# Random signals exercise every rule: several slots, an hourly cap, latency, all costs.
BUSY = ExecutionConfig(
    min_confidence=0.6,
    take_profit=2,
    stop_loss=4,
    max_hold_ticks=30,
    max_positions=3,
    max_trades_per_hour=400,
    latency_ticks=2,
    spread_pips=1,
    slippage_pips=0.5,
    slippage_sigma=0.1,
    commission=0.05,
)
# One slot, pips barriers, a timeout in seconds, no latency (the legacy spread model: Deriv's products fill a tick later).
PLAIN = ExecutionConfig(
    instrument="spread", min_confidence=0.5, take_profit=150, stop_loss=120, unit="pips", max_hold_seconds=45, latency_ticks=0
)


def _path(symbol: str, config: ExecutionConfig, seed: int = 3, rows: int | None = None) -> TickPath:
    ticks = simulator(symbol, seed).day(DAY).iloc[:rows]
    return TickPath.build(symbol, ticks["epoch"].to_numpy(), ticks["quote"].to_numpy(), get_symbol(symbol).pip_size, config)


@pytest.fixture(scope="module")
def busy():
    path = _path("CRASH500", BUSY)
    return path, run_backtest(path, random_proba(len(path.k), 0), BUSY)


@pytest.mark.parametrize("symbol,config,rows,least", [("CRASH500", BUSY, None, 8_000), ("R_100", PLAIN, None, 2_000)])
def test_engine_equals_the_naive_loop_trade_for_trade(symbol, config, rows, least):
    path = _path(symbol, config, rows=rows)
    proba = random_proba(len(path.k), 0)
    result = run_backtest(path, proba, config)
    reference, unfinished = reference_backtest(path, signal_sides(proba, config.min_confidence), config)
    same_trades(result.trades, reference)
    assert unfinished == result.unfinished
    assert len(result.trades) >= least
    assert set(result.trades["reason"].astype(str)) == {"tp", "sl", "timeout"}
    entries, exits = result.trades["entry_tick"].to_numpy(), np.sort(result.trades["exit_tick"].to_numpy())
    still_open = np.arange(len(entries)) - np.searchsorted(exits, entries, side="right")
    assert still_open.max() < config.max_positions, "more positions than slots"
    if config.max_hold_seconds:
        assert (result.trades.loc[result.trades["reason"] == "timeout", "hold_seconds"] >= config.max_hold_seconds).all()


def test_metrics_agree_with_an_independent_computation(busy):
    path, result = busy
    trades = result.trades
    start, end = int(path.epochs[0]), int(path.epochs[-1]) + 1
    m = performance(trades, BUSY.capital, start, end)
    pnl = trades.sort_values(["exit_epoch", "entry_epoch"], kind="stable")["pnl_net"].tolist()
    wins = [p for p in pnl if p > 0]
    losses = [p for p in pnl if p <= 0]
    assert m["trades"] == len(pnl)
    assert m["win_rate"] == pytest.approx(len(wins) / len(pnl))
    assert m["profit_factor"] == pytest.approx(sum(wins) / -sum(losses))
    assert m["expectancy"] == pytest.approx(sum(pnl) / len(pnl))
    mean = sum(pnl) / len(pnl)
    assert m["sharpe_per_trade"] == pytest.approx(mean / math.sqrt(sum((p - mean) ** 2 for p in pnl) / (len(pnl) - 1)))
    equity, peak, worst, worst_pct, run, longest = BUSY.capital, BUSY.capital, 0.0, 0.0, 0, 0
    for p in pnl:
        equity += p
        peak = max(peak, equity)
        worst, worst_pct = max(worst, peak - equity), max(worst_pct, (peak - equity) / peak)
        run = run + 1 if p <= 0 else 0
        longest = max(longest, run)
    assert m["max_drawdown"] == pytest.approx(worst)
    assert m["max_drawdown_pct"] == pytest.approx(100 * worst_pct)
    assert m["max_consecutive_losses"] == longest
    assert m["trades_per_day"] == pytest.approx(len(pnl) / ((end - start) / 86_400))
    assert m["avg_hold_seconds"] == pytest.approx(float(np.mean(trades["exit_epoch"] - trades["entry_epoch"])))
    gross = float(trades["pnl_gross"].sum())
    assert m["total_costs"] == pytest.approx(gross - sum(pnl))
    assert m["slippage_impact_pct"] == pytest.approx(100 * trades["slippage_cost"].sum() / abs(gross))
    # Net P&L by hand from the quotes: half spread + slippage on each fill, and the commission.
    t = trades.iloc[123]
    sigma = path.sigma[t["entry_tick"]]
    cost = (BUSY.spread_pips / 2 + BUSY.slippage_pips + BUSY.slippage_sigma * sigma) * path.pip
    entry = path.quotes[t["entry_tick"]] + t["side"] * cost
    exit_ = path.quotes[t["exit_tick"]] - t["side"] * cost
    assert t["pnl_net"] == pytest.approx(BUSY.stake * t["side"] * (exit_ / entry - 1) - BUSY.commission)
    # Hourly returns of the equity: the annualised Sharpe ratio is their mean/std scaled to a year.
    assert math.isfinite(m["sharpe_annualised"])


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow")
    return Tracker(f"sqlite:///{folder}/mlflow.db", artifact_root=str(folder / "artifacts"))


def _trained_backtest(symbol: str, tracker: Tracker, folder, seed: int = 0):
    """Train XGBoost on two days, replay its logged test predictions through the backtester."""
    last = date(2026, 1, 3)
    spec = DatasetSpec(symbols=[symbol], start=date(2026, 1, 2), end=last, sequence_length=50)
    ticks = {symbol: simulator(symbol, 7).days(DAY, last)}
    dataset = build_dataset(spec, ticks)
    candidate = train_candidate(dataset, profile_config("demo", "xgboost", seed=seed, **FAST), tracker)
    predictions = load_predictions(tracker, candidate.run_id)
    trials = count_trials(tracker, candidate_runs(tracker))  # as `backtest_report` counts them
    report = backtest_predictions(
        candidate.name,
        ticks,
        predictions,
        ExecutionConfig(instrument="spread"),  # the legacy costs: stpRNG has no known Deriv cost figures
        dataset.meta.boundaries[1],
        spec.end_epoch,
        trials.effective,
        trials.sharpes,
    )
    logged = log_backtest(tracker, candidate.run_id, report, folder)
    return candidate, report, logged


def test_the_gate_promotes_the_planted_signal_and_rollback_restores_the_previous_champion(tracker, tmp_path):
    first, report, logged = _trained_backtest("SIG_AR1", tracker, tmp_path)
    summary = report.summary()
    assert report.stats["significant"] == 1.0, report.verdict
    assert report.verdict.startswith("The edge is significant")
    assert summary["win_rate"] > 0.65 and summary["p_value_vs_random"] < 0.05
    decision = promote(
        tracker,
        first.registered_name,
        [GateCandidate(name="first", version=first.version, per_symbol={"SIG_AR1": summary})],
        GateCriteria(),
    )
    assert decision.promoted and decision.champion == first.version, decision.failures
    assert tracker.alias_version(first.registered_name, CHAMPION) == first.version
    run = tracker.client.get_run(logged.run_id)  # the backtest's own run, a child of the training
    assert run.data.tags["mlflow.parentRunId"] == first.run_id
    assert run.data.metrics["backtest/win_rate"] == pytest.approx(summary["win_rate"])
    assert {a.path for a in tracker.client.list_artifacts(logged.run_id, "backtest")} >= {
        "backtest/report.html",
        "backtest/equity_drawdown.png",
        "backtest/trades.parquet",
    }
    assert (tmp_path / f"{first.name}.html").read_text().count("data:image/png;base64,") == 4

    second, report, _ = _trained_backtest("SIG_AR1", tracker, tmp_path, seed=1)
    # Two seeds of one model on one dataset: two distinct trials, fewer effective ones where they agree.
    assert 1 <= report.stats["trials"] <= 2
    decision = promote(
        tracker,
        second.registered_name,
        [GateCandidate(name="second", version=second.version, per_symbol={"SIG_AR1": report.summary()})],
        GateCriteria(),
    )
    assert decision.promoted and decision.previous == first.version
    assert rollback(tracker, first.registered_name) == (first.version, second.version)
    assert tracker.alias_version(first.registered_name, CHAMPION) == first.version
    assert tracker.alias_version(first.registered_name, PREVIOUS) == second.version


@pytest.mark.parametrize("symbol", ["R_100", "stpRNG"])
def test_the_gate_refuses_martingales_and_says_why(symbol, tracker, tmp_path):
    candidate, report, _ = _trained_backtest(symbol, tracker, tmp_path)
    assert report.stats["significant"] == 0.0, report.verdict
    decision = promote(
        tracker,
        candidate.registered_name,
        [GateCandidate(name=symbol, version=candidate.version, per_symbol={symbol: report.summary()})],
        GateCriteria(),
    )
    assert not decision.promoted and decision.champion is None
    assert decision.failures[symbol][symbol], "a refusal names its reasons"
    assert tracker.alias_version(candidate.registered_name, CHAMPION) is None
    version = tracker.client.get_model_version(candidate.registered_name, candidate.version)
    assert version.tags["gate"] == f"{symbol}: " + "; ".join(decision.failures[symbol][symbol])


def test_the_crash_trap_wins_often_loses_money_and_is_not_significant():
    symbol = "CRASH500"
    ticks = simulator(symbol, 7).days(DAY, date(2026, 1, 2))
    start, end = int(ticks["epoch"].iloc[len(ticks) // 2]), int(ticks["epoch"].iloc[-1]) + 1
    test = ticks[ticks["epoch"] >= start]
    # Always long: the index drifts up on every quiet tick; a tight take-profit is nearly always hit.
    predictions = pd.DataFrame({"symbol": symbol, "epoch": test["epoch"], "p_down": 0.0, "p_neutral": 0.0, "p_up": 1.0})
    config = ExecutionConfig(min_confidence=0.5, take_profit=0.5, stop_loss=20, max_hold_ticks=30, spread_pips=1)
    report = backtest_predictions("crash-trap", {symbol: ticks}, predictions, config, start, end, trials=5, draws=100)
    summary = report.summary()
    assert summary["win_rate"] > 0.9
    assert summary["expectancy"] < 0 and summary["total_pnl_net"] < 0
    assert summary["baseline_win_rate"] > 0.9, "a random trader with the same exits wins as often"
    # Buying on every tick is exactly what a random trader at the strategy's signal rate does: the
    # baseline reproduces the strategy (p = 1), where independent random entries gave p = 0.0099.
    assert summary["p_value_vs_random"] > 0.5
    assert summary["sharpe_span_short"] == 1.0 and "too short for an annualised figure" in report.verdict
    assert f"Annualised Sharpe {summary['sharpe_annualised']:.2f} (95 % CI" in report.html()
    assert report.stats["significant"] == 0.0 and report.verdict.startswith("The edge is not significant")
    assert "deflated Sharpe" in " ".join(gate_failures(summary, GateCriteria()))


def test_bad_inputs_are_refused_with_a_reason():
    with pytest.raises(ValidationError, match="min_confidence"):
        ExecutionConfig(min_confidence=1.5)
    with pytest.raises(ValidationError, match="max_positions"):
        ExecutionConfig(max_positions=0)
    path = _path("R_100", PLAIN, rows=1_000)
    with pytest.raises(ValueError, match="prediction rows"):
        run_backtest(path, np.zeros((10, 3)), PLAIN)
    ticks = simulator("R_100", 3).day(DAY).iloc[:1_000]
    stray = pd.DataFrame(
        {"symbol": ["R_100"], "epoch": [int(ticks["epoch"].iloc[5]) + 1], "p_down": 0.0, "p_neutral": 0.0, "p_up": 1.0}
    )
    with pytest.raises(ValueError, match="without a tick"):
        backtest_predictions("x", {"R_100": ticks}, stray, PLAIN, int(ticks["epoch"].iloc[0]), int(ticks["epoch"].iloc[-1]) + 1)
