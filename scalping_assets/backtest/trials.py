"""How many trials the deflated Sharpe ratio counts: distinct experiments, and their effective number.

The deflated Sharpe ratio (Bailey & López de Prado 2014) deflates a Sharpe ratio by the best one
expected of N unskilled trials, given the variance of the trials' Sharpe ratios. Counting every MLflow
candidate run as a trial makes a verdict depend on how often the same experiment was re-run, and
counts near-copies (a second seed, an ensemble of the other candidates) as independent tries. So:

1. Distinct trials. Two candidate runs are the same trial when any of these holds (transitively):
   - the same identity: dataset fingerprint, model type and every logged param (the config: kind,
     all hyper-parameters, the seed; for an ensemble the hash of its bases' configs), so a re-run of
     one config is one trial even when a nondeterministic fit made other predictions;
   - the same prediction digest (tag `predictions_digest`, a hash of the test predictions; for runs
     logged before the tag it is computed from their `predictions/test.parquet`);
   - near-identical predictions: the same test rows and a root-mean-square difference of their signal
     (P(UP) - P(DOWN) per row) of at most NEAR_IDENTICAL_RMS.
2. Effective number. Distinct trials that predict alike are not independent tries: the best of ten
   seeds of one model is not the best of ten different models. Each distinct trial is represented
   by its earliest run's test-span signal, rows aligned on (symbol, epoch); R is the matrix of their
   pairwise correlations (0 for a pair with fewer than MIN_OVERLAP common rows, a constant signal, or
   a trial without predictions), made positive semi-definite. N_eff is the number of independent
   trials whose best is expected as high as the best of these correlated ones:

       E[max of N_eff iid N(0, 1)] = E[max_i Z_i],  Z ~ N(0, R),

   the right side by Monte Carlo (EFFECTIVE_DRAWS antithetic draws, fixed seed: the same R gives the
   same N_eff), the left by quadrature, N_eff by bisection in [1, N]. That is the quantity the
   deflated Sharpe's benchmark (the expected maximum Sharpe ratio of N unskilled trials) depends on.
   It is N for uncorrelated trials, 1 for perfectly correlated ones, about 1.5 for 4 trials
   correlated 0.9 pairwise; a cluster of near-copies counts about as one trial next to unrelated ones
   (10 trials correlated 0.9, worth 1.8 alone, and 10 unrelated trials: 12.6). The deflated Sharpe
   counts round(N_eff) trials (at least 1): the formula of the expected maximum is meant for whole
   numbers of trials.
3. The variance of Sharpe ratios across trials takes one Sharpe ratio per distinct trial (the median
   of its runs' `backtest/sharpe_per_trade`, each run's from its latest backtest run, all found in one
   search), so a re-run does not add a copy of its Sharpe ratio.

The signal is the candidate's test predictions, logged at training time: available before any
backtest (the current candidates' included) and cheap. Each run's signal is kept in a cache folder
(one small .npz per run id; a run's predictions never change), and correlations are computed on at
most SIGNAL_ROWS rows, evenly spread over the union of all trials' rows, with a few matrix products:
a few hundred runs take about a second once cached.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..features.labels import DOWN, PROBABILITY_COLUMNS, UP
from ..market.store import write_atomic
from ..models.pipeline import DIGEST_TAG, PREDICTIONS_ARTIFACT, predictions_digest
from ..models.tracking import Tracker
from .runs import backtest_metric, latest_backtests

SIGNAL_ROWS = 10_000  # rows of the union of the trials' test rows the correlations are computed on
MIN_OVERLAP = 100  # fewer common rows than this: a pair is counted as uncorrelated
NEAR_IDENTICAL_RMS = 1e-3  # RMS difference of two signals on the same rows below which they are one trial
EFFECTIVE_DRAWS = 8192  # Monte Carlo draws (half of them antithetic) of the correlated trials' maximum
_SYMBOL_SHIFT = 1 << 40  # row key: symbol index * 2^40 + epoch


@dataclass(frozen=True)
class Signal:
    """A run's test-span signal P(UP) - P(DOWN), one value per (symbol, epoch) row, and its digest."""

    names: np.ndarray  # the symbols (str), sorted
    codes: np.ndarray  # int32 per row: its symbol's index in `names`
    epochs: np.ndarray  # int64 per row
    values: np.ndarray  # float32 per row
    digest: str

    @classmethod
    def from_predictions(cls, frame: pd.DataFrame) -> Signal:
        proba = frame[PROBABILITY_COLUMNS].to_numpy(np.float64)
        names, codes = np.unique(frame["symbol"].astype(str).to_numpy(dtype=str), return_inverse=True)
        return cls(
            names=names,
            codes=codes.astype(np.int32),
            epochs=frame["epoch"].to_numpy(np.int64),
            values=(proba[:, UP] - proba[:, DOWN]).astype(np.float32),
            digest=predictions_digest(frame),
        )

    def save(self, path: Path) -> None:
        def write(sink) -> None:
            arrays = {k: getattr(self, k) for k in ("names", "codes", "epochs", "values")}
            np.savez(sink, **arrays, digest=np.array(self.digest))

        write_atomic(path, write)

    @classmethod
    def load(cls, path: Path) -> Signal:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["names"], data["codes"], data["epochs"], data["values"], str(data["digest"]))


