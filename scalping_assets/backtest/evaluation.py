"""An evaluation: every candidate of a dataset backtested on its test span, pooled and per symbol, then
deflated over the trials counted in the experiment.

Two passes, so that a verdict does not depend on the order the candidates are backtested in nor on how
often the experiment was re-run:
1. Backtest every candidate (the random-trader baseline included, drawn once).
2. Give each candidate's distinct trial its Sharpe ratio from this evaluation (`Trials.with_sharpes`)
   and only then compute every deflated Sharpe ratio and significance over the same trials.
A first run therefore deflates its candidates against their own Sharpe ratios, and a second, identical
run, whose candidates are the same trials as the first's, against the same ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..models.tracking import Tracker
from .engine import ExecutionConfig
from .report import BacktestReport, backtest_predictions
from .runs import candidate_runs, load_predictions
from .trials import Trials, count_trials


@dataclass(frozen=True, kw_only=True)
class Evaluated:
    """One candidate's backtests: on all its symbols together, and on each symbol alone."""

    name: str
    run_id: str
    pooled: BacktestReport
    per_symbol: dict[str, BacktestReport]


@dataclass(frozen=True, kw_only=True)
class EvaluationSpan:
    """What every candidate is backtested on: each symbol's ticks (warm-up before `start` included)."""

    ticks: dict[str, pd.DataFrame]
    start: int
    end: int
    execution: ExecutionConfig
    draws: int = 200
    seed: int = 0

    def backtest(self, name: str, predictions: pd.DataFrame, symbols: list[str]) -> BacktestReport:
        chosen = predictions[predictions["symbol"].isin(symbols)]
        ticks = {s: self.ticks[s] for s in symbols}
        # Deflated in the second pass; one trial and no trial Sharpe ratios until then.
        return backtest_predictions(name, ticks, chosen, self.execution, self.start, self.end, 1, [], self.draws, self.seed)


def evaluate_candidates(
    tracker: Tracker,
    candidates: list[tuple[str, str]],
    span: EvaluationSpan,
    cache: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Trials, list[Evaluated]]:
    """Backtest `candidates` ((name, run id) of MLflow candidate runs) on `span`, each on every symbol
    of the span together and on each symbol alone, and deflate them over the experiment's trials
    (`cache`: the trials' signal cache folder)."""
    trials = count_trials(tracker, candidate_runs(tracker), cache=cache)
    symbols = list(span.ticks)
    evaluated = []
    for name, run_id in candidates:
        predictions = load_predictions(tracker, run_id)
        predictions = predictions[predictions["symbol"].isin(symbols)]
        log(f"{name}: backtesting {len(predictions):,} predictions on {', '.join(symbols)}")
        pooled = span.backtest(name, predictions, symbols)
        # The gate judges each symbol on its own trades: a pooled edge can hide a symbol that loses.
        # With one symbol the pooled backtest is that symbol's (same trades, same seeded baseline).
        if len(symbols) == 1:
            per_symbol = {symbols[0]: pooled}
        else:
            per_symbol = {s: span.backtest(f"{name} {s}", predictions, [s]) for s in symbols}
        evaluated.append(Evaluated(name=name, run_id=run_id, pooled=pooled, per_symbol=per_symbol))
    trials = trials.with_sharpes({e.run_id: e.pooled.stats["sharpe_per_trade"] for e in evaluated})
    for e in evaluated:
        for report in {id(r): r for r in (e.pooled, *e.per_symbol.values())}.values():
            report.deflate(trials.effective, trials.sharpes)
        e.pooled.symbol_summaries = {s: r.summary() for s, r in e.per_symbol.items()}
        log(f"{e.name}: {e.pooled.verdict}")
    return trials, evaluated
