"""Focal loss with optional class weights (Lin et al., 2017)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class FocalLoss(nn.Module):
    """-w_c (1 - p_c)^gamma log p_c for the true class c; gamma = 0 is weighted cross-entropy."""

    def __init__(self, gamma: float = 2.0, weights: torch.Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weights", weights if weights is not None else torch.empty(0), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.weights.numel():
            w = self.weights[target]
            return (w * loss).sum() / w.sum()
        return loss.mean()


MAX_CLASS_WEIGHT = 5.0


def balanced_class_weights(labels: np.ndarray, n_classes: int, cap: float = MAX_CLASS_WEIGHT) -> np.ndarray:
    """n / (k * count_c), as scikit-learn's 'balanced', capped at `cap`; an absent class gets 0.

    The cap matters for a class that barely exists (NEUTRAL with a zero threshold holds only exact
    ties, ~0.1 %): uncapped, its weight of several hundred would make the model chase it.
    """
    return weights_of_counts(np.bincount(labels, minlength=n_classes), cap)


def weights_of_counts(counts: np.ndarray, cap: float = MAX_CLASS_WEIGHT) -> np.ndarray:
    """`balanced_class_weights` from the labels' counts per class (a dataset counted shard by shard)."""
    counts = np.asarray(counts, np.float64)
    weights = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0)
    return np.minimum(weights, cap)
