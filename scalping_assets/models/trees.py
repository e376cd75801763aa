"""XGBoost on flat feature rows, through the native API so a class absent from training is no error."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xgboost as xgb

from .losses import balanced_class_weights, weights_of_counts
from .nets import N_CLASSES

if TYPE_CHECKING:  # config imports the families, which import this module
    from .config import TrainConfig


@dataclass
class TreeResult:
    booster: xgb.Booster
    history: dict[str, list[float]] = field(default_factory=dict)  # mlogloss per round, train and validation
    best_iteration: int = 0


def train_xgboost(
    config: TrainConfig, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, feature_names: list[str]
) -> TreeResult:
    weights = balanced_class_weights(y_train, N_CLASSES)[y_train] if config.class_weights else None
    train = xgb.DMatrix(x_train, label=y_train, weight=weights, feature_names=feature_names)
    val = xgb.DMatrix(x_val, label=y_val, feature_names=feature_names)
    return boost(config, train, val)


Parts = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]  # a fresh pass over (features, labels) parts


class _PartIter(xgb.DataIter):
    """Hands XGBoost one part (a dataset shard) at a time; XGBoost calls `reset` before each pass."""

    def __init__(self, parts: Parts, feature_names: list[str], class_weights: np.ndarray | None, cache: Path):
        super().__init__(cache_prefix=str(cache))
        self._parts, self._names, self._weights = parts, feature_names, class_weights
        self._pass: Iterator[tuple[np.ndarray, np.ndarray]] | None = None

    def next(self, input_data: Callable) -> bool:
        self._pass = self._pass or self._parts()
        part = next(self._pass, None)
        if part is None:
            return False
        x, y = part
        weight = None if self._weights is None else self._weights[y]
        input_data(data=x, label=y, weight=weight, feature_names=self._names)
        return True

    def reset(self) -> None:
        self._pass = None


def train_xgboost_parts(
    config: TrainConfig, train: Parts, validation: Parts, feature_names: list[str], train_counts: np.ndarray
) -> TreeResult:
    """`train_xgboost` on data that need not fit in memory: XGBoost's external-memory path
    (`ExtMemQuantileDMatrix`) reads the parts one at a time into quantised pages cached on disk, so
    memory holds the pages' index, the gradients and the model, not the rows. The histogram bins come
    from a sketch over the parts rather than over one matrix, so the splits can differ slightly from
    `train_xgboost`'s (`train_counts`: the training labels per class, for class weights)."""
    weights = weights_of_counts(train_counts) if config.class_weights else None
    with tempfile.TemporaryDirectory(prefix="xgb-cache-") as cache:
        matrix = xgb.ExtMemQuantileDMatrix(_PartIter(train, feature_names, weights, Path(cache) / "train"))
        val = xgb.ExtMemQuantileDMatrix(_PartIter(validation, feature_names, None, Path(cache) / "val"), ref=matrix)
        result = boost(config, matrix, val)
        del matrix, val  # their cache files go before their folder does
    return result


def boost(config: TrainConfig, train: xgb.DMatrix, val: xgb.DMatrix) -> TreeResult:
    """Boost `config`'s trees on `train`, early-stopping on `val`'s multi-class log-loss."""
    params = {
        "objective": "multi:softprob",
        "num_class": N_CLASSES,
        "eval_metric": "mlogloss",
        "max_depth": config.max_depth,
        "eta": config.tree_learning_rate,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "seed": config.seed,
        "tree_method": "hist",
        "nthread": 0,
    }
    history: dict = {}
    booster = xgb.train(
        params,
        train,
        num_boost_round=config.n_estimators,
        evals=[(train, "train"), (val, "validation")],
        early_stopping_rounds=config.early_stopping_rounds,
        evals_result=history,
        verbose_eval=False,
    )
    curves = {name: values["mlogloss"] for name, values in history.items()}
    return TreeResult(booster, curves, int(booster.best_iteration))


def predict_tree(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    """Probabilities (n, 3) of flat rows `x` (columns in training order) from the best iteration."""
    matrix = xgb.DMatrix(x, feature_names=booster.feature_names)
    return booster.predict(matrix, iteration_range=(0, booster.best_iteration + 1))


def importance(booster: xgb.Booster, feature_names: list[str]) -> dict[str, float]:
    """Total gain per feature, normalised to sum to 1 (features never split on score 0)."""
    gain = booster.get_score(importance_type="total_gain")
    total = sum(gain.values()) or 1.0
    return {name: gain.get(name, 0.0) / total for name in feature_names}
