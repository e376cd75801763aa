"""Stacked ensemble: a logistic-regression meta-learner on out-of-fold predictions of the base models.

The training span is cut in time into K blocks. For each block, every base model is fitted on the
other blocks (purged: rows whose label resolves inside the block, or that lie within the embargo
after it, are left out) and predicts the block. The meta-learner is fitted on those out-of-fold
predictions only, never on a base model's predictions of its own training rows. At test time the
base models fitted on the whole training span feed it. Its output is calibrated on the validation span
like any candidate's (`pipeline.evaluate_and_log`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression

from ..features.dataset import Dataset, SequenceWindows, resolve_epochs
from ..features.labels import CLASSES
from .calibration import SplitPredictor
from .config import TrainConfig
from .family import TrainedModel
from .pipeline import Candidate, describe_dataset, evaluate_and_log, fit, log_dataset, model_description, version_description
from .tracking import Tracker, registered_model_name

BASES_ARTIFACT = "bases.json"


@dataclass
class Fold:
    trained_on: np.ndarray  # frame row labels the fold's base models were fitted on
    predicted: np.ndarray  # frame row labels they predicted (the held-out block, rows with a full window)


@dataclass
class StackedEnsemble:
    meta: LogisticRegression
    folds: list[Fold] = field(default_factory=list)
    oof_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def predict(self, base_probabilities: list[np.ndarray]) -> np.ndarray:
        return self.meta.predict_proba(np.hstack(base_probabilities))


class LoggedPredictionsError(ValueError):
    """A base's logged predictions do not fit the dataset's split: the message names the base and the split."""


@dataclass
class LoggedBase:
    """A base model with its own predictions of `dataset`'s splits, as its training run logged them
    (`pipeline.RAW_PREDICTIONS_ARTIFACT`): the same model on the same windows, so the stack's calibration
    and evaluation read them rather than predicting every window again. Other datasets and splits are
    predicted."""

    base: TrainedModel
    dataset: Dataset
    logged: dict[str, np.ndarray]

    def predict(self, dataset: Dataset, split: str) -> tuple[np.ndarray, np.ndarray]:
        if dataset is not self.dataset or split not in self.logged:
            return self.base.predict(dataset, split)
        windows, proba = dataset.windows(split), self.logged[split]
        if proba.shape != (len(windows), len(CLASSES)):
            raise LoggedPredictionsError(
                f"{self.base.config.kind} ({self.base.model_uri}): logged {split} predictions have shape "
                f"{proba.shape}, the dataset's {split} split has {len(windows)} windows"
            )
        return proba, windows.y[windows.ends]


@dataclass
class FittedStack:
    """The stack with the fitted base models that feed it: answers a dataset's split as a `TrainedModel`
    does (a `calibration.SplitPredictor`)."""

    stack: StackedEnsemble
    bases: list[SplitPredictor]

    def predict(self, dataset: Dataset, split: str) -> tuple[np.ndarray, np.ndarray]:
        predictions = [base.predict(dataset, split) for base in self.bases]
        return self.stack.predict([p for p, _ in predictions]), predictions[0][1]


def _fold_dataset(dataset: Dataset, train_rows: np.ndarray, held_out: np.ndarray) -> Dataset:
    """The dataset with `train_rows` as training and `held_out` as test; validation kept for early stopping."""
    frame = dataset.frame.copy()
    split = np.where(frame["split"].to_numpy() == "validation", "validation", None).astype(object)
    split[train_rows] = "train"
    split[held_out] = "test"
    frame["split"] = split
    return Dataset(frame, dataset.meta)


def purged_blocks(dataset: Dataset, k: int, embargo_ticks: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, held-out rows) per time block of the training span, purged and embargoed."""
    frame = dataset.frame
    train = np.flatnonzero(frame["split"].to_numpy() == "train")
    epochs = frame["epoch"].to_numpy()[train]
    edges = np.quantile(epochs, np.linspace(0, 1, k + 1), method="lower")
    edges[-1] = epochs.max() + 1
    resolve = resolve_epochs(frame)[train]
    ticks = frame["tick"].to_numpy()[train]
    symbols = frame["symbol"].to_numpy()[train]
    blocks = []
    for i in range(k):
        start, end = edges[i], edges[i + 1]
        held = (epochs >= start) & (epochs < end)
        # Purge: a training label may not reach into the block; embargo: skip the ticks right after it.
        leaks = (epochs < start) & (resolve >= start)
        after = np.zeros(len(train), bool)
        for symbol in np.unique(symbols):
            mine = symbols == symbol
            first_after = ticks[mine & (epochs >= end)]
            if first_after.size:
                after |= mine & (ticks >= first_after.min()) & (ticks < first_after.min() + embargo_ticks)
        blocks.append((train[~held & ~leaks & ~after], train[held]))
    return blocks


def held_out_windows(windows: SequenceWindows, limit: int | None, fold: int) -> SequenceWindows:
    """The held-out block's windows the bases predict for the meta-learner: all of them, or a sample of
    `limit` (seeded by the fold, in time order), so that a re-run predicts the same rows."""
    if limit is None or len(windows) <= limit:
        return windows
    chosen = np.random.default_rng(fold).choice(len(windows), limit, replace=False)
    return dataclasses.replace(windows, ends=windows.ends[np.sort(chosen)])


