"""The typed records stages hand each other, and where they are kept.

A stage's output is one record: the dataset it wrote, the candidates a model asset trained, the
backtests of every candidate, the gate's decision, the bundles it exported. Dagster passes them from
asset to asset through the records I/O manager (one JSON file per asset under the data folder), and
the sensor and the command line read the same files. Materialization metadata repeats them for people
to read; no code reads it back.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .market.store import write_atomic
from .trading.sequential import Look

Summary = dict[str, float | int | bool | None]


class DatasetRecord(BaseModel):
    """A training dataset as `training_dataset` wrote it."""

    name: str
    path: str
    fingerprint: str
    symbols: list[str]
    start: date
    end: date
    rows: dict[str, int]  # per split
    dropped: dict[str, int]  # rows left out, by reason


class CandidateRecord(BaseModel):
    """One trained, evaluated and registered model."""

    name: str  # "xgboost-seed0", "ensemble"
    kind: str
    run_id: str
    version: str
    model_uri: str
    registered_model: str
    config: dict
    metrics: dict[str, float]
    edge: dict[str, float]


class WalkForwardRecord(BaseModel):
    """One candidate's walk-forward: per-fold figures and their aggregate."""

    folds: list[dict[str, int | float | None]]
    aggregate: dict[str, float]


class ModelRecord(BaseModel):
    """What one model asset trained: a candidate per seed (one for the ensemble)."""

    model: str  # the family, or "ensemble"
    profile: str
    dataset_fingerprint: str
    candidates: list[CandidateRecord]
    walk_forward: list[WalkForwardRecord] = Field(default_factory=list)  # per candidate, when asked for


class BacktestResult(BaseModel):
    candidate: CandidateRecord
    summary: Summary  # the metrics of `BacktestReport.summary()`, None where not finite: all symbols
    per_symbol: dict[str, Summary]  # the same, each symbol's trades alone: what the gate judges
    verdict: str
    html: str  # the self-contained report
    run_id: str | None = None  # the backtest's MLflow run (None: recorded before backtests had runs of their own)
    report_url: str | None = None  # the report rendered in the MLflow UI


class BacktestRecord(BaseModel):
    """The out-of-sample backtest of every candidate, on one span and one execution config."""

    dataset: str
    symbols: list[str]  # the symbols backtested
    not_costed: dict[str, str] = Field(default_factory=dict)  # symbol -> why it could not be costed
    start: int
    end: int
    execution: dict
    trials: int  # the candidate runs the deflated Sharpe ratio counted
    results: list[BacktestResult]


class GateRecord(BaseModel):
    """The promotion gate's decision on one registered model."""

    registered_model: str
    promoted: bool
    champion: str | None
    previous: str | None
    challenger: str | None
    failures: dict[str, dict[str, list[str]]]  # candidate -> symbol -> reasons (empty: cleared)
    cleared: dict[str, list[str]]  # candidate -> the symbols it cleared
    message: str


class ExportRecord(BaseModel):
    """The bundles `onnx_model` exported, by alias."""

    registered_model: str
    versions: dict[str, str]  # alias -> version
    bundles: dict[str, str]  # alias -> local folder
    precision: str  # of the champion's bundle
    exports: dict[str, dict]  # "<alias> v<version>" -> parity, INT8 and latency figures


class PredictionLogRecord(BaseModel):
    """One UTC day of the service's prediction log, consolidated by `prediction_log` into one Parquet
    file (`monitoring.predlog`): every line read is either kept or rejected with its reason."""

    day: date
    path: str  # the day's Parquet file (written even when the day has no line: zero rows)
    folder: str = ""  # the service's log folder read
    files: list[str]  # the JSON-lines files read, in order
    read: int  # lines read
    kept: int  # rows in the Parquet file
    rejected: dict[str, int] = Field(default_factory=dict)  # reason -> lines
    first_rejected: dict[str, str] = Field(default_factory=dict)  # reason -> "<file>:<line>: <detail>" of its first line
    models: list[str] = Field(default_factory=list)  # "<registered model>@<version>" that answered that day


class LivePerformanceRecord(BaseModel):
    """One day of one served model version, its logged predictions resolved against the ticks that
    followed them and traded by the backtest engine, beside its backtest (`monitoring.live`)."""

    day: date
    registered_model: str
    version: str
    predictions: int  # logged that day
    resolved: int  # with a label (enough ticks after them)
    figures: Summary  # accuracy, win rate and its interval, expectancy, trades, latency p50/p99, ...
    backtest: Summary  # the same figures from the version's backtest
    backtest_scope: str = ""  # the symbols its figures cover
    degradation_p_value: float | None  # two-sided test of the live win rate against the backtest's
    degraded: bool
    symbols: list[str] = Field(default_factory=list)  # the symbols it answered for that day
    per_symbol: dict[str, Summary] = Field(default_factory=dict)  # live trades' figures by symbol
    backtest_per_symbol: dict[str, Summary] = Field(default_factory=dict)  # the backtest's by symbol
    test: str = ""  # the degradation test, named
    alpha: float = 0.05
    compared_symbols: list[str] = Field(default_factory=list)  # with trades on both sides: the test's strata
    training_run_id: str = ""
    backtest_run_id: str = ""
    execution: dict = Field(default_factory=dict)  # the backtest's execution config, the live trades'


