"""The XGBoost family: boosted trees on each window's last row (`trees`), with per-round losses and
feature importance logged, exported through onnxmltools (its TreeEnsemble op keeps XGBoost's float32
thresholds, so nothing is lost). Trees have no MatMul for INT8 to quantise."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xgboost as xgb
from onnxmltools.convert import convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType

from ..features.sharded import ShardedDataset
from .family import ModelFamily, OnEpoch, TrainedModel, last_rows
from .metrics import importance_png
from .trees import importance, predict_tree, train_xgboost, train_xgboost_parts

if TYPE_CHECKING:
    from ..features.dataset import Dataset, SequenceWindows
    from .config import TrainConfig
    from .tracking import RunLog

XGBOOST_OPSET = 15  # the highest onnxmltools' XGBoost converter supports


class XGBoostFamily(ModelFamily[xgb.Booster]):
    kind = "xgboost"
    flavor = "xgboost"
    input = "features"
    step = "boosting round"

    def fit(
        self, dataset: Dataset | ShardedDataset, config: TrainConfig, on_epoch: OnEpoch | None = None
    ) -> TrainedModel[xgb.Booster]:
        if isinstance(dataset, ShardedDataset):  # months of rows: XGBoost reads them shard by shard
            train, validation = (lambda: dataset.parts("train")), (lambda: dataset.parts("validation"))
            result = train_xgboost_parts(config, train, validation, dataset.feature_names, dataset.class_counts("train"))
        else:
            x_train, y_train = dataset.xy("train")
            x_val, y_val = dataset.xy("validation")
            result = train_xgboost(config, x_train, y_train, x_val, y_val, dataset.feature_names)
        return TrainedModel(
            family=self, config=config, model=result.booster, curves=result.history, best_step=result.best_iteration
        )

    def predict(self, model: xgb.Booster, windows: SequenceWindows) -> np.ndarray:
        return predict_tree(model, last_rows(windows))

    def log_training(self, trained: TrainedModel[xgb.Booster], run: RunLog, dataset: Dataset, title: str) -> None:
        # Rounds are not epochs: nothing reported them while boosting, so their losses are logged here.
        curves = trained.curves
        for step, (train_loss, val_loss) in enumerate(zip(curves["train"], curves["validation"], strict=True), start=1):
            run.curves({"train_loss": train_loss, "val_loss": val_loss}, step=step)
        gains = importance(trained.model, dataset.feature_names)
        run.dict(gains, "feature_importance.json")
        run.bytes(importance_png(gains, f"{title}: feature importance"), "plots/feature_importance.png")

    def to_onnx(self, model: xgb.Booster, n_features: int, window: int) -> bytes:
        booster = model[: model.best_iteration + 1]
        booster.feature_names = None  # the converter wants f0..fN
        graph = convert_xgboost(
            booster, initial_types=[("features", FloatTensorType([None, n_features]))], target_opset=XGBOOST_OPSET
        )
        return graph.SerializeToString()
