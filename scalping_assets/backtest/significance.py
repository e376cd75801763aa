"""Is the edge luck? A random trader under the same rules, a bootstrap interval, deflated Sharpe, and
the uncertainty of every headline number.

- Random-trader baseline: each draw takes the strategy's own signals on each symbol (how many buys,
  how many sells) and scatters them uniformly over the ticks where the strategy had a prediction, then
  feeds them through the same engine entry point (`run_backtest`) with the same execution config:
  slots, latency, hourly cap, exits and costs, on the same tick path. The random trader therefore
  signals at the strategy's rate with its buy/sell mix and is blocked by its own open positions
  exactly as the strategy is. The p-value is the share of draws whose expectancy reaches the
  strategy's (with the usual +1 correction): "better than a random trader under the same rules".
  Under the null hypothesis that the timing of the signals carries no information (signals
  independent of the path and exchangeable across ticks) the strategy is one more such draw, so
  P(p <= a) <= a exactly, on any symbol; a strategy that signals on every tick *is* its random
  trader (p = 1).
- Bootstrap: a 95 % percentile interval of the expectancy (scipy's bootstrap of the trades' net P&L).
- Probabilistic Sharpe ratio (Bailey & López de Prado 2012): probability that the true per-trade
  Sharpe ratio exceeds a benchmark, given the sample's length, skewness and kurtosis. The deflated
  Sharpe ratio (2014) sets the benchmark to the Sharpe ratio expected from the best of N unskilled
  trials, N being the effective number of distinct trials in the MLflow experiment (`trials.py`); the
  variance of Sharpe ratios across trials comes from the trials' own values when there are at least
  two, else from this estimate's sampling variance. `deflated` computes it apart, for evaluations that
  deflate every candidate once all of them are backtested (`evaluation.py`).
- Sharpe ratios with their standard errors (Mertens 2002: Lo's IID variance 1 + SR^2 / 2 corrected
  for skewness and kurtosis) and a 95 % interval; the annualised one also with the span it was
  measured on, flagged when that span is too short for a yearly figure to mean anything. The win
  rate gets a Wilson 95 % interval.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import bootstrap, kurtosis, norm, skew

from ..features.labels import DOWN, UP
from .engine import ExecutionConfig, TickPath, run_backtest

EULER_GAMMA = 0.5772156649015329
Z95 = float(norm.ppf(0.975))
# An annualised Sharpe ratio from less than 30 days of hourly returns says little: even for a
# strategy with no edge at all (true Sharpe 0) its standard error is sqrt(8760 / 719) ~ 3.5 at 30 days,
# more than twice the gate's default bar of 1.5, and shorter spans only widen it (about 19 for one
# day); besides, scaling to a year assumes that what a few days showed persists for a year. Fewer than
# 30 trades make the hourly returns mostly zeros around a handful of spikes, whatever the span.
MIN_SPAN_DAYS = 30.0
MIN_SPAN_TRADES = 30


def random_signal_expectancies(
    paths: dict[str, TickPath],
    sides: dict[str, np.ndarray],
    pools: dict[str, np.ndarray],
    config: ExecutionConfig,
    draws: int = 200,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(expectancy, win rate) of each draw of the random trader (NaN for a draw without trades).

    `sides[symbol]` is the strategy's signal per tick of `paths[symbol]` (+1 buy, -1 sell, 0 none, as
    `signal_sides`), `pools[symbol]` the ticks where the strategy had a prediction. Draw d uses its
    own generator spawned from `seed`, so it is the same whatever the number of draws."""
    expectancy, win_rate = np.full(draws, np.nan), np.full(draws, np.nan)
    plans = []
    for symbol, path in paths.items():
        pool = np.asarray(pools[symbol], np.int64)
        signals = sides[symbol][pool]
        signals = signals[signals != 0]
        if len(signals):
            # One-hot rows at the drawn ticks, NaN (no prediction) elsewhere: signal_sides gives back
            # exactly the drawn sides whatever min_confidence (<= 1) is. Written through the flat view.
            one_hot = np.zeros((len(signals), 3))
            one_hot[:, DOWN], one_hot[:, UP] = signals < 0, signals > 0
            plans.append((path, pool, one_hot, np.full((len(path.k), 3), np.nan)))
    if not plans:
        return expectancy, win_rate
    for d, child in enumerate(np.random.SeedSequence(seed).spawn(draws)):
        rng = np.random.default_rng(child)
        pnl = []
        for path, pool, one_hot, proba in plans:
            # A uniformly drawn ordered set of distinct ticks: the signals in their own order land on
            # a uniformly random arrangement of the strategy's signals over its pool.
            rows = 3 * pool[rng.choice(len(pool), size=len(one_hot), replace=False)]
            flat = proba.reshape(-1)
            for column in range(3):
                flat[rows + column] = one_hot[:, column]
            pnl.append(run_backtest(path, proba, config).trades["pnl_net"].to_numpy())
            for column in range(3):
                flat[rows + column] = np.nan
        values = np.concatenate(pnl)
        if len(values):
            expectancy[d], win_rate[d] = values.mean(), (values > 0).mean()
    return expectancy, win_rate


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


