"""The model-family interface: what one kind of model does, from a training dataset to an ONNX graph,
and the fitted model it hands back.

A family fits itself on a `Dataset`, predicts class probabilities of a split's windows, logs its
native model to an MLflow run and loads it back, records what its fit has beyond every candidate's
common record, and converts its native model to the ONNX graph a serving bundle runs. Training,
evaluation, registration, the ensemble, export (bundle, parity, INT8 choice) and serving are the
same for every family; they reach the native model only through these methods. Families are looked
up by kind in `families`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from ..features.dataset import Dataset, SequenceWindows
    from .config import TrainConfig
    from .tracking import RunLog, Tracker

PROBABILITIES = "probabilities"  # the output of every part's ONNX graph: (B, 3) class probabilities
Input = Literal["window", "features"]  # the whole window (B, L, F), or its last row (B, F)
Native = TypeVar("Native")  # a family's own model object: a torch module, an XGBoost booster, ...


@dataclass
class EpochLog:
    """One epoch of a family that trains in epochs, reported as it ends."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    learning_rate: float
    seconds: float  # the whole epoch, validation included
    samples_per_second: float  # training windows per second of the training pass alone


OnEpoch = Callable[[EpochLog], None]


class NoParams(BaseModel):
    """The hyper-parameters of a family that has none beyond TrainConfig's shared fields."""

    model_config = ConfigDict(extra="forbid")


def last_rows(windows: SequenceWindows) -> np.ndarray:
    """Each window's last row (n, F): what a family with `input = "features"` reads."""
    return windows.x[windows.ends]


class ModelFamily(ABC, Generic[Native]):
    """One kind of model. A subclass sets the attributes below and implements `fit`, `predict` and
    `to_onnx`; logging and loading through its MLflow flavor come with the base class."""

    kind: str  # the registry key: TrainConfig.kind, the runs' `model_type` tag, a bundle part's name
    flavor: str  # the MLflow flavor (tracking.RunLog.model, Tracker.load_model) of its native model
    input: Input
    quantisable: bool = False  # whether INT8 dynamic quantisation of its weights can pay (MatMul-heavy graphs)
    step: str = "epoch"  # what one point of its learning curves is
    params: type[BaseModel] = NoParams  # its own hyper-parameters, validated from TrainConfig.params
    log_options: ClassVar[dict[str, Any]] = {}  # extra arguments of the flavor's log_model
    load_options: ClassVar[dict[str, Any]] = {}  # and of its load_model

    @abstractmethod
    def fit(self, dataset: Dataset, config: TrainConfig, on_epoch: OnEpoch | None = None) -> TrainedModel[Native]:
        """Fit on the training split (the validation split for early stopping); `on_epoch` hears every epoch."""

    @abstractmethod
    def predict(self, model: Native, windows: SequenceWindows) -> np.ndarray:
        """Class probabilities (n, 3) of every window."""

    @abstractmethod
    def to_onnx(self, model: Native, n_features: int, window: int) -> bytes:
        """An ONNX graph of `model` with a dynamic batch axis: its one input reads what `input` says
        (windows of `window` rows of `n_features`, or their last rows), its output `PROBABILITIES`."""

    def params_of(self, config: TrainConfig) -> BaseModel:
        """The family's own hyper-parameters in `config`, typed."""
        return self.params.model_validate(config.params)

    def log_training(self, trained: TrainedModel[Native], run: RunLog, dataset: Dataset, title: str) -> None:
        """What a fit has beyond every candidate's record (metrics, plots, curves as a picture): none by default."""

    def log(self, model: Native, run: RunLog, name: str, dataset: Dataset) -> str:
        """Log the native model into `run` as `name` with the first test windows as input example and
        their probabilities as the signature's output; returns the model's URI."""
        windows = dataset.windows("test")
        sample = dataclasses.replace(windows, ends=windows.ends[:4])
        if self.input == "window":
            example: Any = sample[np.arange(len(sample))][0]
        else:
            example = pd.DataFrame(last_rows(sample), columns=dataset.feature_names)
        return run.model(self.flavor, model, name, example, self.predict(model, sample), **self.log_options)

    def load(self, tracker: Tracker, model_uri: str) -> Native:
        """The native model logged (or registered) at `model_uri`."""
        return tracker.load_model(self.flavor, model_uri, **self.load_options)


@dataclass(kw_only=True)
class TrainedModel(Generic[Native]):
    """A fitted model of one family, with the config it was fitted with."""

    family: ModelFamily[Native]
    config: TrainConfig
    model: Native
    curves: dict[str, list[float]] = field(default_factory=dict)  # loss per step: "train", "validation"
    best_step: int = 0  # the step whose model was kept (early stopping)
    model_uri: str | None = None  # where MLflow holds it, once logged

    def predict(self, dataset: Dataset, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, labels) on the split's rows that have a full window."""
        windows = dataset.windows(split)
        return self.family.predict(self.model, windows), windows.y[windows.ends]
