"""Feature and prediction drift of a served model version: one day's logged raw feature rows and
predicted classes against the version's training span, measured with Evidently (0.7 API), kept as an
HTML report and as a snapshot in a local Evidently workspace whose dashboard `evidently ui` serves.

**The per-feature method is pinned**, never Evidently's default: called without one, Evidently judges
a numeric column by a Kolmogorov-Smirnov p-value when the reference holds at most 1,000 rows and by
the normed Wasserstein distance above that, so the same call would mean something else as the
training span grows. And a p-value answers the wrong question on tick data: neighbouring feature rows
share almost all of their look-back (`rv_500` at two consecutive ticks shares 499 of its 500
returns), so a day of 40,000 rows holds a few hundred independent ones, and a test that counts 40,000
finds drift in noise (Evidently's KS test flagged half the features of simulated stationary days of
20,000 predictions).

So each numeric feature is scored by the Wasserstein-1 distance between its reference and live values
divided by the reference's standard deviation (Evidently's `wasserstein`): by how many reference
standard deviations its distribution moved. A distance, not a test; unit-free, so one threshold
serves basis points, pips and ratios alike; unbinned, and an estimate of one fixed quantity whatever
the row counts, so subsampling the reference leaves its meaning alone (Evidently's PSI and
Jensen-Shannon bin numeric columns by Sturges' rule on the pooled row count: their noise floor moves
with the traffic). The threshold is set against the autocorrelation: on simulated stationary days the
slow features (`rv_500`, the 500-tick levels, the event counters over 2,000 ticks) wander by 0.2-0.5
reference standard deviations from one day to the next with no change in the process at all, while a
volatility change moves the volatility features by several. At Evidently's usual 0.1 the share check
(more than a quarter of the features drifted) failed on 40 % of simulated stationary one-symbol days;
at 0.3 it failed on none of 400 stationary day logs and on every day after a volatility change
(`benchmarks/bench_drift.py`, README "Monitoring: drift").

**The predicted class** (argmax of the logged probabilities) is compared with the same model's
predictions on its test span (`predictions/test.parquet` of its training run) by the Jensen-Shannon
distance of the two class distributions: out-of-sample predictions are what live predictions should
look like. Not the label distribution (a model predicts its majority class more often than it occurs)
and not the training span (in-sample predictions are more confident than any live ones).

**Calendar features** (`hour`, `day_of_week`, `session`) are not judged: the reference is a fixed
stretch of calendar, so any other day differs from it there by construction, and synthetic indices
carry no signal in the calendar (`features.registry`).

**Symbol mix**: a model serves several symbols whose features live on different scales; the reference
is sampled to the live rows' mix of symbols, so a day that asked about one symbol more than the
training span did is not taken for drift. The distance is normed by that sample's spread, which for
several symbols includes the spread between them: a change confined to one symbol scores lower than it
would in a one-symbol model, though tripling R_100's volatility alone still drifted half the features
of a three-symbol model in every simulated day.
"""

from __future__ import annotations

import fcntl
import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
from evidently import DataDefinition, Report
from evidently import Dataset as EvidentlyDataset
from evidently.core.metric_types import SingleValue, SingleValueCalculation, SingleValueMetric
from evidently.core.report import Snapshot
from evidently.metrics import DriftedColumnsCount, ValueDrift
from evidently.sdk.models import PanelMetric
from evidently.sdk.panels import counter_panel, line_plot_panel, text_panel
from evidently.ui.workspace import Workspace

from ..features import registry as R
from ..features.dataset import Dataset, DatasetMeta
from ..features.labels import CLASSES, PROBABILITY_COLUMNS
from ..models.pipeline import PREDICTIONS_ARTIFACT
from ..models.tracking import MlflowException, Tracker  # MLflow's error, through the one module that imports it

