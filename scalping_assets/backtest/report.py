"""A backtest report of one candidate's predictions: trades, metrics, significance, plots and HTML."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..features.labels import PROBABILITY_COLUMNS
from ..market.symbols import get_symbol
from ..plotting import figure_png
from .engine import REASONS, ExecutionConfig, TickPath, run_backtest, signal_sides
from .metrics import DAY, HOURS_PER_YEAR, drawdown, equity_curve, hourly_returns, performance
from .significance import (
    annualised_sharpe_interval,
    deflated,
    random_signal_expectancies,
    significance,
    verdict,
)

# The per-symbol table of the HTML report: (heading, summary key, format), what decides first.
SYMBOL_COLUMNS = (
    ("trades", "trades", "{:,.0f}"),
    ("long %", "long_pct", "{:.1f}"),
    ("win rate", "win_rate", "{:.3f}"),
    ("expectancy", "expectancy", "{:.4f}"),
    ("net P&amp;L", "total_pnl_net", "{:,.2f}"),
    ("p vs random", "p_value_vs_random", "{:.3g}"),
    ("deflated Sharpe", "deflated_sharpe", "{:.2f}"),
    ("Sharpe (ann., lower 95 %)", "sharpe_annualised_lower", "{:.2f}"),
    ("max drawdown %", "max_drawdown_pct", "{:.2f}"),
    ("significant", "significant", "{:.0f}"),
)


@dataclass
class BacktestReport:
    name: str
    config: ExecutionConfig
    start: int
    end: int
    trades: pd.DataFrame
    metrics: dict[str, float]
    stats: dict[str, float]
    per_symbol: dict[str, dict[str, float]]
    baseline_win_rate: float
    unfinished: int
    plots: dict[str, bytes] = field(default_factory=dict)
    # Each symbol's own backtest summary (its own baseline and significance) when it was run apart;
    # otherwise the HTML's per-symbol table shows the trades' metrics alone.
    symbol_summaries: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return verdict(self.stats)

    def deflate(self, trials: int, trial_sharpes: list[float]) -> None:
        """Recompute the deflated Sharpe ratio and the significance over these trials."""
        self.stats |= deflated(self.stats, trials, trial_sharpes)

    def summary(self) -> dict[str, float]:
        """Flat numbers for MLflow and the gate."""
        return self.metrics | self.stats | {"baseline_win_rate": self.baseline_win_rate, "unfinished": self.unfinished}

    def html(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v:,.4f}</td></tr>"
            if isinstance(v, float)
            else f"<tr><td>{k}</td><td>{v}</td></tr>"
            for k, v in self.summary().items()
        )
        by_symbol = {s: m | self.symbol_summaries.get(s, {}) for s, m in self.per_symbol.items()}
        head = "".join(f"<th>{heading}</th>" for heading, _, _ in SYMBOL_COLUMNS)
        symbols = "".join(
            f"<tr><td>{html.escape(s)}</td>"
            + "".join(f"<td>{_cell(m.get(key), form)}</td>" for _, key, form in SYMBOL_COLUMNS)
            + "</tr>"
            for s, m in by_symbol.items()
        )
        images = "".join(
            f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode()}"><figcaption>{name}</figcaption></figure>'
            for name, png in self.plots.items()
        )
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>Backtest {html.escape(self.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td{{padding:2px 10px}}figure{{display:inline-block}}</style>
</head><body><h1>Backtest: {html.escape(self.name)}</h1><p><b>{html.escape(self.verdict)}</b></p>
<h2>Execution</h2><pre>{html.escape(self.config.model_dump_json(indent=1))}</pre>
<h2>Metrics</h2><table>{rows}</table>
<h2>Per symbol</h2><table><tr><th>symbol</th>{head}</tr>
{symbols}</table>
<h2>Plots</h2>{images}</body></html>"""


def _cell(value: float | None, form: str) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else form.format(value)


def _paths(ticks: dict[str, pd.DataFrame], config: ExecutionConfig) -> dict[str, TickPath]:
    return {
        symbol: TickPath.build(symbol, frame["epoch"].to_numpy(), frame["quote"].to_numpy(), get_symbol(symbol).pip_size, config)
        for symbol, frame in ticks.items()
    }


