"""XGBoost on flat feature rows, through the native API so a class absent from training is no error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import xgboost as xgb

from .losses import balanced_class_weights
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
