"""GARCH(1,1) volatility: parameters fitted once by `arch` on the training span, then filtered forward.

The one-step forecast at tick t is exactly what `arch` forecasts for the same parameters from the last
`window` returns r_{t-window+1..t}: the recursion starts at arch's own backcast (an exponentially
weighted mean of the window's first 75 squared residuals) and runs to t. Starting every forecast from a
fixed-length window, rather than from the first tick ever seen, gives the feature a finite look-back:
it cannot depend on where a file or a live stream begins. Nothing is refitted per tick. (arch also
clips each variance of its recursion at a loose lower bound, 1e-8 of the sample variance or 1e-6 of an
EWMA; with fitted parameters it is never reached, and the test compares on fitted parameters.)

Unrolled, with e_j = r_j - mu and b the backcast:
    sigma2_{t+1} = omega * sum_{j<W} beta^j + alpha * sum_{j<W} beta^j e_{t-j}^2 + beta^W (omega + (alpha + beta) b)
computed for all t at once from one IIR pass (y_t = e_t^2 + beta y_{t-1}, so the windowed sum is
y_t - beta^W y_{t-W}) and one 75-tap correlation for the backcasts.
"""

from __future__ import annotations

import itertools
import math
import operator
import warnings
from collections import deque

import numpy as np
from pydantic import BaseModel
from scipy.signal import lfilter

BACKCAST_TAPS = 75  # arch's backcast: 0.94^i weights over the first 75 squared residuals
BACKCAST_DECAY = 0.94
DEFAULT_MAX_FIT_OBS = 100_000


class GarchParams(BaseModel):
    """Constant-mean GARCH(1,1) in basis points per tick."""

    mu: float
    omega: float
    alpha: float
    beta: float
    nobs: int
    converged: bool
    note: str = ""

    def as_arch(self) -> np.ndarray:
        """Parameters in arch's order for `arch_model(..., mean='Constant', vol='GARCH')`."""
        return np.array([self.mu, self.omega, self.alpha, self.beta])


def _backcast_weights(window: int) -> np.ndarray:
    w = BACKCAST_DECAY ** np.arange(min(BACKCAST_TAPS, window))
    return w / w.sum()


def fit_garch(returns_bp: np.ndarray, max_obs: int = DEFAULT_MAX_FIT_OBS) -> GarchParams:
    """Maximum-likelihood GARCH(1,1) on the most recent `max_obs` training returns (basis points).

    The fit runs on returns standardised by their standard deviation (arch's optimiser is happiest at
    unit scale); the parameters are mapped back to basis points. A series arch cannot fit (constant
    moves, as on Step indices) gets the constant-variance model, flagged as not converged.
    """
    r = np.asarray(returns_bp, np.float64)
    r = r[np.isfinite(r)][-max_obs:]
    if len(r) < 100:
        raise ValueError(f"GARCH needs at least 100 training returns, got {len(r)}")
    scale = float(np.std(r))
    if scale == 0 or not math.isfinite(scale):
        return GarchParams(
            mu=float(np.mean(r)), omega=0.0, alpha=0.0, beta=0.0, nobs=len(r), converged=False, note="constant returns"
        )
    from arch import arch_model  # only the fit needs arch: the service filters forward without it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = arch_model(r / scale, mean="Constant", vol="GARCH", p=1, q=1, dist="normal", rescale=False).fit(
            disp="off", show_warning=False
        )
    mu, omega, alpha, beta = (float(v) for v in result.params[["mu", "omega", "alpha[1]", "beta[1]"]])
    if result.convergence_flag != 0 or not all(map(math.isfinite, (mu, omega, alpha, beta))):
        var = float(np.var(r))
        return GarchParams(
            mu=float(np.mean(r)), omega=var, alpha=0.0, beta=0.0, nobs=len(r), converged=False, note="arch did not converge"
        )
    return GarchParams(mu=mu * scale, omega=omega * scale**2, alpha=alpha, beta=beta, nobs=len(r), converged=True)


def _geometric(beta: float, window: int) -> float:
    return float(window) if beta == 1 else (1 - beta**window) / (1 - beta)


def garch_variance(returns_bp: np.ndarray, params: GarchParams, window: int) -> np.ndarray:
    """sigma2_{t+1} at each tick t from r_{t-window+1..t} (r[0] is ignored); NaN for t < window."""
    n = len(returns_bp)
    out = np.full(n, np.nan)
    if n <= window:
        return out
    e2 = (np.asarray(returns_bp, np.float64) - params.mu) ** 2
    e2[0] = 0.0
    y = lfilter([1.0], [1.0, -params.beta], e2)
    decay = params.beta**window
    windowed = y[window:] - decay * y[:-window]
    weights = _backcast_weights(window)
    backcast = np.correlate(e2[1:], weights, mode="valid")  # backcast[j] starts at return j + 1
    start = backcast[: n - window]  # window of t starts at return t - window + 1
    out[window:] = (
        params.omega * _geometric(params.beta, window)
        + params.alpha * windowed
        + decay * (params.omega + (params.alpha + params.beta) * start)
    )
    return out


class GarchFilter:
    """The same forecast, one return at a time (for the streaming feature state)."""

    def __init__(self, params: GarchParams, window: int):
        self.params = params
        self.window = window
        self._weights = _backcast_weights(window).tolist()
        self._decay = params.beta**window
        self._constant = params.omega * _geometric(params.beta, window)
        self._e2: deque[float] = deque(maxlen=window)
        self._y: deque[float] = deque(maxlen=window + 1)
        self._last_y = 0.0

    def update(self, r: float) -> float:
        p = self.params
        e2 = (r - p.mu) ** 2
        self._last_y = e2 + p.beta * self._last_y
        self._e2.append(e2)
        self._y.append(self._last_y)
        if len(self._e2) < self.window:
            return math.nan
        y_lag = self._y[0] if len(self._y) == self.window + 1 else 0.0
        backcast = sum(map(operator.mul, self._weights, itertools.islice(self._e2, len(self._weights))))
        return (
            self._constant
            + p.alpha * (self._last_y - self._decay * y_lag)
            + self._decay * (p.omega + (p.alpha + p.beta) * backcast)
        )