class SignalCache:
    """Runs' signals, downloaded once: from `folder` when cached there, else from MLflow (then cached).
    Without a folder, every signal is downloaded (and kept for this object's life)."""

    def __init__(self, tracker: Tracker, folder: str | Path | None = None):
        self.tracker, self.folder = tracker, None if folder is None else Path(folder)
        self._memory: dict[str, Signal | None] = {}

    def get(self, run_id: str) -> Signal | None:
        """The run's signal; None when it has no test predictions."""
        if run_id not in self._memory:
            self._memory[run_id] = self._read(run_id)
        return self._memory[run_id]

    def _read(self, run_id: str) -> Signal | None:
        cached = None if self.folder is None else self.folder / f"{run_id}.npz"
        if cached is not None and cached.exists():
            try:
                return Signal.load(cached)
            except (OSError, ValueError, KeyError):
                cached.unlink(missing_ok=True)  # a damaged cache entry: fetched again
        with tempfile.TemporaryDirectory() as folder:
            try:
                frame = pd.read_parquet(self.tracker.download(run_id, PREDICTIONS_ARTIFACT, folder))
            except FileNotFoundError:
                return None  # not cached: the run may be still training
        signal = Signal.from_predictions(frame)
        if cached is not None:
            signal.save(cached)
        return signal


@dataclass(frozen=True)
class Trials:
    """The candidate runs counted as the deflated Sharpe ratio's trials."""

    runs: int  # candidate runs
    distinct: int  # distinct experiments among them
    effective_exact: float  # N_eff of the distinct trials' correlations
    effective: int  # the number of trials the deflated Sharpe ratio counts: round(N_eff), at least 1
    groups: tuple[tuple[str, ...], ...]  # the run ids of each distinct trial, earliest first
    group_sharpes: tuple[float | None, ...]  # each distinct trial's Sharpe ratio per trade; None: not backtested

    @property
    def sharpes(self) -> list[float]:
        """One Sharpe ratio per backtested distinct trial: the deflated Sharpe's variance across trials."""
        return [s for s in self.group_sharpes if s is not None]

    def with_sharpes(self, sharpes: dict[str, float]) -> Trials:
        """These trials with the Sharpe ratios of some runs (run id: Sharpe ratio per trade, e.g. from
        this evaluation's own backtests) in place of what their distinct trials had logged."""
        merged = list(self.group_sharpes)
        for k, group in enumerate(self.groups):
            values = [sharpes[run_id] for run_id in group if run_id in sharpes and math.isfinite(sharpes[run_id])]
            if values:
                merged[k] = float(np.median(values))
        return replace(self, group_sharpes=tuple(merged))

    def metadata(self) -> dict[str, float | int]:
        return {
            "runs": self.runs,
            "distinct": self.distinct,
            "effective": self.effective,
            "effective_exact": round(self.effective_exact, 3),
            "backtested": len(self.sharpes),
        }