class PaperParityRecord(BaseModel):
    """One day of one symbol's paper trading against the batch replay of the same ticks (`trading.parity`)."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    day: date
    symbol: str
    registered_model: str
    version: str
    figures: dict[str, float | int]  # signal and trade match, |ΔP&L|, tracking error, P&L of both, their ratio
    venues: dict[str, dict[str, float | int]] = Field(default_factory=dict)  # per venue broker, against paper
    mismatches: list[dict] = Field(default_factory=list)  # each with its explanation ("why")
    execution: dict = Field(default_factory=dict)


class ABDecisionRecord(BaseModel):
    """One day's look of the champion/challenger paper A/B (`trading.ab`, `trading.sequential`)."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    day: date
    registered_model: str
    champion: str  # version
    challenger: str
    symbols: list[str]  # traded by both books
    start: int  # epoch the pair began trading side by side
    periods: int
    looks: list[Look]  # one per day since the start, this day's last
    decision: str  # promote, keep, continue
    why: str
    config: dict
    canary: str | None = None  # what the decision did to the rollout


class DriftRecord(BaseModel):
    """One day's logged feature rows and predictions against the served model's training span (`monitoring.drift`).

    `drift_report` writes one per UTC day: that of the version with the most logged predictions, every
    other version logged that day in `others`, those with too few predictions to judge in `skipped`."""

    day: date
    registered_model: str
    version: str
    method: str  # the per-feature drift test, pinned
    threshold: float
    reference_rows: int
    current_rows: int
    scores: dict[str, float]  # feature -> the method's score
    drifted: list[str]  # features over the threshold
    drift_share: float
    prediction_drift: Summary  # class distribution: live vs reference, and the test's score
    html: str  # the Evidently report
    prediction_method: str = ""  # the class-distribution distance, pinned
    run_id: str = ""  # the version's training run, which holds the report as drift/<day>.html
    report_url: str | None = None  # the report in the MLflow UI
    excluded: list[str] = Field(default_factory=list)  # features logged but not judged (calendar)
    symbols: dict[str, int] = Field(default_factory=dict)  # symbol -> logged predictions judged
    live: Summary = Field(default_factory=dict)  # figures carried into the snapshot: accuracy, latency
    snapshot_id: str | None = None  # in the Evidently workspace's project of the registered model
    others: list[DriftRecord] = Field(default_factory=list)  # the day's other served versions
    skipped: dict[str, str] = Field(default_factory=dict)  # "<model>@<version>" -> why it was not judged


RECORD_TYPES: dict[str, type[BaseModel]] = {
    cls.__name__: cls
    for cls in (
        DatasetRecord,
        ModelRecord,
        BacktestRecord,
        GateRecord,
        ExportRecord,
        PredictionLogRecord,
        LivePerformanceRecord,
        DriftRecord,
    )
}
R = TypeVar("R", bound=BaseModel)


class RecordError(RuntimeError):
    """A record that is missing, of another type, or malformed; the message names the file."""


class RecordStore:
    """One JSON file per asset key under `root`, replaced atomically."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: list[str]) -> Path:
        return self.root.joinpath(*key).with_suffix(".json")

    def save(self, key: list[str], record: BaseModel) -> Path:
        text = json.dumps({"type": type(record).__name__, "record": record.model_dump(mode="json")}, indent=1)
        return write_atomic(self.path(key), lambda sink: sink.write(text.encode()))

    def exists(self, key: list[str]) -> bool:
        return self.path(key).exists()

    def load(self, key: list[str], expected: type[R] | None = None) -> R:
        path = self.path(key)
        if not path.exists():
            raise RecordError(f"no record of {'/'.join(key)} at {path}: materialize {'/'.join(key)} first")
        try:
            stored = json.loads(path.read_text())
            cls = RECORD_TYPES[stored["type"]]
            record = cls.model_validate(stored["record"])
        except (ValueError, KeyError, ValidationError) as exc:
            raise RecordError(f"{path}: not a readable record ({exc})") from exc
        if expected is not None and not isinstance(record, expected):
            raise RecordError(f"{path} holds a {type(record).__name__}, not a {expected.__name__}")
        return record
