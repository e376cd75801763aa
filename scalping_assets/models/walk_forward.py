"""Walk-forward evaluation: refit a model on each expanding-window fold and score it on the block after.

The folds come from `features.dataset.walk_forward_datasets` (purged, embargoed, fitted features and
normaliser per fold). Any model family plugs in as a `fit_predict(fold) -> (probabilities, labels)`
on the fold's test rows, so the ensemble is walked forward exactly like its bases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import matplotlib.pyplot as plt
import numpy as np

from ..features.dataset import Dataset
from ..plotting import figure_png
from .config import TrainConfig
from .metrics import classification_metrics, edge_test, sign_test
from .pipeline import fit, majority_class
from .tracking import Tracker

FitPredict = Callable[[Dataset], tuple[np.ndarray, np.ndarray]]
FOLD_METRICS = ("accuracy", "log_loss", "brier")


@dataclass
class FoldResult:
    fold: int
    test_from: int
    test_until: int | None
    train_rows: int
    test_rows: int
    accuracy: float
    log_loss: float
    brier: float
    majority_accuracy: float  # on the fold's independent test rows, training majority class
    wins_over_majority: int  # independent rows the model gets right and the majority rule wrong
    losses_to_majority: int  # and the reverse
    p_value: float


@dataclass
class WalkForwardResult:
    folds: list[FoldResult]

    def aggregate(self) -> dict[str, float]:
        """Mean and std over folds, the mean excess over the majority class, and the combined p-value:
        one sign test over every fold's discordant rows (the folds' test blocks are disjoint in time,
        so their rows are independent trials of the same paired comparison)."""
        result = {}
        for name in FOLD_METRICS:
            values = [getattr(f, name) for f in self.folds]
            result |= {f"{name}_mean": float(np.mean(values)), f"{name}_std": float(np.std(values))}
        result["excess_accuracy_mean"] = float(np.mean([f.accuracy - f.majority_accuracy for f in self.folds]))
        wins, losses = sum(f.wins_over_majority for f in self.folds), sum(f.losses_to_majority for f in self.folds)
        result["combined_p_value"] = sign_test(wins, losses)
        return result

    def records(self) -> list[dict]:
        return [asdict(f) for f in self.folds]


def model_fit_predict(config: TrainConfig) -> FitPredict:
    def fit_predict(fold: Dataset) -> tuple[np.ndarray, np.ndarray]:
        return fit(fold, config).predict(fold, "test")

    return fit_predict


def walk_forward(
    folds: list[Dataset], fit_predict: FitPredict, on_fold: Callable[[int, Dataset], None] | None = None
) -> WalkForwardResult:
    results = []
    for k, fold in enumerate(folds, start=1):
        if on_fold:
            on_fold(k, fold)
        proba, labels = fit_predict(fold)
        metrics = classification_metrics(labels, proba)
        edge = edge_test(labels, proba.argmax(axis=1), majority_class(fold), fold.meta.spec.target_lookahead)
        results.append(
            FoldResult(
                fold=k,
                test_from=fold.meta.boundaries[1],
                test_until=fold.meta.until,
                train_rows=fold.meta.rows["train"],
                test_rows=len(labels),
                accuracy=metrics["accuracy"],
                log_loss=metrics["log_loss"],
                brier=metrics["brier"],
                majority_accuracy=edge["majority_accuracy"],
                wins_over_majority=edge["wins_over_majority"],
                losses_to_majority=edge["losses_to_majority"],
                p_value=edge["p_value"],
            )
        )
    return WalkForwardResult(results)


def walk_forward_png(result: WalkForwardResult, title: str) -> bytes:
    folds = [f.fold for f in result.folds]
    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=90)
    ax.plot(folds, [f.accuracy for f in result.folds], marker="o", label="model")
    ax.plot(
        folds, [f.majority_accuracy for f in result.folds], marker="s", linestyle="--", color="crimson", label="majority class"
    )
    for f in result.folds:
        ax.annotate(
            f"p={f.p_value:.2g}", (f.fold, f.accuracy), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7
        )
    ax.set_xticks(folds, [f"fold {k}\n{f.train_rows:,} train" for k, f in zip(folds, result.folds, strict=True)], fontsize=7)
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure_png(fig)


def log_walk_forward(
    tracker: Tracker, name: str, result: WalkForwardResult, parent_run_id: str | None, tags: dict[str, str]
) -> str:
    """One MLflow run per walk-forward: per-fold metrics as steps, the aggregate, the fold chart."""
    about = (
        f"Walk-forward of {name}: refitted on {len(result.folds)} expanding-window folds, each scored on the "
        "block after it (`wf_*`: per fold as steps, then the mean, std and combined p-value)."
    )
    tags = tags | {"walk_forward": "true"}
    with tracker.run(f"{name}-walk-forward", parent=parent_run_id, tags=tags, description=about) as run:
        run.params({"folds": len(result.folds)})
        for f in result.folds:
            run.metrics({f"wf_{k}": getattr(f, k) for k in (*FOLD_METRICS, "majority_accuracy", "p_value")}, step=f.fold)
        run.metrics({f"wf_{k}": v for k, v in result.aggregate().items()})
        run.dict({"folds": result.records(), "aggregate": result.aggregate()}, "walk_forward.json")
        run.bytes(walk_forward_png(result, f"{name}: walk-forward"), "plots/walk_forward.png")
    return run.run_id