class _Groups:
    """Union-find over run indices; a group's root is its earliest run."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def root(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        a, b = self.root(i), self.root(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def members(self) -> dict[int, list[int]]:
        found: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            found.setdefault(self.root(i), []).append(i)
        return found


def identity(run) -> str:
    """What a run trained: dataset fingerprint, model type and every logged param, as one hash."""
    tags = run.data.tags
    payload = {
        "dataset": tags.get("dataset_fingerprint", ""),
        "kind": tags.get("model_type", ""),
        "params": dict(sorted(run.data.params.items())),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _join_same(groups: _Groups, keys: list[str | None]) -> None:
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key is not None:
            groups.join(first.setdefault(key, i), i)


def _aligned(signals: list[Signal], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, mask): one row per signal, one column per sampled (symbol, epoch) of their union."""
    names = np.unique(np.concatenate([s.names for s in signals]))
    keys = [np.searchsorted(names, s.names).astype(np.int64)[s.codes] * _SYMBOL_SHIFT + s.epochs for s in signals]
    union = np.unique(np.concatenate(keys))
    if len(union) > rows:
        union = union[np.unique(np.linspace(0, len(union) - 1, rows).round().astype(np.int64))]
    values, mask = np.zeros((len(signals), len(union))), np.zeros((len(signals), len(union)))
    for i, (key, signal) in enumerate(zip(keys, signals, strict=True)):
        where = np.minimum(np.searchsorted(union, key), len(union) - 1)
        hit = union[where] == key
        values[i, where[hit]] = signal.values[hit]
        mask[i, where[hit]] = 1.0
    return values, mask


