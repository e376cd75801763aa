"""Performance of a trade list: the roadmap's metrics, from trades and the equity curve they make.

Equity moves at exits (positions are not marked to market in between): capital plus the running sum
of net P&L. The annualised Sharpe ratio uses hourly returns of that curve scaled by sqrt(24 * 365),
because synthetic indices trade around the clock; the per-trade Sharpe ratio is mean / std of net P&L.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

HOURS_PER_YEAR = 24 * 365
DAY = 86_400


def equity_curve(trades: pd.DataFrame, capital: float) -> pd.Series:
    """Equity after each exit, indexed by exit epoch, starting at `capital`."""
    ordered = trades.sort_values(["exit_epoch", "entry_epoch"], kind="stable")
    return pd.Series(capital + ordered["pnl_net"].cumsum().to_numpy(), index=ordered["exit_epoch"].to_numpy())


def drawdown(equity: np.ndarray, capital: float) -> tuple[np.ndarray, np.ndarray]:
    """(absolute, fractional) drawdown below the running peak, the start counting as a peak."""
    peak = np.maximum.accumulate(np.concatenate([[capital], equity]))[1:]
    return peak - equity, (peak - equity) / peak


def hourly_returns(equity: pd.Series, capital: float, start: int, end: int) -> np.ndarray:
    """Returns of the equity sampled at the end of every hour from `start` to `end` (epochs)."""
    edges = np.arange(start + 3600, end + 3600, 3600)
    if equity.empty:
        return np.zeros(len(edges))
    last = np.searchsorted(equity.index.to_numpy(), edges, side="right") - 1
    sampled = np.where(last >= 0, equity.to_numpy()[np.maximum(last, 0)], capital)
    levels = np.concatenate([[capital], sampled])
    return np.diff(levels) / levels[:-1]


def _max_run(flags: np.ndarray) -> int:
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def performance(trades: pd.DataFrame, capital: float, start: int, end: int) -> dict[str, float]:
    """All metrics of one backtest over the span [start, end) (epochs)."""
    n = len(trades)
    pnl = trades["pnl_net"].to_numpy(np.float64)
    wins, losses = pnl[pnl > 0], pnl[pnl <= 0]
    equity = equity_curve(trades, capital)
    dd_abs, dd_pct = drawdown(equity.to_numpy(), capital) if n else (np.zeros(1), np.zeros(1))
    hourly = hourly_returns(equity, capital, start, end)
    gross = float(trades["pnl_gross"].sum())
    std = float(pnl.std(ddof=1)) if n > 1 else math.nan
    hourly_std = float(hourly.std(ddof=1)) if len(hourly) > 1 else math.nan
    by_exit = trades.sort_values(["exit_epoch", "entry_epoch"], kind="stable")
    return {
        "trades": n,
        "long_pct": float(100 * (trades["side"] > 0).mean()) if n else math.nan,
        "win_rate": len(wins) / n if n else math.nan,
        "avg_win": float(wins.mean()) if len(wins) else 0.0,
        "avg_loss": float(losses.mean()) if len(losses) else 0.0,
        "profit_factor": float(wins.sum() / -losses.sum()) if losses.sum() < 0 else math.inf if len(wins) else math.nan,
        "expectancy": float(pnl.mean()) if n else math.nan,
        "total_pnl_net": float(pnl.sum()),
        "total_pnl_gross": gross,
        "total_costs": gross - float(pnl.sum()),
        "sharpe_per_trade": float(pnl.mean() / std) if n > 1 and std > 0 else math.nan,
        "sharpe_annualised": float(hourly.mean() / hourly_std * math.sqrt(HOURS_PER_YEAR)) if hourly_std > 0 else math.nan,
        "max_drawdown": float(dd_abs.max()),
        "max_drawdown_pct": float(100 * dd_pct.max()),
        "avg_hold_seconds": float(trades["hold_seconds"].mean()) if n else math.nan,
        "avg_hold_ticks": float(trades["hold_ticks"].mean()) if n else math.nan,
        "trades_per_day": n / ((end - start) / DAY),
        "max_consecutive_losses": _max_run(by_exit["pnl_net"].to_numpy() <= 0),
        "slippage_impact_pct": float(100 * trades["slippage_cost"].sum() / abs(gross)) if gross else math.nan,
        "exit_tp": int((trades["reason"] == "tp").sum()),
        "exit_sl": int((trades["reason"] == "sl").sum()),
        "exit_timeout": int((trades["reason"] == "timeout").sum()),
    }
