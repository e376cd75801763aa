"""Train one candidate on a dataset, calibrate it on the validation span, evaluate it on the test span,
and record it in MLflow.

All candidates of a dataset are scored on the same rows: the test rows that have a full window of
`sequence_length` ticks behind them (flat models predict those rows from their own features). What is
scored, logged as the test predictions (what backtests replay and the entry threshold reads) and
served is the calibrated probabilities (`models.calibration`); the model's own output is kept for the
before/after comparison only.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..backtest.engine import ExecutionConfig, signal_sides
from ..features.dataset import Dataset
from ..features.labels import PROBABILITY_COLUMNS
from . import calibration
from .calibration import Calibration, SplitPredictor
from .config import TrainConfig
from .families import family
from .family import EpochLog, OnEpoch, TrainedModel
from .metrics import classification_metrics, confusion_png, edge_test, learning_curves_png
from .tracking import TEST, RunLog, Tracker, finite_metrics, registered_model_name


def fit(dataset: Dataset, config: TrainConfig, on_epoch: OnEpoch | None = None) -> TrainedModel:
    """Fit `config`'s model family on `dataset`."""
    return family(config.kind).fit(dataset, config, on_epoch)


def load_trained(tracker: Tracker, config: TrainConfig, model_uri: str) -> TrainedModel:
    """A logged model back from MLflow as its family's fitted model (a base of the ensemble)."""
    model_family = family(config.kind)
    return TrainedModel(family=model_family, config=config, model=model_family.load(tracker, model_uri), model_uri=model_uri)


@dataclass(kw_only=True)
class Candidate:
    """A trained, evaluated and logged model."""

    name: str
    kind: str
    config: dict
    model: object  # TrainedModel, or the StackedEnsemble
    metrics: dict[str, float]
    edge: dict[str, float]
    run_id: str
    model_uri: str
    registered_name: str
    version: str
    test_proba: np.ndarray  # calibrated: what was scored and logged
    test_labels: np.ndarray
    calibration: Calibration  # fitted on the validation span; logged as `calibration.ARTIFACT`


def majority_class(dataset: Dataset) -> int:
    labels = dataset.rows("train")[dataset.meta.spec.target].to_numpy(np.int64)
    return int(np.bincount(labels, minlength=3).argmax())


def dataset_label(dataset: Dataset, name: str | None = None) -> str:
    """What a dataset is called in MLflow: its name (the Dagster partition), else its symbols and days."""
    spec = dataset.meta.spec
    return name or f"{'+'.join(spec.symbols)} {spec.start}..{spec.end}"


def log_dataset(run: RunLog, dataset: Dataset, name: str | None = None, source: str | None = None) -> None:
    """The dataset as the run's input (name, fingerprint as digest, split sizes) and its metadata."""
    run.dict(dataset.meta.model_dump(mode="json"), "dataset_meta.json")
    rows = {f"{split}_rows": int(n) for split, n in dataset.meta.rows.items()}
    run.dataset(dataset.frame, dataset_label(dataset, name), dataset.meta.fingerprint, source, **rows)


def describe_dataset(dataset: Dataset, name: str | None = None) -> str:
    """One line for descriptions: which dataset, what it holds."""
    spec, meta = dataset.meta.spec, dataset.meta
    return (
        f"dataset `{dataset_label(dataset, name)}` (fingerprint `{meta.fingerprint}`): {', '.join(spec.symbols)}, "
        f"{spec.start} to {spec.end}, target `{spec.target}` {spec.target_lookahead} ticks ahead, "
        f"{meta.rows.get('train', 0):,} training / {meta.rows.get('validation', 0):,} validation / "
        f"{meta.rows.get('test', 0):,} test rows"
    )


def model_description(dataset: Dataset) -> str:
    """The registered model's description: what its versions are and how the gate uses them."""
    spec = dataset.meta.spec
    return (
        f"Classifiers of the {spec.target} label (DOWN / NEUTRAL / UP, {spec.target_lookahead} ticks ahead) for "
        f"{', '.join(spec.symbols)} (horizon {spec.labels.horizon}). One version per trained candidate (its "
        "family in the tag `model_type`), each described with its dataset, test metrics, backtest and gate "
        "verdict. The promotion gate points `@champion` (what the service serves), `@challenger` and "
        "`@previous` at versions."
    )