NumericMethod = Literal["wasserstein"]
ClassMethod = Literal["jensenshannon", "hellinger", "psi"]
METHOD: NumericMethod = "wasserstein"
THRESHOLD = 0.3  # reference standard deviations; see the module's docstring and bench_drift
PREDICTION_METHOD: ClassMethod = "jensenshannon"
PREDICTION_THRESHOLD = 0.1
MAX_DRIFT_SHARE = 0.25  # the share check's default bound (the asset's config)
MAX_REFERENCE_ROWS = 20_000  # enough for the distance's estimate; the HTML and the run time grow with it
CALENDAR_FEATURES = tuple(f.name for f in R.FEATURES if f.family == "time")
SYMBOL, PREDICTION = "symbol", "prediction"
CLASS_NAMES = tuple(c.lower() for c in CLASSES)  # what the service logs and answers
DATASET_META = "dataset_meta.json"  # the training run's dataset metadata (models.pipeline.log_dataset)
MANIFEST_ARTIFACT = "onnx/manifest.json"  # the exported bundle's (serving.bundle)
LIVE_PREFIX = "live:"  # report metadata carrying the figures measured outside the report
MOST_DRIFTED = 5  # features charted on the dashboard's "most drifted" panel


class DriftInputError(ValueError):
    """Rows that cannot be compared, or a training span that cannot be read back; the message names the
    file, the row or the field, or the model version, run and artifact."""


# -- the figures measured elsewhere, carried into the snapshot ------------------------------------


class LiveFigure(SingleValueMetric):
    """A figure measured outside the report (live accuracy from `live_performance`, latency from the
    log), carried into the snapshot so the workspace's dashboard charts it beside the drift. The value
    travels in the report's metadata (`live:<figure>`), not as a field: the fields of a metric label its
    series, so a value there would start a new series every day."""

    figure: str


class LiveFigureCalculation(SingleValueCalculation[LiveFigure]):
    def calculate(self, context, current_data, reference_data):
        value = context.configuration.metadata[LIVE_PREFIX + self.metric.figure]
        return self.result(float(value)), None

    def display_name(self) -> str:
        return f"live {self.metric.figure.replace('_', ' ')}"


# -- the comparison -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionDrift:
    """The live predicted-class distribution against the reference's."""

    method: str
    threshold: float
    score: float
    reference: dict[str, float]  # class -> share
    live: dict[str, float]

    @property
    def drifted(self) -> bool:
        return self.score >= self.threshold

    def summary(self) -> dict[str, float | bool]:
        shares = {f"reference_{c}": self.reference[c] for c in CLASS_NAMES} | {f"live_{c}": self.live[c] for c in CLASS_NAMES}
        return {"score": self.score, "threshold": self.threshold, "drifted": self.drifted} | shares


@dataclass
class DriftResult:
    method: str
    threshold: float
    scores: dict[str, float]  # judged feature -> score (those with a live value)
    undefined: list[str]  # judged features with no finite live value at all: counted as drifted
    prediction: PredictionDrift | None
    reference_rows: int
    current_rows: int
    mix: dict[str, int]  # symbol -> live rows (empty: no symbol column)
    missing: dict[str, int]  # feature -> live rows where it is NaN (only those with any)
    excluded: list[str]  # features present but not judged (calendar)
    snapshot: Snapshot = field(repr=False)

    @property
    def drifted(self) -> list[str]:
        """Features at or over the threshold, the largest score first, then the undefined ones."""
        over = sorted((f for f, s in self.scores.items() if s >= self.threshold), key=lambda f: -self.scores[f])
        return over + self.undefined

    @property
    def judged(self) -> int:
        return len(self.scores) + len(self.undefined)

    @property
    def share(self) -> float:
        return len(self.drifted) / self.judged if self.judged else 0.0

    def table(self) -> list[dict[str, str | float | bool]]:
        """One row per judged feature, the most drifted first."""
        rows = [{"feature": f, "score": s, "drifted": s >= self.threshold} for f, s in self.scores.items()]
        rows.sort(key=lambda r: -r["score"])
        return [{"feature": f, "score": math.inf, "drifted": True} for f in self.undefined] + rows

    def html(self) -> str:
        """The Evidently report, self-contained."""
        return self.snapshot.get_html_str(as_iframe=False)