def sharpe_standard_error(sharpe: float, n: int, skewness: float, kurt: float) -> float:
    """Standard error of a Sharpe ratio estimated from n returns (Mertens 2002; `kurt` plain, not excess)."""
    if n < 2 or not math.isfinite(sharpe):
        return math.nan
    return math.sqrt(max(_sharpe_spread(sharpe, skewness, kurt), 0.0) / (n - 1))


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default); NaN without observations."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def annualised_sharpe_interval(returns: np.ndarray, periods_per_year: float, span_days: float, trades: int) -> dict[str, float]:
    """The annualised Sharpe ratio of per-period returns (mean / std * sqrt(periods a year)) with its
    standard error and 95 % interval, the span it was measured on, and whether that span is too short
    for an annualised figure (`sharpe_span_short` 1.0: under MIN_SPAN_DAYS or MIN_SPAN_TRADES)."""
    n = len(returns)
    std = float(returns.std(ddof=1)) if n > 1 else math.nan
    if n > 1 and std > 0:
        per_period = float(returns.mean() / std)
        se = sharpe_standard_error(per_period, n, float(skew(returns)), float(kurtosis(returns, fisher=False)))
        scale = math.sqrt(periods_per_year)
        sharpe, se = per_period * scale, se * scale
    else:
        sharpe = se = math.nan
    return {
        "sharpe_annualised": sharpe,  # equal to metrics.performance's, computed from the same returns
        "sharpe_annualised_se": se,
        "sharpe_annualised_ci_low": sharpe - Z95 * se,
        "sharpe_annualised_ci_high": sharpe + Z95 * se,
        "sharpe_annualised_lower": sharpe - Z95 * se,  # for the gate: the 95 % interval's lower end
        "span_days": float(span_days),
        "sharpe_span_short": float(span_days < MIN_SPAN_DAYS or trades < MIN_SPAN_TRADES),
    }


def p_value_vs_random(expectancy: float, baseline_expectancy: np.ndarray) -> float:
    """Share of baseline draws whose expectancy reaches the strategy's, +1-corrected (1.0 without
    trades). A draw without trades (NaN) never reaches it."""
    if not math.isfinite(expectancy):
        return 1.0
    return (1 + int((baseline_expectancy >= expectancy).sum())) / (len(baseline_expectancy) + 1)


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
    p_value = p_value_vs_random(expectancy, baseline_expectancy)
    win_low, win_high = wilson_interval(int((pnl > 0).sum()), n)
    finite_baseline = baseline_expectancy[np.isfinite(baseline_expectancy)]
    stats = {
        "expectancy": expectancy,
        "expectancy_ci_low": low,
        "expectancy_ci_high": high,
        "baseline_expectancy_mean": float(finite_baseline.mean()) if len(finite_baseline) else math.nan,
        "p_value_vs_random": float(p_value),
        "sharpe_per_trade": sharpe,
        "sharpe_per_trade_se": sharpe_standard_error(sharpe, n, skewness, kurt),
        "pnl_skewness": skewness,
        "pnl_kurtosis": kurt,
        "trades": n,
        "win_rate_ci_low": win_low,
        "win_rate_ci_high": win_high,
        "probabilistic_sharpe": probabilistic_sharpe(sharpe, n, skewness, kurt),
    }
    return stats | deflated(stats, trials, trial_sharpes, alpha, min_deflated_sharpe)


