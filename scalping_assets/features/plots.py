"""Pictures of a dataset: feature correlations and how much each feature tells about the label.

Both are computed within each symbol: pooled over symbols, a feature that merely identifies the
symbol (its volatility level, say) would look informative whenever the symbols' label mixes differ.
Mutual information is estimated on rows at least one label look-ahead apart: labels of neighbouring
ticks share most of their future, so on consecutive rows any slowly varying feature (the hour, a
long volatility window) "predicts" the label of its time neighbours and looks informative. The
k-nearest-neighbour estimator is also biased upwards on small samples and tied values (a constant
column scores about 0.02 nats), so the chart shows the excess over the same estimate with shuffled
labels: a feature with nothing to say reads about 0. A column constant within a symbol (the tick
rate of a fixed-interval index, say) scores exactly 0 and is not estimated: constancy is judged by
the column's spread against its magnitude, not by a standard deviation above 0, because the float32
standard deviation of a constant column is rounding error (about 1e-5 at a scaled value of 100), which the
estimator would rescale to unit variance and read as a signal.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from sklearn.feature_selection import mutual_info_classif

from ..plotting import figure_png

MAX_ROWS = 10_000
SHUFFLES = 3
NOISE = "_noise"  # per group: spread of the shuffled-label estimates, the chart's resolution
CONSTANT_ULPS = 16  # a spread within this many units in the last place of the column's largest value is rounding


def _sample(rows: np.ndarray, stride: int, seed: int) -> np.ndarray:
    rows = rows[::stride]
    if len(rows) <= MAX_ROWS:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, MAX_ROWS, replace=False))


def constant_columns(x: np.ndarray) -> np.ndarray:
    """Per column of `x` (rows x columns): True where max - min is within rounding of the column's largest
    magnitude, i.e. the column holds one value up to the precision of its dtype (float64 for integers).
    Exact: no sum is taken, so no accumulated rounding can make a constant column look varying."""
    x = np.asarray(x)
    if len(x) == 0:
        return np.ones(x.shape[1:], dtype=bool)
    eps = np.finfo(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64).eps
    low, high = x.min(axis=0).astype(np.float64), x.max(axis=0).astype(np.float64)
    magnitude = np.maximum(np.abs(low), np.abs(high))
    return high - low <= CONSTANT_ULPS * eps * magnitude


def mutual_information(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, names: list[str], stride: int, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per group (symbol): mutual information (nats) of each feature with the label above its
    shuffled-label baseline, on every `stride`-th row (pass the label look-ahead), at most 10k of them.
    A column constant within the group (`constant_columns`) scores 0 there without being estimated."""
    rng = np.random.default_rng(seed)
    result = {}
    for group in np.unique(groups):
        rows = _sample(np.flatnonzero(groups == group), stride, seed)
        varying = ~constant_columns(x[rows])  # a constant column says nothing; the estimator would see noise
        xs, excess, noise = x[rows][:, varying], np.zeros(len(names)), 0.0
        if varying.any():
            real = mutual_info_classif(xs, y[rows], random_state=seed)
            null = np.array([mutual_info_classif(xs, rng.permutation(y[rows]), random_state=seed) for _ in range(SHUFFLES)])
            excess[varying], noise = real - null.mean(axis=0), float(null.std())
        result[str(group)] = dict(zip(names, map(float, excess), strict=True))
        result[str(group)][NOISE] = noise
    return result


def within_group_correlation(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Mean over groups of each group's Pearson correlation matrix (0 for a column constant in the group)."""
    matrices = []
    for group in np.unique(groups):
        part = x[groups == group]
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.atleast_2d(np.nan_to_num(np.corrcoef(part, rowvar=False)))
        constant = constant_columns(part)
        corr[constant, :] = corr[:, constant] = 0.0  # rounding noise would otherwise correlate at random
        matrices.append(corr)
    return np.mean(matrices, axis=0)


def correlation_heatmap_png(x: np.ndarray, groups: np.ndarray, names: list[str], title: str) -> bytes:
    corr = within_group_correlation(x, groups)
    fig, ax = plt.subplots(figsize=(9, 8), dpi=80)
    image = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="Pearson correlation (mean within symbol)")
    return figure_png(fig)


def mutual_information_png(scores: dict[str, dict[str, float]], title: str) -> bytes:
    """Features (rows, most informative first) by symbol (columns), each cell annotated."""
    groups = list(scores)
    features = [n for n in scores[groups[0]] if n != NOISE]
    names = sorted(features, key=lambda n: -np.mean([scores[g][n] for g in groups]))
    values = np.array([[scores[g][n] for g in groups] for n in names])
    fig, ax = plt.subplots(figsize=(2.2 + 1.3 * len(groups), 0.24 * len(names) + 1.4), dpi=80)
    image = ax.imshow(values, cmap="viridis", aspect="auto", vmin=0, vmax=max(values.max(), 1e-3))
    ax.set_xticks(range(len(groups)), [f"{g}\nnoise ±{scores[g][NOISE]:.3f}" for g in groups], fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    for (i, j), value in np.ndenumerate(values):
        ax.text(
            j, i, f"{value:.3f}", ha="center", va="center", fontsize=6, color="white" if value < values.max() / 2 else "black"
        )
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="mutual information above shuffled labels (nats)")
    return figure_png(fig)