def predicted_classes(probabilities: pd.DataFrame) -> pd.Series:
    """The class each row predicts (argmax of `p_down`, `p_neutral`, `p_up`), as the service names it."""
    index = probabilities[PROBABILITY_COLUMNS].to_numpy(np.float64).argmax(axis=1)
    return pd.Series(np.asarray(CLASS_NAMES, dtype=object)[index], index=probabilities.index, name=PREDICTION)


def _mix(frame: pd.DataFrame) -> dict[str, int]:
    return {str(s): int(n) for s, n in frame[SYMBOL].value_counts().sort_index().items()} if SYMBOL in frame else {}


def _sample_like(
    frame: pd.DataFrame, mix: dict[str, int], rows: int, rng: np.random.Generator, what: str, replace: bool = False
) -> pd.DataFrame:
    """`rows` rows of `frame` whose symbols come in the proportions of `mix` (without replacement unless
    `replace`: then a symbol with fewer rows than its share is drawn with replacement)."""
    total = sum(mix.values())
    parts = []
    for symbol, n in mix.items():
        pool = np.flatnonzero(frame[SYMBOL].to_numpy() == symbol)
        if not len(pool):
            raise DriftInputError(f"{what} holds no row of {symbol}, which the live rows hold {n:,} of")
        wanted = max(1, round(rows * n / total))
        parts.append(rng.choice(pool, wanted, replace=replace and wanted > len(pool)))
    return frame.iloc[np.sort(np.concatenate(parts))].reset_index(drop=True)


def _reference_rows(frame: pd.DataFrame, mix: dict[str, int], cap: int) -> int:
    """The most reference rows that match the live mix without drawing any row twice, at most `cap`."""
    if not mix:
        return min(cap, len(frame))
    total = sum(mix.values())
    counts = frame[SYMBOL].value_counts()
    return int(min([cap] + [math.floor(counts.get(s, 0) * total / n) for s, n in mix.items()]))


def _values(snapshot: Snapshot, metric_type: str) -> dict[str, float]:
    """{column: value} of every single-value result of `metric_type` (e.g. ValueDrift) in the snapshot."""
    found = {}
    for result in snapshot.metric_results.values():
        params = result.metric_value_location.metric.params
        if isinstance(result, SingleValue) and params["type"] == f"evidently:metric_v2:{metric_type}":
            found[params["column"]] = float(result.value)
    return found


def drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    method: NumericMethod = METHOD,
    threshold: float = THRESHOLD,
    *,
    features: list[str] | None = None,
    reference_predictions: pd.DataFrame | None = None,
    prediction_method: ClassMethod = PREDICTION_METHOD,
    prediction_threshold: float = PREDICTION_THRESHOLD,
    exclude: tuple[str, ...] | list[str] = CALENDAR_FEATURES,
    max_reference_rows: int = MAX_REFERENCE_ROWS,
    live: dict[str, float | None] | None = None,
    day: date | None = None,
    labels: dict[str, str] | None = None,
    seed: int = 0,
) -> DriftResult:
    """Per-feature drift of `current` (live feature rows; a `prediction` column of class names for the
    prediction drift; a `symbol` column to match the mix) against `reference` (training feature rows,
    `symbol` likewise), the share of drifted features, and the predicted-class drift against
    `reference_predictions` (`symbol` and `prediction`, or `p_down`/`p_neutral`/`p_up`).

    `features`: the columns to compare (default: every numeric column of `reference` but `symbol`), less
    `exclude`. `live`: figures measured elsewhere (`accuracy`, `latency_p50_ms`, ...; None: not known)
    carried into the snapshot. `day` dates the snapshot, `labels` become its metadata (what
    `record_snapshot` replaces a snapshot by). `seed`: of the reference's subsample.
    """
    if method not in get_args(NumericMethod):
        raise ValueError(f"method {method!r} is not one of {get_args(NumericMethod)} (see the module's docstring)")
    if prediction_method not in get_args(ClassMethod):
        raise ValueError(f"prediction_method {prediction_method!r} is not one of {get_args(ClassMethod)}")
    if not (threshold > 0 and prediction_threshold > 0):
        raise ValueError(f"thresholds must be positive, got {threshold} and {prediction_threshold}")
    if features is None:
        features = [c for c in reference.columns if c != SYMBOL and pd.api.types.is_numeric_dtype(reference[c])]
    missing_columns = [
        (f, side) for f in features for side, frame in (("reference", reference), ("live", current)) if f not in frame
    ]
    if missing_columns:
        f, side = missing_columns[0]
        raise DriftInputError(f"feature {f!r} is not a column of the {side} rows")
    excluded = [f for f in features if f in set(exclude)]
    judged = [f for f in features if f not in set(exclude)]
    if not judged:
        raise DriftInputError(f"no feature left to judge: every one of {features} is excluded")
    if current.empty:
        raise DriftInputError("no live rows to compare")
    rng = np.random.default_rng(seed)
    mix = _mix(current) if SYMBOL in reference else {}
    rows = _reference_rows(reference, mix, max_reference_rows)
    ref = (
        _sample_like(reference, mix, rows, rng, "the reference")
        if mix
        else reference.iloc[np.sort(rng.choice(len(reference), rows, replace=False))].reset_index(drop=True)
    )
    ref = ref[judged].astype(np.float64)
    cur = current[judged].astype(np.float64).reset_index(drop=True)
    ref_finite = np.isfinite(ref.to_numpy()).all(axis=0)
    if not ref_finite.all():
        bad = judged[int(np.flatnonzero(~ref_finite)[0])]
        raise DriftInputError(f"reference feature {bad!r} is not finite on every row: not a training span's rows")
    nan_counts = {f: int(n) for f, n in cur.isna().sum().items() if n}
    undefined = [f for f in judged if nan_counts.get(f, 0) == len(cur)]
    scored = [f for f in judged if f not in undefined]
    numeric = list(scored)
    categorical = []
    if reference_predictions is not None and PREDICTION in current:
        predictions = reference_predictions
        if PREDICTION not in predictions:
            predictions = predictions.assign(**{PREDICTION: predicted_classes(predictions)})
        sampled = (
            _sample_like(predictions, mix, len(ref), rng, "the reference predictions", replace=True)
            if mix
            else predictions.sample(len(ref), replace=len(predictions) < len(ref), random_state=seed)
        )
        # Drift compares each column's marginal distribution alone, so reference predictions made on
        # other rows than the reference features can sit beside them in one frame.
        ref[PREDICTION] = sampled[PREDICTION].to_numpy()
        cur[PREDICTION] = current[PREDICTION].to_numpy()
        categorical = [PREDICTION]
    figures = {k: float(v) for k, v in (live or {}).items() if v is not None and math.isfinite(v)}
    metrics = [DriftedColumnsCount(columns=scored, method=method, threshold=threshold)]
    metrics += [ValueDrift(column=f, method=method, threshold=threshold) for f in scored]
    if categorical:
        metrics.append(ValueDrift(column=PREDICTION, method=prediction_method, threshold=prediction_threshold))
    metrics += [LiveFigure(figure=k) for k in figures]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    report = Report(metrics, metadata={LIVE_PREFIX + k: repr(v) for k, v in figures.items()})
    when = datetime.combine(day, time()) if day is not None else None  # naive UTC: how the workspace sorts
    with warnings.catch_warnings():
        # Evidently's correlation widgets divide by the zero deviation of constant columns (tick
        # velocity on a simulated index); the drift scores do not use them.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            EvidentlyDataset.from_pandas(cur[numeric + categorical], data_definition=definition),
            EvidentlyDataset.from_pandas(ref[numeric + categorical], data_definition=definition),
            timestamp=when,
            metadata=dict(labels or {}),
            tags=[f"{k}={v}" for k, v in (labels or {}).items()],
        )
    scores = _values(snapshot, "ValueDrift")
    prediction = None
    if categorical:
        shares = {
            side: {c: float((frame[PREDICTION] == c).mean()) for c in CLASS_NAMES}
            for side, frame in (("reference", ref), ("live", cur))
        }
        prediction = PredictionDrift(
            prediction_method, prediction_threshold, scores.pop(PREDICTION), shares["reference"], shares["live"]
        )
    return DriftResult(
        method=method,
        threshold=threshold,
        scores={f: scores[f] for f in scored},
        undefined=undefined,
        prediction=prediction,
        reference_rows=len(ref),
        current_rows=len(cur),
        mix=mix,
        missing=nan_counts,
        excluded=excluded,
        snapshot=snapshot,
    )


