"""Backtests of MLflow candidates: their logged test predictions in, each backtest a run of its own.

A backtest run is a child of the training run it tests (so the training run keeps its own duration and
the MLflow UI nests the backtests under it), tagged with that run (`backtest_of`) and the model version
it judges, its metrics under `backtest/` (a chart section of their own), the execution as params, the
plots, the HTML report and the trades as artifacts. The version gets the backtest's run id and verdict
as tags and a `backtest` section in its description. A candidate backtested again gets another run:
the latest one is its backtest (`latest_backtests`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ..models.pipeline import PREDICTIONS_ARTIFACT
from ..models.tracking import Tracker, finite_metrics
from .report import BacktestReport

BACKTEST = "backtest/"  # metric section and artifact folder of a backtest run
SHARPE_METRIC = f"{BACKTEST}sharpe_per_trade"
# Before backtests had runs of their own they were logged into the training run with this prefix.
LEGACY_PREFIX = "bt_"
BACKTEST_OF_TAG = "backtest_of"  # tag of a backtest run: the training run it backtests
VERDICT_TAG = "backtest_verdict"  # tag of a backtest run and of the version it judges
BACKTEST_RUN_TAG = "backtest_run_id"  # version tag: its latest backtest run
REPORT_ARTIFACT = f"{BACKTEST}report.html"


@dataclass(frozen=True)
class LoggedBacktest:
    """Where one backtest went."""

    run_id: str  # the backtest's own run
    html: Path  # the report on local disk (the Dagster UI's copy)
    run_url: str  # the backtest run in the MLflow UI
    report_url: str  # the HTML report, rendered in the MLflow UI's artifact view


def candidate_runs(tracker: Tracker) -> list:
    """Every trained candidate in the experiment (walk-forward evaluations, backtests and parents
    excluded): the runs `trials.count_trials` groups into the distinct trials the deflated Sharpe ratio
    counts."""
    runs = tracker.search_runs("tags.model_type != ''")
    return [r for r in runs if r.data.tags.get("walk_forward") != "true" and BACKTEST_OF_TAG not in r.data.tags]


def latest_backtests(tracker: Tracker) -> dict[str, object]:
    """{training run id: its latest backtest run} over the experiment, in one search."""
    latest: dict[str, object] = {}
    for run in sorted(tracker.search_runs(f"tags.{BACKTEST_OF_TAG} != ''"), key=lambda r: r.info.start_time or 0):
        latest[run.data.tags[BACKTEST_OF_TAG]] = run
    return latest


def backtest_metric(run, latest: dict[str, object], key: str) -> float:
    """A backtest metric (`key` without prefix) of a training run: from its latest backtest run, else
    (backtested before backtests had runs of their own) from the run itself; NaN when never backtested."""
    backtest = latest.get(run.info.run_id)
    if backtest is not None:
        return backtest.data.metrics.get(f"{BACKTEST}{key}", math.nan)
    own = run.data.metrics
    return own.get(f"{BACKTEST}{key}", own.get(f"{LEGACY_PREFIX}{key}", math.nan))


def load_predictions(tracker: Tracker, run_id: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(tracker.download(run_id, PREDICTIONS_ARTIFACT))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"run {run_id} has no {PREDICTIONS_ARTIFACT}: retrain it with this version") from exc


def _headline(summary: dict[str, float]) -> str:
    parts = [("trades", "{:,.0f}"), ("win_rate", "{:.3f}"), ("expectancy", "{:.4g}"), ("sharpe_per_trade", "{:.4g}")]
    parts += [("deflated_sharpe", "{:.3f}"), ("p_value_vs_random", "{:.3g}")]
    shown = [f"{k.replace('_', ' ')} {fmt.format(summary[k])}" for k, fmt in parts if math.isfinite(summary.get(k, math.nan))]
    return ", ".join(shown)


def _utc(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")


def log_backtest(
    tracker: Tracker, run_id: str, report: BacktestReport, folder: Path, per_symbol: dict[str, BacktestReport] | None = None
) -> LoggedBacktest:
    """The backtest of the candidate trained in `run_id` as a child run of it (see the module's
    docstring), each symbol's own figures (`per_symbol`) under `backtest/<symbol>/`; the HTML also
    under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    html_path = folder / f"{report.name}.html"
    html = report.html()
    html_path.write_text(html)
    training = tracker.client.get_run(run_id)
    versions = tracker.run_versions(run_id)
    summary = report.summary()
    tags = {BACKTEST_OF_TAG: run_id, VERDICT_TAG: report.verdict}
    if "dataset_fingerprint" in training.data.tags:
        tags["dataset_fingerprint"] = training.data.tags["dataset_fingerprint"]
    tested = f"[{training.info.run_name}]({tracker.run_url(run_id)})"
    if versions:
        name, version = versions[0]
        tags |= {"registered_model": name, "model_version": version}
        tested += f" = [{name} v{version}]({tracker.model_version_url(name, version)})"
    symbols = sorted(report.per_symbol) or sorted(report.symbol_summaries)
    about = (
        f"Backtest of {tested} on {', '.join(symbols)}, {_utc(report.start)} to {_utc(report.end)} UTC "
        f"({report.config.instrument}): **{report.verdict}** {_headline(summary)}. Report: `{REPORT_ARTIFACT}`."
    )
    with tracker.run(f"backtest {report.name}", parent=run_id, tags=tags, description=about) as run:
        run.params(report.config.model_dump())
        run.metrics(finite_metrics(summary, prefix=BACKTEST))
        for symbol, own in (per_symbol or {}).items():
            run.metrics(finite_metrics(own.summary(), prefix=f"{BACKTEST}{symbol}/"))
        run.dict(report.config.model_dump(), f"{BACKTEST}execution.json")
        for plot, png in report.plots.items():
            run.bytes(png, f"{BACKTEST}{plot}.png")
        run.bytes(html.encode(), REPORT_ARTIFACT)
        run.bytes(report.trades.to_parquet(index=False), f"{BACKTEST}trades.parquet")
    report_url = tracker.artifact_url(run.run_id, REPORT_ARTIFACT)
    for name, version in versions:
        tracker.set_version_tag(name, version, BACKTEST_RUN_TAG, run.run_id)
        tracker.set_version_tag(name, version, VERDICT_TAG, report.verdict)
        text = f"{report.verdict} {_headline(summary)}. [Backtest run]({tracker.run_url(run.run_id)}), [report]({report_url})."
        tracker.describe_version(name, version, text, section="backtest")
    return LoggedBacktest(run.run_id, html_path, tracker.run_url(run.run_id), report_url)
