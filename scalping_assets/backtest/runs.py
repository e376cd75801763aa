"""Backtests of MLflow candidates: their logged test predictions in, the report back into their run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..models.pipeline import PREDICTIONS_ARTIFACT
from ..models.tracking import Tracker, finite_metrics
from .report import BacktestReport

SHARPE_METRIC = "bt_sharpe_per_trade"


def candidate_runs(tracker: Tracker) -> list:
    """Every trained candidate in the experiment (walk-forward evaluations and parents excluded): the
    runs `trials.count_trials` groups into the distinct trials the deflated Sharpe ratio counts."""
    runs = tracker.search_runs("tags.model_type != ''")
    return [r for r in runs if r.data.tags.get("walk_forward") != "true"]


def load_predictions(tracker: Tracker, run_id: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(tracker.download(run_id, PREDICTIONS_ARTIFACT))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"run {run_id} has no {PREDICTIONS_ARTIFACT}: retrain it with this version") from exc


def log_report(tracker: Tracker, run_id: str, report: BacktestReport, folder: Path) -> Path:
    """Metrics `bt_*`, the plots, the HTML report and the trades into the candidate's run; the HTML
    also under `folder` for the Dagster UI."""
    folder.mkdir(parents=True, exist_ok=True)
    html_path = folder / f"{report.name}.html"
    html_path.write_text(report.html())
    run = tracker.reopen(run_id)
    run.metrics(finite_metrics(report.summary(), prefix="bt_"))
    run.dict(report.config.model_dump(), "backtest/execution.json")
    run.tag("backtest_verdict", report.verdict)
    for name, png in report.plots.items():
        run.bytes(png, f"backtest/{name}.png")
    run.bytes(report.html().encode(), "backtest/report.html")
    run.bytes(report.trades.to_parquet(index=False), "backtest/trades.parquet")
    return html_path