def version_description(name: str, dataset: Dataset, dataset_name: str | None, metrics: dict, edge: dict, run_url: str) -> str:
    """A version's `model` section: what was trained, on which dataset, how it scored on the test span."""
    return (
        f"{name} trained on {describe_dataset(dataset, dataset_name)}, its probabilities calibrated per symbol "
        f"on the validation span (`{calibration.ARTIFACT}`, applied by the serving bundle). Test accuracy "
        f"{metrics['accuracy']:.4f} against {edge['majority_accuracy']:.4f} for the majority class "
        f"(edge p = {edge['p_value']:.3g}). [Training run]({run_url})."
    )


def train_candidate(
    dataset: Dataset,
    config: TrainConfig,
    tracker: Tracker,
    parent_run_id: str | None = None,
    on_epoch: OnEpoch | None = None,
    dataset_name: str | None = None,
    dataset_source: str | None = None,
) -> Candidate:
    """Fit, calibrate on the validation span, evaluate on the test span, log params/curves/metrics/plots/
    model/calibration, register a version. `dataset_name` (the Dagster partition) and `dataset_source`
    (its folder) name the run's input."""
    spec = dataset.meta.spec
    name = f"{config.kind}-seed{config.seed}"
    registered = registered_model_name(spec.symbols, spec.labels.horizon)
    tags = {"model_type": config.kind, "dataset_fingerprint": dataset.meta.fingerprint}
    about = f"{name} ({config.kind}, seed {config.seed}) on {describe_dataset(dataset, dataset_name)}."
    with tracker.run(name, parent=parent_run_id, tags=tags, description=about) as run:
        params = config.model_dump(exclude={"params"}) | {f"params.{k}": v for k, v in config.params.items()}
        run.params(params | {"symbols": ",".join(spec.symbols), "horizon": spec.labels.horizon})
        run.params({"target": spec.target, "sequence_length": spec.sequence_length, "n_features": len(dataset.feature_names)})
        log_dataset(run, dataset, dataset_name, dataset_source)

        def log_epoch(log: EpochLog) -> None:
            run.curves(
                {
                    "train_loss": log.train_loss,
                    "val_loss": log.val_loss,
                    "val_accuracy": log.val_accuracy,
                    "lr": log.learning_rate,
                },
                step=log.epoch,
            )
            if on_epoch:
                on_epoch(log)

        model = fit(dataset, config, log_epoch)
        model.family.log_training(model, run, dataset, name)
        if model.curves:
            title = f"{name}: learning curves"
            run.bytes(learning_curves_png(model.curves, title, model.family.step), "plots/learning_curves.png")
        run.curves({"best_step": model.best_step}, step=0)
        evaluation = evaluate_and_log(dataset, run, name, model)
        model.model_uri = model.family.log(model.model, run, "model", dataset)
        described = version_description(
            name, dataset, dataset_name, evaluation.metrics, evaluation.edge, tracker.run_url(run.run_id)
        )
        version = tracker.register(model.model_uri, registered, tags, described)
        tracker.describe_model(registered, model_description(dataset))
        run.describe(f"{about} Registered as [{registered} v{version}]({tracker.model_version_url(registered, version)}).")
    return Candidate(
        name=name,
        kind=config.kind,
        config=config.model_dump(),
        model=model,
        metrics=evaluation.metrics,
        edge=evaluation.edge,
        run_id=run.run_id,
        model_uri=model.model_uri,
        registered_name=registered,
        version=version,
        test_proba=evaluation.proba,
        test_labels=evaluation.labels,
        calibration=evaluation.calibration,
    )


PREDICTIONS_ARTIFACT = "predictions/test.parquet"
# Tag: a hash of the test predictions. Two runs with the same digest made the same predictions, so the
# same trades: one trial for the deflated Sharpe ratio (backtest.trials), however often it was re-run.
DIGEST_TAG = "predictions_digest"
DIGEST_DECIMALS = 6  # probabilities are hashed rounded, so float noise below 1e-6 does not split a trial


def prediction_frame(dataset: Dataset, proba: np.ndarray) -> pd.DataFrame:
    """Test-span probabilities with the (symbol, epoch) of the tick each was made at: what backtests replay."""
    rows = dataset.rows("test").iloc[dataset.windows("test").ends]
    frame = pd.DataFrame({"symbol": rows["symbol"].to_numpy(), "epoch": rows["epoch"].to_numpy()})
    for i, column in enumerate(PROBABILITY_COLUMNS):
        frame[column] = proba[:, i]
    return frame