# -- the inputs: a day's logged rows, a version's training span -----------------------------------


def live_rows(log: pd.DataFrame, feature_names: list[str], source: str) -> pd.DataFrame:
    """A consolidated prediction log's rows (`monitoring.predlog.read_day`) as a frame of `symbol`, the
    raw features in `feature_names`' order (the bundle's), `prediction` and `latency_ms`.
    DriftInputError naming `source` and the row (its `source:line` when the log has them) when a row's
    feature vector is not `len(feature_names)` long."""
    vectors = log["features"].to_numpy()
    lengths = np.fromiter((len(v) for v in vectors), np.int64, len(vectors))
    wrong = np.flatnonzero(lengths != len(feature_names))
    if len(wrong):
        i = int(wrong[0])
        where = f"{log['source'].iloc[i]}:{log['line'].iloc[i]}" if {"source", "line"} <= set(log) else f"row {i}"
        raise DriftInputError(
            f"{source}: row {i} ({where}) logs {lengths[i]} features, the model's bundle names {len(feature_names)}; "
            f"{len(wrong):,} rows are so (logged by another version of the service?)"
        )
    matrix = np.vstack(vectors).astype(np.float64) if len(vectors) else np.empty((0, len(feature_names)))
    frame = pd.DataFrame(matrix, columns=feature_names)
    frame.insert(0, SYMBOL, log[SYMBOL].to_numpy())
    frame[PREDICTION] = predicted_classes(log.reset_index(drop=True)).to_numpy() if len(log) else pd.Series(dtype=object)
    frame["latency_ms"] = log["latency_ms"].to_numpy(np.float64)
    return frame


@dataclass(frozen=True)
class TrainingReference:
    """What a version is compared with: its training run's dataset, training split and test predictions."""

    registered_model: str
    version: str
    run_id: str
    dataset: str  # the folder
    feature_names: list[str]  # the order the bundle (and the log) use
    features: pd.DataFrame  # symbol + raw features of the training split
    predictions: pd.DataFrame  # symbol + prediction on the test span


def _dataset_folder(tracker: Tracker, run_id: str, named: str) -> str:
    """The local folder the run recorded as its input (`models.tracking.RunLog.dataset`)."""
    inputs = tracker.client.get_run(run_id).inputs
    for entry in inputs.dataset_inputs if inputs else []:
        if entry.dataset.source_type == "local":
            return json.loads(entry.dataset.source)["uri"]
    raise DriftInputError(
        f"{named}: its training run {run_id} records no local dataset folder as input: its training span is unknown"
    )


def load_reference(tracker: Tracker, registered_model: str, version: str) -> TrainingReference:
    """The training split's raw feature rows of `registered_model` v`version` (the dataset folder its
    training run names, checked against the fingerprint it logged) and its test-span predictions."""
    named = f"{registered_model} v{version}"
    try:
        run_id = tracker.version_run_id(registered_model, version)
    except MlflowException as exc:
        raise DriftInputError(f"{named} is not in the model registry ({exc.message})") from exc
    try:
        meta = DatasetMeta.model_validate(tracker.load_dict(run_id, DATASET_META))
    except FileNotFoundError as exc:
        raise DriftInputError(f"{named}: its training run {run_id} has no {DATASET_META}") from exc
    folder = _dataset_folder(tracker, run_id, named)
    try:
        dataset = Dataset.load(folder)
    except FileNotFoundError as exc:
        raise DriftInputError(f"{named}: the dataset {folder} its training run {run_id} read is gone ({exc})") from exc
    if dataset.meta.fingerprint != meta.fingerprint:
        raise DriftInputError(
            f"{named}: the dataset at {folder} (fingerprint {dataset.meta.fingerprint}) is not the one run {run_id} was "
            f"trained on ({meta.fingerprint}): the dataset was rebuilt since; its training span is gone"
        )
    try:
        bundle = tracker.load_dict(run_id, MANIFEST_ARTIFACT)["feature_names"]
    except FileNotFoundError:
        bundle = meta.feature_names  # not exported (yet): the training's own order is the bundle's
    if list(bundle) != meta.feature_names:
        raise DriftInputError(f"{named}: the bundle's {MANIFEST_ARTIFACT} orders the features otherwise than its training run")
    try:
        predictions = pd.read_parquet(tracker.download(run_id, PREDICTIONS_ARTIFACT))
    except FileNotFoundError as exc:
        raise DriftInputError(f"{named}: its training run {run_id} has no {PREDICTIONS_ARTIFACT}") from exc
    train = dataset.rows("train")[[SYMBOL, *meta.feature_names]].reset_index(drop=True)
    classes = pd.DataFrame({SYMBOL: predictions[SYMBOL].to_numpy(), PREDICTION: predicted_classes(predictions).to_numpy()})
    return TrainingReference(registered_model, version, run_id, folder, list(meta.feature_names), train, classes)


