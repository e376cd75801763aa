"""Backtests of MLflow candidates: their logged test predictions in, the report back into their run."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import pandas as pd

from ..models.pipeline import PREDICTIONS_ARTIFACT
from ..models.tracking import Tracker
from .report import BacktestReport

SHARPE_METRIC = "bt_sharpe_per_trade"


def candidate_runs(tracker: Tracker) -> list:
    """Every trained candidate in the experiment (walk-forward evaluations and parents excluded):
    the trials the deflated Sharpe ratio counts."""
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.model_type != ''", max_results=50_000)
    return [r for r in runs if r.data.tags.get("walk_forward") != "true"]


def trial_sharpes(runs: list) -> list[float]:
    return [r.data.metrics[SHARPE_METRIC] for r in runs if SHARPE_METRIC in r.data.metrics]


def load_predictions(tracker: Tracker, run_id: str) -> pd.DataFrame:
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=PREDICTIONS_ARTIFACT, tracking_uri=tracker.tracking_uri
        )
    except Exception as exc:  # MLflow raises several types for a missing artifact
        raise FileNotFoundError(f"run {run_id} has no {PREDICTIONS_ARTIFACT}: retrain it with this version") from exc
    return pd.read_parquet(path)


def log_report(tracker: Tracker, run_id: str, report: BacktestReport, folder: Path) -> Path:
    """Metrics `bt_*`, the plots, the HTML report and the trades into the candidate's run; the HTML
    also under `folder` for the Dagster UI."""
    folder.mkdir(parents=True, exist_ok=True)
    html_path = folder / f"{report.name}.html"
    html_path.write_text(report.html())
    numbers = {f"bt_{k}": float(v) for k, v in report.summary().items() if isinstance(v, int | float) and math.isfinite(v)}
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(numbers)
        mlflow.log_dict(report.config.model_dump(), "backtest/execution.json")
        mlflow.set_tag("backtest_verdict", report.verdict)
        for name, png in report.plots.items():
            Tracker.log_bytes(png, f"backtest/{name}.png")
        Tracker.log_bytes(report.html().encode(), "backtest/report.html")
        Tracker.log_bytes(report.trades.to_parquet(index=False), "backtest/trades.parquet")
    return html_path
