"""Probability calibration of a candidate's three-class output, fitted on the validation span only.

The trading rule reads the probability of the predicted class (`ExecutionConfig.min_confidence`), so
that probability has to mean what it says. What the families hand back need not: class weights
computed over the pooled symbols scale every class's odds by its weight (p_c ∝ w_c q_c at the
weighted loss's optimum), focal loss flattens confident predictions, and a symbol whose class mix
differs from the pool's (CRASH1000: ~99 % UP) is off in its own way. The calibrator here is vector
scaling on log-probabilities, one set per symbol:

    calibrated = softmax(scale ⊙ log(max(p, EPS)) + bias)         (per class c: scale_c, bias_c)

six numbers per symbol (`method="temperature"`: one shared scale, i.e. 1 / T, and three biases),
fitted by minimising the negative log-likelihood of the validation labels (L-BFGS-B, a tiny ridge
towards the identity, bounded). A per-class bias is exactly the correction a class-weighted loss
needs (bias_c = -log w_c), a scale the one a tempered or focal loss needs. A symbol with fewer than
`min_rows` validation rows gets the parameters fitted on all the rows given ("pooled"), as does a
symbol never seen at fit time. A fitted scaling is kept only where it beats the identity in a
likelihood-ratio test (level `alpha`, rows one label horizon apart counted as the independent ones):
an already calibrated model passes through unchanged instead of being bent towards the validation
span's own class mix, which on a symmetric symbol moves the share of rows over the threshold a lot.

Leakage: `fit` reads the rows it is given and nothing else; `fit_validation` gives it the validation
windows of a dataset, never the test span. Applying is a row-wise map (a batch equals its rows
applied one by one), cheap enough to run after the ONNX graph in the serving bundle.

`reliability` bins each class's probability against its observed frequency (with the expected
calibration error), `reliability_png` draws the curves before and after.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..features.labels import CLASSES

if TYPE_CHECKING:
    from ..features.dataset import Dataset

N_CLASSES = len(CLASSES)
ARTIFACT = "calibration.json"  # where a candidate's run keeps its calibration (`Calibration.model_dump(mode="json")`)
EPS = 1e-7  # probabilities are floored here before the log (float32 softmax outputs reach 0)
MIN_SYMBOL_ROWS = 2_000  # validation rows a symbol needs for parameters of its own (~200 independent 10-tick labels)
RIDGE = 1e-4  # pull of (scale - 1, bias) towards the identity: makes the optimum unique, changes nothing visible
SCALE_BOUNDS = (1e-2, 1e2)
BIAS_BOUNDS = (-30.0, 30.0)  # a class absent from a symbol's rows ends at the floor instead of -inf
DEFAULT_BINS = 10
# A fitted scaling replaces the identity only where it is significant at this level (likelihood-ratio
# test on the rows one label horizon apart): an already calibrated model is left alone rather than
# bent towards the validation span's own class mix.
ALPHA = 0.01
Method = Literal["vector", "temperature"]
FREE_PARAMETERS = {"vector": 2 * N_CLASSES - 1, "temperature": N_CLASSES}  # the biases lose one: softmax ignores a shift


class ClassScaling(BaseModel):
    """One symbol's calibration: logits = scale ⊙ log p + bias, then softmax; and how it was fitted."""

    model_config = ConfigDict(extra="forbid")

    scale: list[float] = Field(min_length=N_CLASSES, max_length=N_CLASSES)
    bias: list[float] = Field(min_length=N_CLASSES, max_length=N_CLASSES)
    rows: int = Field(ge=0, description="rows it was fitted on")
    nll_before: float | None = Field(default=None, description="mean negative log-likelihood of those rows, uncalibrated")
    nll_after: float | None = Field(default=None, description="and calibrated")
    lr_statistic: float | None = Field(
        default=None, description="2 (rows / horizon) (NLL before - NLL of the fitted scaling): the likelihood-ratio test's"
    )
    significant: bool = Field(default=True, description="false: the fit did not beat the identity, which is applied instead")

    @property
    def identity(self) -> bool:
        return self.scale == [1.0] * N_CLASSES and self.bias == [0.0] * N_CLASSES

    def apply(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated rows of `proba` (n, 3), computed in float64, returned in `proba`'s float type."""
        if self.identity:
            return np.array(proba)
        logits = np.asarray(self.scale) * np.log(np.maximum(proba.astype(np.float64), EPS)) + np.asarray(self.bias)
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return (odds / odds.sum(axis=1, keepdims=True)).astype(proba.dtype)


IDENTITY = ClassScaling(scale=[1.0] * N_CLASSES, bias=[0.0] * N_CLASSES, rows=0)


class Calibration(BaseModel):
    """Per-symbol vector scaling of class probabilities (JSON: `model_dump_json`/`model_validate_json`)."""

    model_config = ConfigDict(extra="forbid")

    method: Method = "vector"
    classes: list[str] = [c.lower() for c in CLASSES]
    min_rows: int = MIN_SYMBOL_ROWS
    horizon: int = Field(default=1, ge=1, description="rows per independent label in the significance test")
    alpha: float | None = ALPHA
    pooled: ClassScaling  # every row given to `fit`: for symbols with too few rows, and unknown ones
    symbols: dict[str, ClassScaling] = {}  # those with at least `min_rows` rows

    def parameters(self, symbol: str) -> ClassScaling:
        """The parameters `symbol`'s probabilities are calibrated with (its own, else the pooled ones)."""
        return self.symbols.get(symbol, self.pooled)

    def apply(self, proba: np.ndarray, symbols: str | Sequence[str] | np.ndarray) -> np.ndarray:
        """Calibrated probabilities (n, 3) of rows `proba` (n, 3) of `symbols` (one per row, or one for
        all), in `proba`'s float type (float32 stays float32: its rows sum to 1 at float32 precision).
        Row-wise: the same row gives the same answer in any batch."""
        proba = np.asarray(proba)
        if proba.dtype not in (np.float32, np.float64):
            proba = proba.astype(np.float64)
        if proba.ndim != 2 or proba.shape[1] != N_CLASSES:
            raise ValueError(f"probabilities must be (n, {N_CLASSES}), got {proba.shape}")
        if isinstance(symbols, str):
            return self.parameters(symbols).apply(proba)
        symbols = np.asarray(symbols)
        if symbols.shape != (len(proba),):
            raise ValueError(f"one symbol per row: {len(proba)} rows, symbols of shape {symbols.shape}")
        out = np.empty_like(proba)
        for symbol in np.unique(symbols):
            rows = symbols == symbol
            out[rows] = self.parameters(str(symbol)).apply(proba[rows])
        return out


# Every symbol's probabilities as they are: what a model logged, or a bundle exported, before calibration serves.
UNCALIBRATED = Calibration(pooled=IDENTITY)


def _nll(proba: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.maximum(proba[np.arange(len(labels)), labels], EPS))))


