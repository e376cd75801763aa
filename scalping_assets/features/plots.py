"""Pictures of a dataset: feature correlations and how much each feature tells about the label."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from sklearn.feature_selection import mutual_info_classif

from ..plotting import figure_png

MAX_ROWS = 20_000


def _sample(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= MAX_ROWS:
        return x, y
    rows = np.sort(np.random.default_rng(seed).choice(len(x), MAX_ROWS, replace=False))
    return x[rows], y[rows]


def mutual_information(x: np.ndarray, y: np.ndarray, names: list[str], seed: int = 0) -> dict[str, float]:
    """Mutual information (nats) of each feature with the label, on at most 20k sampled rows."""
    xs, ys = _sample(x, y, seed)
    scores = mutual_info_classif(xs, ys, random_state=seed)
    return dict(zip(names, map(float, scores), strict=True))


def correlation_heatmap_png(x: np.ndarray, names: list[str], title: str) -> bytes:
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(x, rowvar=False))  # a constant column correlates with nothing
    fig, ax = plt.subplots(figsize=(9, 8), dpi=80)
    image = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="Pearson correlation")
    return figure_png(fig)


def importance_chart_png(scores: dict[str, float], title: str, xlabel: str = "mutual information with the label (nats)") -> bytes:
    ordered = sorted(scores.items(), key=lambda item: item[1])
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(ordered) + 1.2), dpi=80)
    ax.barh([name for name, _ in ordered], [value for _, value in ordered], color="#4477aa")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    return figure_png(fig)