def signal_relations(signals: list[Signal], rows: int = SIGNAL_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(correlations, near-identical) of every pair of signals on their common rows.

    Correlations are 0 for pairs with fewer than MIN_OVERLAP common rows or a constant signal (1 on
    the diagonal). Near-identical: the same rows and an RMS difference of at most NEAR_IDENTICAL_RMS.
    Pairwise over the common rows of each pair, by matrix products on at most `rows` sampled rows."""
    n = len(signals)
    if n == 0:
        return np.zeros((0, 0)), np.zeros((0, 0), bool)
    x, m = _aligned(signals, rows)
    common = m @ m.T  # rows both signals have
    sums = x @ m.T  # [i, j]: sum of signal i over the rows it shares with j
    squares = (x * x) @ m.T
    cross = x @ x.T
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = common * squares - sums**2  # [i, j]: common^2 times the variance of i on those rows
        covariance = common * cross - sums * sums.T
        scale = np.sqrt(np.clip(spread, 0, None) * np.clip(spread.T, 0, None))
        usable = (common >= MIN_OVERLAP) & (spread > 1e-12 * common**2) & (spread.T > 1e-12 * common**2)
        correlations = np.where(usable, np.clip(covariance / np.where(usable, scale, 1.0), -1.0, 1.0), 0.0)
        mean_square = np.clip(squares + squares.T - 2 * cross, 0, None) / np.maximum(common, 1)
    counts = m.sum(axis=1)
    same_rows = (common == counts[:, None]) & (common == counts[None, :]) & (common > 0)
    near = same_rows & (np.sqrt(mean_square) <= NEAR_IDENTICAL_RMS)
    np.fill_diagonal(correlations, 1.0)
    np.fill_diagonal(near, True)
    return correlations, near


def expected_max_normal(n: float) -> float:
    """E[max of n iid standard normals], by quadrature; n >= 1 need not be whole."""
    x = np.linspace(-12.0, 12.0, 4801)
    density = n * norm.pdf(x) * norm.cdf(x) ** (n - 1)
    return float(np.sum(x * density) * (x[1] - x[0]))


def effective_number(correlations: np.ndarray, draws: int = EFFECTIVE_DRAWS, seed: int = 0) -> float:
    """The number of independent N(0, 1) trials whose expected maximum equals that of N(0, R) trials
    (R: `correlations`, made positive semi-definite), in [1, N]; 0 without trials."""
    n = len(correlations)
    if n <= 1:
        return float(n)
    values, vectors = np.linalg.eigh((correlations + correlations.T) / 2)
    loadings = vectors * np.sqrt(np.clip(values, 0.0, None))
    loadings /= np.maximum(np.linalg.norm(loadings, axis=1, keepdims=True), 1e-12)  # unit variances
    rng = np.random.default_rng(seed)
    total, done = 0.0, 0
    while done < draws:
        batch = min(1024, draws - done)
        z = rng.standard_normal((batch, n)) @ loadings.T
        total += float(z.max(axis=1).sum() + (-z).max(axis=1).sum()) / 2  # antithetic: odd errors cancel
        done += batch
    target = total / draws
    # Perfectly correlated trials give 0 up to the rounding of the eigen-decomposition (about 1e-9,
    # depending on the LAPACK build): one trial.
    if target <= 1e-6:
        return 1.0
    if target >= expected_max_normal(n):
        return float(n)
    low, high = 1.0, float(n)
    for _ in range(40):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if expected_max_normal(middle) < target else (low, middle)
    return (low + high) / 2


def count_trials(tracker: Tracker, runs: list, cache: str | Path | None = None, rows: int = SIGNAL_ROWS) -> Trials:
    """Group candidate `runs` (from `candidate_runs`) into distinct trials, their effective number and
    one Sharpe ratio per distinct trial (see the module's docstring). `cache`: a folder for the runs'
    signals (None: downloaded every time)."""
    signals = SignalCache(tracker, cache)
    runs = sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))
    groups = _Groups(len(runs))
    _join_same(groups, [identity(r) for r in runs])
    # The digest: the tag, or for runs logged before it, the hash of their downloaded predictions.
    digests = []
    for run in runs:
        digest = run.data.tags.get(DIGEST_TAG)
        if digest is None:
            signal = signals.get(run.info.run_id)
            digest = None if signal is None else signal.digest
        digests.append(digest)
    _join_same(groups, digests)

    # One signal per distinct trial: its earliest run with predictions.
    members = groups.members()
    roots = sorted(members)
    chosen: dict[int, Signal] = {}
    for root in roots:
        for i in members[root]:
            signal = signals.get(runs[i].info.run_id)
            if signal is not None:
                chosen[root] = signal
                break
    with_signal = [root for root in roots if root in chosen]
    correlations, near = signal_relations([chosen[root] for root in with_signal], rows)
    for a, b in zip(*np.nonzero(np.triu(near, 1)), strict=True):
        groups.join(with_signal[a], with_signal[b])

    members = groups.members()
    roots = sorted(members)
    # Trials merged as near-identical keep their earliest representative; trials without predictions
    # count as uncorrelated with every other.
    kept = [k for k, root in enumerate(with_signal) if groups.root(root) == root]
    matrix = np.eye(len(roots))
    position = {root: k for k, root in enumerate(roots)}
    at = [position[with_signal[k]] for k in kept]
    matrix[np.ix_(at, at)] = correlations[np.ix_(kept, kept)]
    exact = effective_number(matrix)
    sharpes: list[float | None] = []
    backtests = latest_backtests(tracker) if runs else {}
    for root in roots:
        values = [backtest_metric(runs[i], backtests, "sharpe_per_trade") for i in members[root]]
        finite = [v for v in values if math.isfinite(v)]
        sharpes.append(float(np.median(finite)) if finite else None)
    return Trials(
        runs=len(runs),
        distinct=len(roots),
        effective_exact=exact,
        effective=min(max(math.floor(exact + 0.5), 1), len(roots)) if roots else 0,
        groups=tuple(tuple(runs[i].info.run_id for i in members[root]) for root in roots),
        group_sharpes=tuple(sharpes),
    )