def _fit_scaling(proba: np.ndarray, labels: np.ndarray, method: Method, horizon: int, alpha: float | None) -> ClassScaling:
    """Scale and bias minimising the mean NLL of `labels` (+ RIDGE · ‖(scale - 1, bias)‖²); the identity
    instead when the fit's likelihood-ratio statistic over the identity, counted on `rows / horizon`
    independent labels, is below the χ² quantile 1 - `alpha` (None: always the fit)."""
    from scipy.optimize import minimize  # fit-time only: the serving runtime applies, never fits
    from scipy.stats import chi2

    if len(labels) == 0:
        return IDENTITY.model_copy(deep=True)
    z = np.log(np.maximum(proba, EPS))
    onehot = np.eye(N_CLASSES)[labels]
    n_scale = N_CLASSES if method == "vector" else 1

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        scale, bias = theta[:n_scale], theta[n_scale:]
        logits = scale * z + bias
        logits -= logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits).sum(axis=1, keepdims=True))
        log_p = logits - log_norm
        residual = (np.exp(log_p) - onehot) / len(labels)  # d mean-NLL / d logits
        grad_scale = (residual * z).sum(axis=0)
        if n_scale == 1:
            grad_scale = grad_scale.sum(keepdims=True)
        grad = np.concatenate([grad_scale, residual.sum(axis=0)])
        shift = np.concatenate([scale - 1, bias])
        loss = -float((onehot * log_p).sum()) / len(labels) + RIDGE * float(shift @ shift)
        return loss, grad + 2 * RIDGE * shift

    start = np.concatenate([np.ones(n_scale), np.zeros(N_CLASSES)])
    bounds = [SCALE_BOUNDS] * n_scale + [BIAS_BOUNDS] * N_CLASSES
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 500})
    scale = np.broadcast_to(result.x[:n_scale], (N_CLASSES,))
    fitted = ClassScaling(
        scale=[float(s) for s in scale],
        bias=[float(b) for b in result.x[n_scale:]],
        rows=len(labels),
        nll_before=_nll(proba, labels),
    )
    fitted.nll_after = _nll(fitted.apply(proba), labels)
    fitted.lr_statistic = 2 * len(labels) / horizon * (fitted.nll_before - fitted.nll_after)
    if alpha is not None and fitted.lr_statistic < chi2.isf(alpha, FREE_PARAMETERS[method]):
        identity = IDENTITY.model_copy(update={"rows": len(labels), "nll_before": fitted.nll_before, "significant": False})
        return identity.model_copy(update={"nll_after": fitted.nll_before, "lr_statistic": fitted.lr_statistic})
    return fitted