def fit_stack(
    dataset: Dataset,
    configs: list[TrainConfig],
    folds: int = 3,
    embargo_ticks: int | None = None,
    on_fold: Callable[[int, TrainConfig], None] | None = None,
    max_oof_windows: int | None = None,
) -> StackedEnsemble:
    """Out-of-fold base predictions over the training span (`max_oof_windows` per block at most), then
    the meta-learner on them."""
    embargo = dataset.meta.spec.split.embargo_ticks if embargo_ticks is None else embargo_ticks
    oof_features, oof_labels, oof_rows, records = [], [], [], []
    for i, (train_rows, held_out) in enumerate(purged_blocks(dataset, folds, embargo)):
        fold = _fold_dataset(dataset, train_rows, held_out)
        windows = held_out_windows(fold.windows("test"), max_oof_windows, i)
        predicted = fold.rows("test").index.to_numpy()[windows.ends]
        labels = windows.y[windows.ends]
        probabilities = []
        for config in configs:
            if on_fold:
                on_fold(i, config)
            base = fit(fold, config)
            probabilities.append(base.family.predict(base.model, windows))
        oof_features.append(np.hstack(probabilities))
        oof_labels.append(labels)
        oof_rows.append(predicted)
        records.append(Fold(trained_on=train_rows, predicted=predicted))
    x, y = np.vstack(oof_features), np.concatenate(oof_labels)
    meta = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
    return StackedEnsemble(meta, records, np.concatenate(oof_rows))


def train_ensemble(
    dataset: Dataset,
    bases: list[TrainedModel],
    tracker: Tracker,
    parent_run_id: str | None = None,
    folds: int = 2,
    on_fold: Callable[[int, TrainConfig], None] | None = None,
    dataset_name: str | None = None,
    dataset_source: str | None = None,
    max_oof_windows: int | None = None,
    logged: list[dict[str, np.ndarray]] | None = None,
) -> Candidate:
    """Stack the fitted `bases`: out-of-fold training of the meta-learner (on `max_oof_windows` per
    block at most), calibration on the validation span and evaluation on the test span through the
    bases' own predictions (`logged`: per base, those its training run logged of `dataset`), logged and
    registered like any candidate (`dataset_name`, `dataset_source`: as for `train_candidate`)."""
    spec = dataset.meta.spec
    configs = [base.config for base in bases]
    registered = registered_model_name(spec.symbols, spec.labels.horizon)
    tags = {"model_type": "ensemble", "dataset_fingerprint": dataset.meta.fingerprint}
    kinds = ", ".join(f"{c.kind} (seed {c.seed})" for c in configs)
    about = (
        f"ensemble: a logistic regression stacking {kinds} on {folds}-fold out-of-fold predictions, "
        f"on {describe_dataset(dataset, dataset_name)}."
    )
    with tracker.run("ensemble", parent=parent_run_id, tags=tags, description=about) as run:
        # The bases' configs (seeds and hyper-parameters) identify the trial (backtest.trials) as much as
        # the stack's own params: their hash is a param, the configs themselves an artifact.
        base_configs = json.dumps([c.model_dump() for c in configs], sort_keys=True, default=str)
        run.params(
            {
                "folds": folds,
                "max_oof_windows": max_oof_windows,
                "bases": ",".join(c.kind for c in configs),
                "meta_learner": "LogisticRegression(C=1)",
                "base_configs_sha256": hashlib.sha256(base_configs.encode()).hexdigest(),
            }
        )
        run.dict({c.kind: c.model_dump() for c in configs}, "base_configs.json")
        log_dataset(run, dataset, dataset_name, dataset_source)
        # What serving needs to rebuild the stack: the logged base models the meta-learner reads.
        run.dict({"bases": [{"kind": b.config.kind, "model_uri": b.model_uri} for b in bases]}, BASES_ARTIFACT)
        stack = fit_stack(dataset, configs, folds, on_fold=on_fold, max_oof_windows=max_oof_windows)
        run.metrics({"oof_rows": len(stack.oof_rows)})
        predictors = bases if logged is None else [LoggedBase(b, dataset, p) for b, p in zip(bases, logged, strict=True)]
        evaluation = evaluate_and_log(dataset, run, "ensemble", FittedStack(stack, predictors))
        windows = dataset.windows("test")
        first = dataclasses.replace(windows, ends=windows.ends[:4])
        example = np.hstack([base.family.predict(base.model, first) for base in bases])
        model_uri = run.model("sklearn", stack.meta, "meta_learner", example)
        described = version_description(
            "ensemble", dataset, dataset_name, evaluation.metrics, evaluation.edge, tracker.run_url(run.run_id)
        )
        version = tracker.register(model_uri, registered, tags, described)
        tracker.describe_model(registered, model_description(dataset))
        run.describe(f"{about} Registered as [{registered} v{version}]({tracker.model_version_url(registered, version)}).")
    return Candidate(
        name="ensemble",
        kind="ensemble",
        config={"folds": folds, "max_oof_windows": max_oof_windows, "bases": [c.model_dump() for c in configs]},
        model=stack,
        metrics=evaluation.metrics,
        edge=evaluation.edge,
        run_id=run.run_id,
        model_uri=model_uri,
        registered_name=registered,
        version=version,
        test_proba=evaluation.proba,
        test_labels=evaluation.labels,
        calibration=evaluation.calibration,
    )


def ensemble_fit_predict(
    configs: list[TrainConfig], folds: int = 2, max_oof_windows: int | None = None
) -> Callable[[Dataset], tuple[np.ndarray, np.ndarray]]:
    """Walk-forward twin of `train_ensemble`: the bases and the stack both refitted on the fold."""

    def fit_predict(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
        stack = fit_stack(dataset, configs, folds, max_oof_windows=max_oof_windows)
        return FittedStack(stack, [fit(dataset, config) for config in configs]).predict(dataset, "test")

    return fit_predict
