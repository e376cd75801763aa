"""The torch sequence families (LSTM, CNN, Transformer): a net over the whole window per kind, trained
by `train.train_torch`, logged with MLflow's pytorch flavor, exported by `torch.onnx` with a softmax
on top. Their MatMuls make INT8 dynamic quantisation worth measuring."""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .family import PROBABILITIES, ModelFamily, OnEpoch, TrainedModel
from .nets import CNNMicrostructure, LSTMScalper, TransformerScalper
from .train import NetBuilder, predict_proba, train_torch

if TYPE_CHECKING:
    from ..features.dataset import Dataset, SequenceWindows
    from ..features.sharded import ShardedDataset
    from .config import TrainConfig

TORCH_OPSET = 17


class TorchFamily(ModelFamily[nn.Module]):
    flavor = "pytorch"
    input = "window"
    quantisable = True
    log_options = {"serialization_format": "pickle"}
    load_options = {"map_location": "cpu"}  # a net trained on a GPU serves and exports from the CPU

    def __init__(self, kind: str, build: NetBuilder):
        self.kind, self.build = kind, build

    def fit(
        self, dataset: Dataset | ShardedDataset, config: TrainConfig, on_epoch: OnEpoch | None = None
    ) -> TrainedModel[nn.Module]:
        # A sharded dataset's windows read memory-mapped arrays: a batch loads the rows it needs.
        result = train_torch(config, self.build, dataset.windows("train"), dataset.windows("validation"), on_epoch)
        curves = {"train": [h.train_loss for h in result.history], "validation": [h.val_loss for h in result.history]}
        return TrainedModel(family=self, config=config, model=result.model, curves=curves, best_step=result.best_epoch)

    def predict(self, model: nn.Module, windows: SequenceWindows) -> np.ndarray:
        return predict_proba(model, windows)

    def to_onnx(self, model: nn.Module, n_features: int, window: int) -> bytes:
        net = nn.Sequential(model, nn.Softmax(dim=1)).eval()
        example = torch.zeros(1, window, n_features, device=next(model.parameters()).device)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                net,
                (example,),
                buffer,
                input_names=["window"],
                output_names=[PROBABILITIES],
                dynamic_axes={"window": {0: "batch"}, PROBABILITIES: {0: "batch"}},
                opset_version=TORCH_OPSET,
                dynamo=False,
            )
        return buffer.getvalue()


TORCH_FAMILIES = (
    TorchFamily("lstm", lambda c, n: LSTMScalper(n, c.hidden, c.layers, c.heads, c.dropout)),
    TorchFamily("cnn", lambda c, n: CNNMicrostructure(n, c.hidden, c.layers, c.kernel, c.dropout)),
    TorchFamily("transformer", lambda c, n: TransformerScalper(n, c.hidden, c.layers, c.heads, c.dropout)),
)