def fit(
    proba: np.ndarray,
    labels: np.ndarray,
    symbols: Sequence[str] | np.ndarray,
    method: Method = "vector",
    min_rows: int = MIN_SYMBOL_ROWS,
    horizon: int = 1,
    alpha: float | None = ALPHA,
) -> Calibration:
    """Calibration of probabilities `proba` (n, 3) against `labels` (n,) of rows of `symbols` (n,):
    pooled over all rows, and per symbol for every symbol with at least `min_rows` rows. Give it the
    validation span's predictions: it uses exactly the rows it is given. `horizon`: rows per
    independent label (a dataset's `target_lookahead`: consecutive rows' labels overlap), for the
    significance test at level `alpha` that keeps a scaling only where it beats the identity."""
    proba = np.asarray(proba, np.float64)
    labels = np.asarray(labels, np.int64)
    symbols = np.asarray(symbols)
    if proba.ndim != 2 or proba.shape[1] != N_CLASSES or labels.shape != (len(proba),) or symbols.shape != (len(proba),):
        raise ValueError(
            f"need proba (n, {N_CLASSES}), labels (n,), symbols (n,); got {proba.shape}, {labels.shape}, {symbols.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise ValueError(f"labels must be class indices 0..{N_CLASSES - 1}")
    per_symbol = {}
    for symbol in sorted(set(symbols.tolist())):
        rows = symbols == symbol
        if rows.sum() >= min_rows:
            per_symbol[str(symbol)] = _fit_scaling(proba[rows], labels[rows], method, horizon, alpha)
    pooled = _fit_scaling(proba, labels, method, horizon, alpha)
    return Calibration(method=method, min_rows=min_rows, horizon=horizon, alpha=alpha, pooled=pooled, symbols=per_symbol)


class SplitPredictor(Protocol):
    """A fitted model (`TrainedModel`, the ensemble's stack with its bases) that answers a dataset's split."""

    def predict(self, dataset: Dataset, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (n, 3), labels (n,)) of the split's rows that have a full window."""
        ...


def window_symbols(dataset: Dataset, split: str) -> np.ndarray:
    """The symbol of each row `SplitPredictor.predict(dataset, split)` answers (rows with a full window)."""
    return dataset.rows(split)["symbol"].to_numpy()[dataset.windows(split).ends]


def fit_validation(
    model: SplitPredictor,
    dataset: Dataset,
    method: Method = "vector",
    min_rows: int = MIN_SYMBOL_ROWS,
    alpha: float | None = ALPHA,
) -> Calibration:
    """The calibration of a fitted model on its dataset's validation span (never the test span)."""
    proba, labels = model.predict(dataset, "validation")
    horizon = dataset.meta.spec.target_lookahead
    return fit(proba, labels, window_symbols(dataset, "validation"), method, min_rows, horizon, alpha)


# Reliability -------------------------------------------------------------------------------------


class ReliabilityCurve(BaseModel):
    """One class: per non-empty bin of its predicted probability, the mean prediction, the observed
    frequency of the class and the row count; the expected calibration error over the bins
    (Σ n_b / n · |predicted_b - observed_b|)."""

    label: str
    predicted: list[float]
    observed: list[float]
    counts: list[int]
    ece: float


def reliability(proba: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS) -> dict[str, ReliabilityCurve]:
    """Per class (by lower-case name): the reliability curve over `bins` equal-width bins of [0, 1]."""
    proba = np.asarray(proba, np.float64)
    labels = np.asarray(labels, np.int64)
    edges = np.linspace(0, 1, bins + 1)
    curves = {}
    for c, name in enumerate(CLASSES):
        which = np.clip(np.digitize(proba[:, c], edges) - 1, 0, bins - 1)
        counts = np.bincount(which, minlength=bins)
        hit = np.bincount(which, weights=(labels == c).astype(np.float64), minlength=bins)
        mass = np.bincount(which, weights=proba[:, c], minlength=bins)
        filled = counts > 0
        predicted, observed = mass[filled] / counts[filled], hit[filled] / counts[filled]
        ece = float(np.sum(counts[filled] * np.abs(predicted - observed)) / max(len(labels), 1))
        curves[name.lower()] = ReliabilityCurve(
            label=name, predicted=predicted.tolist(), observed=observed.tolist(), counts=counts[filled].tolist(), ece=ece
        )
    return curves


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS) -> dict[str, float]:
    """Per class (lower-case name): the expected calibration error of its probability."""
    return {name: curve.ece for name, curve in reliability(proba, labels, bins).items()}