def backtest_predictions(
    name: str,
    ticks: dict[str, pd.DataFrame],
    predictions: pd.DataFrame,
    config: ExecutionConfig,
    start: int,
    end: int,
    trials: int = 1,
    trial_sharpes: list[float] | None = None,
    draws: int = 200,
    seed: int = 0,
) -> BacktestReport:
    """Backtest `predictions` (symbol, epoch, p_down, p_neutral, p_up) on each symbol's ticks in
    [start, end). Ticks before `start` only warm up the RMS move of sigma barriers."""
    paths = _paths({s: f[f["epoch"] < end] for s, f in ticks.items()}, config)
    trades, sides, pools, unfinished, per_symbol = [], {}, {}, 0, {}
    for symbol, path in paths.items():
        mine = predictions[predictions["symbol"] == symbol]
        where = np.searchsorted(path.epochs, mine["epoch"].to_numpy())
        known = (where < len(path.epochs)) & (path.epochs[np.minimum(where, len(path.epochs) - 1)] == mine["epoch"].to_numpy())
        if not known.all():
            raise ValueError(f"{symbol}: {int((~known).sum())} predictions at epochs without a tick")
        proba = np.full((len(path.epochs), 3), np.nan)
        proba[where] = mine[PROBABILITY_COLUMNS].to_numpy()
        proba[path.epochs < start] = np.nan
        result = run_backtest(path, proba, config)
        trades.append(result.trades)
        unfinished += result.unfinished
        # What the random trader of the baseline reshuffles: the strategy's signals over the ticks it
        # had a prediction for.
        sides[symbol] = signal_sides(proba, config.min_confidence)
        pools[symbol] = np.flatnonzero(~np.isnan(proba).any(axis=1))
        per_symbol[symbol] = performance(result.trades, config.capital, start, end)
    frame = pd.concat(trades, ignore_index=True).sort_values(["entry_epoch", "symbol"], kind="stable").reset_index(drop=True)
    frame["reason"] = pd.Categorical(frame["reason"].astype(str), categories=list(REASONS))
    baseline, baseline_wins = random_signal_expectancies(paths, sides, pools, config, draws, seed)
    stats = significance(frame["pnl_net"].to_numpy(), baseline, trials, trial_sharpes or [], seed)
    hourly = hourly_returns(equity_curve(frame, config.capital), config.capital, start, end)
    stats |= annualised_sharpe_interval(hourly, HOURS_PER_YEAR, (end - start) / DAY, len(frame))
    report = BacktestReport(
        name,
        config,
        start,
        end,
        frame,
        performance(frame, config.capital, start, end),
        stats,
        per_symbol,
        float(np.nanmean(baseline_wins)) if np.isfinite(baseline_wins).any() else math.nan,
        unfinished,
    )
    report.plots = report_plots(report, baseline)
    return report


def report_plots(report: BacktestReport, baseline: np.ndarray) -> dict[str, bytes]:
    trades, capital = report.trades, report.config.capital
    equity = equity_curve(trades, capital)
    plots = {}

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 4.2), dpi=90, sharex=True, height_ratios=[3, 1])
    hours = (equity.index.to_numpy() - report.start) / 3600
    top.plot(np.concatenate([[0], hours]), np.concatenate([[capital], equity.to_numpy()]), color="#4477aa", linewidth=1)
    top.axhline(capital, color="grey", linewidth=0.7)
    top.set_ylabel("equity")
    top.set_title(f"{report.name}: equity after costs ({len(trades):,} trades)", fontsize=9)
    _, dd_pct = drawdown(equity.to_numpy(), capital) if len(trades) else (None, np.zeros(0))
    bottom.fill_between(hours, -100 * dd_pct, color="crimson", alpha=0.5, linewidth=0)
    bottom.set_ylabel("drawdown %")
    bottom.set_xlabel("hours into the test span")
    plots["equity_drawdown"] = figure_png(fig)

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=90)
    ax.hist(trades["pnl_net"], bins=60, color="#4477aa")
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.axvline(report.stats["expectancy"], color="black", linestyle="--", linewidth=1, label="expectancy")
    if math.isfinite(report.stats["baseline_expectancy_mean"]):
        ax.axvline(report.stats["baseline_expectancy_mean"], color="crimson", linestyle=":", linewidth=1, label="random trader")
    ax.set_xlabel("net P&L per trade")
    ax.set_title("trade P&L", fontsize=9)
    ax.legend(fontsize=8)
    plots["pnl_histogram"] = figure_png(fig)

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=90)
    ax.hist(trades["hold_seconds"], bins=40, color="#228833")
    ax.set_xlabel("hold time, seconds")
    ax.set_title(f"hold time (mean {report.metrics['avg_hold_seconds']:.1f} s)", fontsize=9)
    plots["hold_time"] = figure_png(fig)

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=90)
    counts = trades["reason"].value_counts().reindex(list(REASONS), fill_value=0)
    mean_pnl = trades.groupby("reason", observed=False)["pnl_net"].mean().reindex(list(REASONS))
    bars = ax.bar(list(REASONS), counts.to_numpy(), color=["#228833", "crimson", "#bbbbbb"])
    for bar, pnl in zip(bars, mean_pnl.to_numpy(), strict=True):
        ax.annotate(
            f"mean {pnl:.3f}" if pnl == pnl else "",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            fontsize=7,
        )
    ax.set_ylabel("trades")
    ax.set_title("exit reasons (mean net P&L)", fontsize=9)
    plots["exit_reasons"] = figure_png(fig)
    return plots
