"""Training loop of the torch models: cross-entropy (focal and class-weighted if configured), AdamW,
OneCycleLR, gradient clipping, early stopping on validation loss, seeded and deterministic; a GPU when
one is present."""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..features.dataset import SequenceWindows
from .family import EpochLog, OnEpoch
from .losses import FocalLoss, balanced_class_weights
from .nets import N_CLASSES

if TYPE_CHECKING:  # config imports the families, which import this module
    from .config import TrainConfig

NetBuilder = Callable[["TrainConfig", int], nn.Module]  # (config, number of features) -> an untrained net


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class TorchResult:
    model: nn.Module
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0


def _sample(n: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    index = np.arange(n)
    return index if limit is None or n <= limit else np.sort(rng.choice(index, limit, replace=False))


def _batches(windows: SequenceWindows, index: np.ndarray, size: int, device: torch.device):
    for start in range(0, len(index), size):
        x, y = windows[index[start : start + size]]
        yield torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)


@torch.no_grad()
def predict_proba(model: nn.Module, windows: SequenceWindows, index: np.ndarray | None = None, batch: int = 1024) -> np.ndarray:
    """Class probabilities (n, 3) of the windows (all, or `index`)."""
    model.eval()
    device = next(model.parameters()).device
    index = np.arange(len(windows)) if index is None else index
    out = [torch.softmax(model(x), dim=1).cpu().numpy() for x, _ in _batches(windows, index, batch, device)]
    return np.concatenate(out) if out else np.zeros((0, N_CLASSES), np.float32)


def train_torch(
    config: TrainConfig,
    build: NetBuilder,
    train: SequenceWindows,
    validation: SequenceWindows,
    on_epoch: OnEpoch | None = None,
) -> TorchResult:
    """Train the net `build` makes (after seeding: its initial weights follow the seed); the returned
    model holds the weights of the best validation epoch."""
    if len(train) == 0 or len(validation) == 0:
        raise ValueError(f"no windows to train on ({len(train)} training, {len(validation)} validation)")
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    device = pick_device()
    train_index = _sample(len(train), config.max_train_windows, rng)
    val_index = _sample(len(validation), config.max_eval_windows, rng)
    model = build(config, train.x.shape[1]).to(device)
    y_train = train.y[train.ends[train_index]]
    weights = torch.tensor(balanced_class_weights(y_train, N_CLASSES), dtype=torch.float32) if config.class_weights else None
    loss_fn = FocalLoss(config.focal_gamma, weights).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps = -(-len(train_index) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate, total_steps=config.epochs * steps)
    result = TorchResult(model)
    best_loss, best_state, waited = float("inf"), copy.deepcopy(model.state_dict()), 0
    y_val = torch.from_numpy(validation.y[validation.ends[val_index]]).to(device)
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = rng.permutation(train_index)
        total, seen = 0.0, 0
        for x, y in _batches(train, order, config.batch_size, device):
            optimiser.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimiser.step()
            schedule.step()
            total += loss.item() * len(y)
            seen += len(y)
        training_seconds = time.perf_counter() - started
        probabilities = torch.from_numpy(predict_proba(model, validation, val_index)).to(device)
        val_loss = float(loss_fn(torch.log(probabilities.clamp_min(1e-12)), y_val))
        seconds = time.perf_counter() - started
        log = EpochLog(
            epoch=epoch,
            train_loss=total / seen,
            val_loss=val_loss,
            val_accuracy=float((probabilities.argmax(1) == y_val).float().mean()),
            learning_rate=schedule.get_last_lr()[0],
            seconds=seconds,
            samples_per_second=seen / training_seconds,
        )
        result.history.append(log)
        if on_epoch:
            on_epoch(log)
        if val_loss < best_loss:
            best_loss, best_state, waited, result.best_epoch = val_loss, copy.deepcopy(model.state_dict()), 0, epoch
        else:
            waited += 1
            if waited >= config.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return result