# -- the workspace ----------------------------------------------------------------------------------


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One writer at a time (two days materialized side by side would otherwise both create a project)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _panels(result: DriftResult) -> list:
    drift_share = PanelMetric(legend="share", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})
    most = sorted(result.scores, key=lambda f: -result.scores[f])[:MOST_DRIFTED]
    named = f"{result.method} distance (reference standard deviations), drifted at ≥ {result.threshold:g}"
    return [
        text_panel(
            "Drift against the training span",
            "One snapshot per served version and UTC day (drift_report); tags name the version.",
        ),
        counter_panel("Share of drifted features (last)", [drift_share], size="half"),
        counter_panel(
            "Prediction drift (last)",
            [PanelMetric(legend="score", metric="ValueDrift", metric_labels={"column": PREDICTION})],
            size="half",
        ),
        line_plot_panel("Share of drifted features", [drift_share], description=named, size="half"),
        line_plot_panel(
            "Prediction drift (class distribution)",
            [PanelMetric(legend="{{method}}", metric="ValueDrift", metric_labels={"column": PREDICTION})],
            size="half",
        ),
        line_plot_panel(
            "Most-drifted features (of the last snapshot)",
            [PanelMetric(legend=f, metric="ValueDrift", metric_labels={"column": f}) for f in most],
            description=named,
        ),
        line_plot_panel(
            "Live accuracy",
            [PanelMetric(legend="accuracy", metric="LiveFigure", metric_labels={"figure": "accuracy"})],
            description="from live_performance, when it ran on the day first",
            size="half",
        ),
        line_plot_panel(
            "Latency (ms)",
            [PanelMetric(legend=f"p{q}", metric="LiveFigure", metric_labels={"figure": f"latency_p{q}_ms"}) for q in (50, 99)],
            description="logged by the service",
            size="half",
        ),
    ]


def _labels(metadata: dict) -> dict:
    return {k: v for k, v in metadata.items() if not k.startswith(LIVE_PREFIX)}


def record_snapshot(workspace_dir: str | Path, registered_model: str, result: DriftResult) -> str:
    """Put `result`'s snapshot into the local Evidently workspace at `workspace_dir`, in the project
    named `registered_model` (created on first use), replacing a snapshot of the same day and labels
    (a re-materialization); lay out the project's dashboard, its "most drifted" panel following this
    snapshot. Returns the snapshot's id."""
    folder = Path(workspace_dir)
    with _locked(folder):
        workspace = Workspace(str(folder))
        found = workspace.search_project(registered_model)
        project = (
            found[0]
            if found
            else workspace.create_project(
                registered_model, description=f"Feature and prediction drift of {registered_model}'s served versions"
            )
        )
        model = result.snapshot.to_snapshot_model()
        for old in workspace.list_runs(project.id):
            stored = workspace.get_run(project.id, old)
            if stored is not None and stored.timestamp == model.timestamp and _labels(stored.metadata) == _labels(model.metadata):
                workspace.delete_run(project.id, old)
        ref = workspace.add_run(project.id, result.snapshot)
        project.dashboard.clear_dashboard()
        for panel in _panels(result):
            project.dashboard.add_panel(panel)
        return str(ref.id)