def predictions_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of a prediction frame: its rows in (symbol, epoch) order, probabilities rounded to
    DIGEST_DECIMALS; independent of the row order and of the frame's index."""
    ordered = frame.sort_values(["symbol", "epoch"], kind="stable")
    scale = 10.0**DIGEST_DECIMALS
    quantised = np.rint(ordered[PROBABILITY_COLUMNS].to_numpy(np.float64) * scale).astype("<i8")
    digest = hashlib.sha256()
    digest.update("\x1f".join(ordered["symbol"].astype(str)).encode())
    digest.update(ordered["epoch"].to_numpy().astype("<i8").tobytes())
    digest.update(np.ascontiguousarray(quantised).tobytes())
    return digest.hexdigest()


# The model's own (uncalibrated) probabilities of the validation and test windows, one array per split:
# the ensemble's calibration and evaluation read its bases' from here instead of predicting them again.
RAW_PREDICTIONS_ARTIFACT = "predictions/raw.npz"


@dataclass
class Recorded:
    """A `SplitPredictor` that keeps the probabilities `model` answered, per split."""

    model: SplitPredictor
    answers: dict[str, np.ndarray] = field(default_factory=dict)

    def predict(self, dataset: Dataset, split: str) -> tuple[np.ndarray, np.ndarray]:
        proba, labels = self.model.predict(dataset, split)
        self.answers[split] = proba
        return proba, labels


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


UNCALIBRATED = "uncalibrated/"  # metric prefix (under `test/`): the same figure of the model's own output


def calibration_metrics(labels: np.ndarray, proba: np.ndarray, symbols: np.ndarray) -> dict[str, float]:
    """Per class, the expected calibration error (`ece_<class>`); at the backtest's default entry
    threshold, the share of test rows that signal an entry (`signal_share`) and the share of those
    that go long (`long_share`, and `<symbol>/long_share`; absent without signals)."""
    metrics = {f"ece_{name}": ece for name, ece in calibration.expected_calibration_error(proba, labels).items()}
    sides = signal_sides(proba, ExecutionConfig().min_confidence)
    metrics["signal_share"] = float(np.mean(sides != 0))
    groups = {"": np.ones(len(sides), bool)} | {f"{symbol}/": symbols == symbol for symbol in np.unique(symbols)}
    for prefix, rows in groups.items():
        signals = sides[rows & (sides != 0)]
        metrics[f"{prefix}long_share"] = float(np.mean(signals == 1)) if len(signals) else np.nan
    return finite_metrics(metrics)


@dataclass
class Evaluation:
    """A fitted model's calibration (fitted on the validation span) and its calibrated test evaluation."""

    calibration: Calibration
    proba: np.ndarray  # calibrated test probabilities
    labels: np.ndarray
    metrics: dict[str, float]  # of the calibrated probabilities; `uncalibrated/…`: of the model's own
    edge: dict[str, float]


def evaluate_and_log(dataset: Dataset, run: RunLog, name: str, model: SplitPredictor) -> Evaluation:
    """Calibrate `model` on the validation span (never the test span), then evaluate its calibrated test
    probabilities: metrics (`test/…`, with the calibration figures of the model's own output under
    `test/uncalibrated/…`), the edge test, the confusion matrix and the reliability before and after;
    log the calibration, the calibrated test predictions (with their digest as a tag) and the model's
    own predictions of both spans to `run`."""
    recorded = Recorded(model)
    fitted = calibration.fit_validation(recorded, dataset)
    raw, labels = recorded.predict(dataset, "test")
    run.bytes(_npz_bytes(recorded.answers), RAW_PREDICTIONS_ARTIFACT)
    symbols = calibration.window_symbols(dataset, "test")
    proba = fitted.apply(raw, symbols)
    run.dict(fitted.model_dump(mode="json"), calibration.ARTIFACT)
    frame = prediction_frame(dataset, proba)
    run.bytes(frame.to_parquet(index=False), PREDICTIONS_ARTIFACT)
    run.tag(DIGEST_TAG, predictions_digest(frame))
    before = calibration_metrics(labels, raw, symbols)
    metrics = classification_metrics(labels, proba) | calibration_metrics(labels, proba, symbols)
    metrics |= {f"{UNCALIBRATED}{k}": v for k, v in before.items()}
    edge = edge_test(labels, proba.argmax(axis=1), majority_class(dataset), dataset.meta.spec.target_lookahead)
    run.metrics({f"{TEST}{k}": v for k, v in metrics.items()} | {f"{TEST}edge_{k}": v for k, v in edge.items()})
    run.bytes(confusion_png(labels, proba, f"{name}: test confusion"), "plots/confusion.png")
    title = f"{name}: test reliability (calibrated on the validation span)"
    run.bytes(calibration.reliability_png(labels, raw, proba, title, symbols), "plots/reliability.png")
    return Evaluation(calibration=fitted, proba=proba, labels=labels, metrics=metrics, edge=edge)
