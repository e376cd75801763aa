"""Classification metrics, the honest baselines, and the pictures a person wants to look at."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import binom
from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

from ..features.labels import CLASSES
from ..plotting import figure_png
from .nets import N_CLASSES


def classification_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, per-class precision/recall/F1, log-loss and multi-class Brier score."""
    predicted = proba.argmax(axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(y, predicted, labels=list(range(N_CLASSES)), zero_division=0)
    onehot = np.eye(N_CLASSES)[y]
    result = {
        "accuracy": float((predicted == y).mean()),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-12, 1), labels=list(range(N_CLASSES)))),
        "brier": float(((proba - onehot) ** 2).sum(axis=1).mean()),
    }
    for i, name in enumerate(CLASSES):
        result |= {f"precision_{name}": float(precision[i]), f"recall_{name}": float(recall[i]), f"f1_{name}": float(f1[i])}
    return result


def independent_rows(n: int, horizon: int) -> np.ndarray:
    """Every horizon-th row: their labels look at disjoint stretches of the future."""
    return np.arange(0, n, max(1, horizon))


def edge_test(y: np.ndarray, predicted: np.ndarray, majority_class: int, horizon: int) -> dict[str, float]:
    """The model against always answering the training majority class, on the same rows: an exact
    one-sided McNemar (sign) test, mid-p, on the rows where exactly one of the two is right.

    Rows are one label horizon apart (overlapping labels are not independent trials). Pairing matters:
    the majority rule's accuracy on the test span is itself a noisy estimate, and a no-skill model that
    happens to favour a class that is more frequent in this span would "beat" it if that accuracy were
    taken as a known constant. On the discordant rows, under "no better than the majority rule", the
    model is the one that is right with probability at most 1/2, whatever the span's class mix.
    """
    rows = independent_rows(len(y), horizon)
    model_right = predicted[rows] == y[rows]
    rule_right = y[rows] == majority_class
    wins, losses = int((model_right & ~rule_right).sum()), int((~model_right & rule_right).sum())
    return {
        "independent_rows": len(rows),
        "accuracy": float(model_right.mean()) if len(rows) else math.nan,
        "majority_accuracy": float(rule_right.mean()) if len(rows) else math.nan,
        "wins_over_majority": wins,
        "losses_to_majority": losses,
        "p_value": sign_test(wins, losses),
    }


def sign_test(wins: int, losses: int) -> float:
    """One-sided mid-p of `wins` among `wins + losses` fair coin flips (1.0 with none).

    The exact test's size sits well below alpha at a few hundred discordant rows; the mid-p keeps it
    near alpha (Fagerland, Lydersen & Laake 2013), which the calibration test checks on null data.
    """
    n = wins + losses
    return float(binom.sf(wins, n, 0.5) + 0.5 * binom.pmf(wins, n, 0.5)) if n else 1.0


def confusion_png(y: np.ndarray, proba: np.ndarray, title: str) -> bytes:
    matrix = confusion_matrix(y, proba.argmax(axis=1), labels=list(range(N_CLASSES)))
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=90)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, f"{count:,}", ha="center", va="center", color="black" if count < matrix.max() / 2 else "white")
    ax.set_xticks(range(N_CLASSES), CLASSES)
    ax.set_yticks(range(N_CLASSES), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return figure_png(fig)


def learning_curves_png(curves: dict[str, list[float]], title: str, xlabel: str = "epoch") -> bytes:
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=90)
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure_png(fig)


def importance_png(scores: dict[str, float], title: str) -> bytes:
    ordered = sorted(scores.items(), key=lambda item: item[1])
    fig, ax = plt.subplots(figsize=(6, 0.22 * len(ordered) + 1.2), dpi=80)
    ax.barh([name for name, _ in ordered], [value for _, value in ordered], color="#4477aa")
    ax.set_xlabel("share of total gain")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    return figure_png(fig)
