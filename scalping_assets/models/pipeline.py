"""Train one candidate on a dataset, evaluate it on the test span, and record it in MLflow.

All candidates of a dataset are scored on the same rows: the test rows that have a full window of
`sequence_length` ticks behind them (flat models predict those rows from their own features).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import xgboost as xgb

from ..features.dataset import Dataset
from ..features.labels import PROBABILITY_COLUMNS
from .config import SEQUENCE_KINDS, TrainConfig
from .metrics import calibration_png, classification_metrics, confusion_png, edge_test, importance_png, learning_curves_png
from .tracking import RunLog, Tracker, registered_model_name
from .train import EpochLog, predict_proba, train_torch
from .trees import importance, predict_tree, train_xgboost


@dataclass
class TrainedModel:
    config: TrainConfig
    net: torch.nn.Module | None = None
    booster: xgb.Booster | None = None
    curves: dict[str, list[float]] = field(default_factory=dict)
    best_step: int = 0
    model_uri: str | None = None  # where MLflow holds it, once logged

    def predict(self, dataset: Dataset, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, labels) on the split's rows that have a full window."""
        windows = dataset.windows(split)
        labels = windows.y[windows.ends]
        if self.net is not None:
            return predict_proba(self.net, windows), labels
        return predict_tree(self.booster, windows.x[windows.ends], dataset.feature_names), labels


def fit(dataset: Dataset, config: TrainConfig, on_epoch: Callable[[EpochLog], None] | None = None) -> TrainedModel:
    if config.kind in SEQUENCE_KINDS:
        result = train_torch(config, dataset.windows("train"), dataset.windows("validation"), on_epoch)
        curves = {"train": [h.train_loss for h in result.history], "validation": [h.val_loss for h in result.history]}
        return TrainedModel(config, net=result.model, curves=curves, best_step=result.best_epoch)
    x_train, y_train = dataset.xy("train")
    x_val, y_val = dataset.xy("validation")
    result = train_xgboost(config, x_train, y_train, x_val, y_val, dataset.feature_names)
    return TrainedModel(config, booster=result.booster, curves=result.history, best_step=result.best_iteration)


@dataclass
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
    test_proba: np.ndarray
    test_labels: np.ndarray


def majority_class(dataset: Dataset) -> int:
    labels = dataset.rows("train")[dataset.meta.spec.target].to_numpy(np.int64)
    return int(np.bincount(labels, minlength=3).argmax())


def _log_model(model: TrainedModel, dataset: Dataset, run: RunLog, name: str) -> str:
    windows = dataset.windows("test")
    example_rows = windows.ends[:4]
    if model.net is not None:
        example, _ = windows[example_rows]
        with torch.no_grad():
            output = torch.softmax(model.net(torch.from_numpy(example)), dim=1).numpy()
        return run.model("pytorch", model.net, name, example, output, serialization_format="pickle")
    example = pd.DataFrame(windows.x[example_rows], columns=dataset.feature_names)
    output = predict_tree(model.booster, example.to_numpy(), dataset.feature_names)
    return run.model("xgboost", model.booster, name, example, output)


def train_candidate(
    dataset: Dataset,
    config: TrainConfig,
    tracker: Tracker,
    parent_run_id: str | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> Candidate:
    """Fit, evaluate on the test span, log params/curves/metrics/plots/model, register a version."""
    spec = dataset.meta.spec
    name = f"{config.kind}-seed{config.seed}"
    registered = registered_model_name(spec.symbols, spec.labels.horizon)
    tags = {"model_type": config.kind, "dataset_fingerprint": dataset.meta.fingerprint}
    with tracker.run(name, parent=parent_run_id, tags=tags) as run:
        run.params(config.model_dump() | {"symbols": ",".join(spec.symbols), "horizon": spec.labels.horizon})
        run.params({"target": spec.target, "sequence_length": spec.sequence_length, "n_features": len(dataset.feature_names)})
        run.dict(dataset.meta.model_dump(mode="json"), "dataset_meta.json")

        def log_epoch(log: EpochLog) -> None:
            run.metrics(
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
        if model.booster is not None:
            for step, (train_loss, val_loss) in enumerate(zip(model.curves["train"], model.curves["validation"], strict=True)):
                run.metrics({"train_loss": train_loss, "val_loss": val_loss}, step=step + 1)
            gains = importance(model.booster, dataset.feature_names)
            run.dict(gains, "feature_importance.json")
            run.bytes(importance_png(gains, f"{name}: feature importance"), "plots/feature_importance.png")
        proba, labels = model.predict(dataset, "test")
        xlabel = "epoch" if model.net is not None else "boosting round"
        run.bytes(learning_curves_png(model.curves, f"{name}: learning curves", xlabel), "plots/learning_curves.png")
        run.metrics({"best_step": model.best_step})
        metrics, edge = evaluate_and_log(dataset, run, name, proba, labels)
        model_uri = _log_model(model, dataset, run, "model")
        model.model_uri = model_uri
        version = tracker.register(model_uri, registered, tags)
    return Candidate(
        name,
        config.kind,
        config.model_dump(),
        model,
        metrics,
        edge,
        run.run_id,
        model_uri,
        registered,
        version,
        proba,
        labels,
    )


PREDICTIONS_ARTIFACT = "predictions/test.parquet"


def prediction_frame(dataset: Dataset, proba: np.ndarray) -> pd.DataFrame:
    """Test-span probabilities with the (symbol, epoch) of the tick each was made at: what backtests replay."""
    rows = dataset.rows("test").iloc[dataset.windows("test").ends]
    frame = pd.DataFrame({"symbol": rows["symbol"].to_numpy(), "epoch": rows["epoch"].to_numpy()})
    for i, column in enumerate(PROBABILITY_COLUMNS):
        frame[column] = proba[:, i]
    return frame


def evaluate_and_log(dataset: Dataset, run: RunLog, name: str, proba: np.ndarray, labels: np.ndarray) -> tuple[dict, dict]:
    """Test metrics, the edge test, the test plots and the test predictions, logged to `run`."""
    run.bytes(prediction_frame(dataset, proba).to_parquet(index=False), PREDICTIONS_ARTIFACT)
    metrics = classification_metrics(labels, proba)
    edge = edge_test(labels, proba.argmax(axis=1), majority_class(dataset), dataset.meta.spec.target_lookahead)
    run.metrics({f"test_{k}": v for k, v in metrics.items()} | {f"test_edge_{k}": v for k, v in edge.items()})
    run.bytes(confusion_png(labels, proba, f"{name}: test confusion"), "plots/confusion.png")
    run.bytes(calibration_png(labels, proba, f"{name}: test reliability"), "plots/calibration.png")
    return metrics, edge