def _draw(ax, curves: dict[str, ReliabilityCurve], title: str, min_count: int) -> None:
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    for curve in curves.values():
        keep = [i for i, n in enumerate(curve.counts) if n >= min_count]
        ax.plot(
            [curve.predicted[i] for i in keep],
            [curve.observed[i] for i in keep],
            marker="o",
            markersize=3,
            linewidth=1,
            label=f"{curve.label} (ECE {curve.ece:.3f})",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6, loc="upper left")
    ax.grid(alpha=0.3)


def reliability_png(
    labels: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    title: str,
    symbols: Sequence[str] | np.ndarray | None = None,
    bins: int = DEFAULT_BINS,
    min_count: int = 20,
) -> bytes:
    """Reliability curves before (left) and after (right) calibration: all rows, then one row of panels
    per symbol when `symbols` names several; bins with fewer than `min_count` rows are not drawn (they
    still count in the ECE)."""
    import matplotlib.pyplot as plt

    from ..plotting import figure_png

    labels = np.asarray(labels, np.int64)
    groups: list[tuple[str, np.ndarray]] = [("all symbols", np.ones(len(labels), bool))]
    if symbols is not None:
        symbols = np.asarray(symbols)
        names = sorted(set(symbols.tolist()))
        if len(names) > 1:  # a single symbol's panels would repeat the first row's
            groups += [(str(s), symbols == s) for s in names]
    fig, axes = plt.subplots(len(groups), 2, figsize=(8, 3.6 * len(groups)), dpi=80, squeeze=False)
    for row, (name, rows) in enumerate(groups):
        for col, (stage, proba) in enumerate((("before", before), ("after", after))):
            curves = reliability(np.asarray(proba)[rows], labels[rows], bins)
            _draw(axes[row, col], curves, f"{name}: {stage} calibration ({int(rows.sum()):,} rows)", min_count)
            axes[row, col].set_xlabel("predicted probability", fontsize=7)
            axes[row, col].set_ylabel("observed frequency", fontsize=7)
    fig.suptitle(title, fontsize=9)
    return figure_png(fig)
