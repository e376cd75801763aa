"""Is the edge luck? Random entries with the same exits, a bootstrap interval, and deflated Sharpe.

- Random-entry baseline: each draw places as many trades per symbol as the strategy made, at fill
  ticks drawn uniformly from the span the strategy could trade, with the strategy's sides shuffled
  and the same exit rules and costs on the same tick path. The p-value is the share of draws whose
  expectancy reaches the strategy's (with the usual +1 correction).
- Bootstrap: a 95 % percentile interval of the expectancy (scipy's bootstrap of the trades' net P&L).
- Probabilistic Sharpe ratio (Bailey & López de Prado 2012): probability that the true per-trade
  Sharpe ratio exceeds a benchmark, given the sample's length, skewness and kurtosis. The deflated
  Sharpe ratio (2014) sets the benchmark to the Sharpe ratio expected from the best of N unskilled
  trials, N being the count of candidate runs in the MLflow experiment; the variance of Sharpe
  ratios across trials comes from the trials' own logged values when there are at least two, else
  from this estimate's sampling variance.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import bootstrap, kurtosis, norm, skew

from .engine import ExecutionConfig, TickPath, exits_of, trade_frame

EULER_GAMMA = 0.5772156649015329


def random_entry_expectancies(
    paths: dict[str, TickPath],
    trades: pd.DataFrame,
    eligible: dict[str, np.ndarray],
    config: ExecutionConfig,
    draws: int = 200,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(expectancy, win rate) of each random-entry draw; `eligible` holds each symbol's fill ticks to draw from."""
    if trades.empty:
        return np.zeros(0), np.zeros(0)
    rng = np.random.default_rng(seed)
    expectancy, win_rate = np.empty(draws), np.empty(draws)
    per_symbol = {s: group["side"].to_numpy() for s, group in trades.groupby("symbol", observed=True)}
    for d in range(draws):
        pnl = []
        for symbol, sides in per_symbol.items():
            path, pool = paths[symbol], eligible[symbol]
            fills = np.sort(rng.choice(pool, size=min(len(sides), len(pool)), replace=False))
            shuffled = rng.permutation(sides)[: len(fills)]
            hold_ticks, hold_seconds = path.hold_limits(config)
            exit_, reason = exits_of(path.k, path.epochs, fills, shuffled, path.tp, path.sl, hold_ticks, hold_seconds)
            done = exit_ >= 0
            frame = trade_frame(path, config, fills[done], fills[done], exit_[done], reason[done], shuffled[done])
            pnl.append(frame["pnl_net"].to_numpy())
        values = np.concatenate(pnl)
        expectancy[d], win_rate[d] = values.mean(), (values > 0).mean()
    return expectancy, win_rate


def eligible_fills(path: TickPath, first: int, last: int, config: ExecutionConfig) -> np.ndarray:
    """Ticks in [first, last) where a fill has defined barriers and room for its timeout."""
    ticks = np.arange(first, last)
    ticks = ticks[np.isfinite(path.tp[ticks]) & np.isfinite(path.sl[ticks])]
    if config.max_hold_seconds is None:
        return ticks[ticks + config.max_hold_ticks < len(path.k)]
    return ticks[path.epochs[ticks] + config.max_hold_seconds <= path.epochs[-1]]


def _sharpe_spread(sharpe: float, skewness: float, kurt: float) -> float:
    """(n - 1) times the variance of the Sharpe-ratio estimate; `kurt` is the plain (not excess) kurtosis."""
    return 1 - skewness * sharpe + (kurt - 1) / 4 * sharpe**2


def probabilistic_sharpe(sharpe: float, n: int, skewness: float, kurt: float, benchmark: float = 0.0) -> float:
    """P(true per-trade Sharpe > benchmark); `kurt` is the plain (not excess) kurtosis."""
    if n < 2 or not math.isfinite(sharpe):
        return math.nan
    spread = _sharpe_spread(sharpe, skewness, kurt)
    return float(norm.cdf((sharpe - benchmark) * math.sqrt(n - 1) / math.sqrt(max(spread, 1e-12))))


def expected_max_sharpe(trials: int, variance: float) -> float:
    """Sharpe ratio expected of the best of `trials` unskilled strategies."""
    if trials <= 1:
        return 0.0
    return math.sqrt(variance) * (
        (1 - EULER_GAMMA) * norm.ppf(1 - 1 / trials) + EULER_GAMMA * norm.ppf(1 - 1 / (trials * math.e))
    )


def significance(
    pnl: np.ndarray,
    baseline_expectancy: np.ndarray,
    trials: int,
    trial_sharpes: list[float],
    seed: int = 0,
    alpha: float = 0.05,
    min_deflated_sharpe: float = 0.95,
) -> dict[str, float]:
    n = len(pnl)
    expectancy = float(pnl.mean()) if n else math.nan
    if n >= 2 and np.ptp(pnl) > 0:
        # Percentile method in batches: BCa's jackknife needs n^2 memory for 100k trades.
        ci = bootstrap(
            (pnl,), np.mean, n_resamples=2000, batch=100, method="percentile", rng=np.random.default_rng(seed)
        ).confidence_interval
        low, high = float(ci.low), float(ci.high)
        sharpe = float(pnl.mean() / pnl.std(ddof=1))
        skewness, kurt = float(skew(pnl)), float(kurtosis(pnl, fisher=False))
    else:
        low = high = expectancy
        sharpe, skewness, kurt = math.nan, 0.0, 3.0
    spread = _sharpe_spread(sharpe, skewness, kurt) if math.isfinite(sharpe) else math.nan
    finite_trials = [s for s in trial_sharpes if math.isfinite(s)]
    variance = float(np.var(finite_trials, ddof=1)) if len(finite_trials) >= 2 else spread / max(n - 1, 1)
    benchmark = expected_max_sharpe(trials, variance) if math.isfinite(variance) else math.nan
    p_value = (1 + int((baseline_expectancy >= expectancy).sum())) / (len(baseline_expectancy) + 1) if n else 1.0
    psr = probabilistic_sharpe(sharpe, n, skewness, kurt)
    dsr = probabilistic_sharpe(sharpe, n, skewness, kurt, benchmark) if math.isfinite(benchmark) else math.nan
    significant = bool(n >= 2 and p_value < alpha and math.isfinite(dsr) and dsr >= min_deflated_sharpe)
    return {
        "expectancy": expectancy,
        "expectancy_ci_low": low,
        "expectancy_ci_high": high,
        "baseline_expectancy_mean": float(baseline_expectancy.mean()) if len(baseline_expectancy) else math.nan,
        "p_value_vs_random": float(p_value),
        "sharpe_per_trade": sharpe,
        "probabilistic_sharpe": psr,
        "deflated_sharpe": dsr,
        "deflated_benchmark_sharpe": benchmark,
        "trials": trials,
        "significant": float(significant),
    }


def verdict(stats: dict[str, float]) -> str:
    """The one sentence a report leads with."""
    if not stats["expectancy"] == stats["expectancy"]:
        return "No trades: nothing to judge."
    head = "The edge is significant" if stats["significant"] else "The edge is not significant"
    return (
        f"{head}: expectancy {stats['expectancy']:.4f} per trade after costs (95 % CI {stats['expectancy_ci_low']:.4f} "
        f"to {stats['expectancy_ci_high']:.4f}) against {stats['baseline_expectancy_mean']:.4f} for random entries with the "
        f"same exits (p = {stats['p_value_vs_random']:.3g}); deflated Sharpe {stats['deflated_sharpe']:.2f} "
        f"over {int(stats['trials'])} trial(s)."
    )