def deflated(
    stats: dict[str, float],
    trials: int,
    trial_sharpes: list[float],
    alpha: float = 0.05,
    min_deflated_sharpe: float = 0.95,
) -> dict[str, float]:
    """The deflated Sharpe ratio of a backtest's `stats` (from `significance`) over `trials` trials
    whose Sharpe ratios per trade are `trial_sharpes`, and whether the edge is significant.

    Apart from `significance` because an evaluation of several candidates deflates each of them once
    every candidate's own Sharpe ratio is known (`evaluation.evaluate_candidates`): the first candidate
    must not see fewer trials' Sharpe ratios than the last, nor a re-run more than the first run."""
    n, sharpe = int(stats["trades"]), stats["sharpe_per_trade"]
    skewness, kurt = stats["pnl_skewness"], stats["pnl_kurtosis"]
    spread = _sharpe_spread(sharpe, skewness, kurt) if math.isfinite(sharpe) else math.nan
    finite_trials = [s for s in trial_sharpes if math.isfinite(s)]
    variance = float(np.var(finite_trials, ddof=1)) if len(finite_trials) >= 2 else spread / max(n - 1, 1)
    benchmark = expected_max_sharpe(trials, variance) if math.isfinite(variance) else math.nan
    dsr = probabilistic_sharpe(sharpe, n, skewness, kurt, benchmark) if math.isfinite(benchmark) else math.nan
    significant = bool(n >= 2 and stats["p_value_vs_random"] < alpha and math.isfinite(dsr) and dsr >= min_deflated_sharpe)
    return {
        "deflated_sharpe": dsr,
        "deflated_benchmark_sharpe": benchmark,
        "trials": trials,
        "significant": float(significant),
    }


def sharpe_sentence(stats: dict[str, float]) -> str:
    """The annualised Sharpe ratio with its interval and span, and a warning when the span is too short."""
    if "sharpe_annualised_se" not in stats:
        return ""
    sharpe, days = stats["sharpe_annualised"], stats["span_days"]
    text = (
        f"Annualised Sharpe {sharpe:.2f} (95 % CI {stats['sharpe_annualised_ci_low']:.2f} to "
        f"{stats['sharpe_annualised_ci_high']:.2f}) over {days:.3g} day(s) of test span"
    )
    if stats["sharpe_span_short"]:
        return (
            f"{text}: too short for an annualised figure to mean anything (needs >= {MIN_SPAN_DAYS:.0f} days and "
            f">= {MIN_SPAN_TRADES} trades)."
        )
    return f"{text}."


def verdict(stats: dict[str, float]) -> str:
    """The sentence a report leads with, then the annualised Sharpe ratio with its interval and span."""
    if not stats["expectancy"] == stats["expectancy"]:
        return "No trades: nothing to judge."
    head = "The edge is significant" if stats["significant"] else "The edge is not significant"
    sharpe = sharpe_sentence(stats)
    return (
        f"{head}: expectancy {stats['expectancy']:.4f} per trade after costs (95 % CI {stats['expectancy_ci_low']:.4f} "
        f"to {stats['expectancy_ci_high']:.4f}) against {stats['baseline_expectancy_mean']:.4f} for a random trader under "
        f"the same rules (p = {stats['p_value_vs_random']:.3g}); deflated Sharpe {stats['deflated_sharpe']:.2f} "
        f"over {int(stats['trials'])} trial(s)." + (f" {sharpe}" if sharpe else "")
    )
