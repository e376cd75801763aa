"""Full feature set on 1M ticks: the library against a straightforward pandas-rolling version.

    python benchmarks/bench_features.py [--ticks 1000000] [--repeats 5] [--baseline-repeats 3]

Both compute the same columns from the same CRASH500 ticks (its crashes exercise the event
features) with the same fitted GARCH parameters; the script first checks that they agree, then
prints the median wall time of each, ticks/s, peak traced memory and the speed-up. The streaming
state's cost per tick is measured on a slice. One core.
"""

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from datetime import date, timedelta  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from scalping_assets.features import registry as R  # noqa: E402
from scalping_assets.features.batch import compute_features, log_returns_bp, pips  # noqa: E402
from scalping_assets.features.fitted import FittedFeatures, fit_features  # noqa: E402
from scalping_assets.features.garch import BACKCAST_DECAY, BACKCAST_TAPS  # noqa: E402
from scalping_assets.features.stream import FeatureState  # noqa: E402
from scalping_assets.market.simulator import simulator  # noqa: E402
from scalping_assets.market.symbols import get_symbol  # noqa: E402

SYMBOL = "CRASH500"


def pandas_features(ticks: pd.DataFrame, pip: float, fitted: FittedFeatures) -> pd.DataFrame:
    """The same features written the obvious way: pandas rolling windows, one per column."""
    q = ticks["quote"]
    e = ticks["epoch"]
    k = (q / pip).round()
    d = k.diff()
    s = np.sign(d)
    r = 1e4 * np.log(k / k.shift(1))
    out = pd.DataFrame({"epoch": e})
    out["tick_dir"] = s
    out["tick_size"] = d.abs()
    for w in R.VELOCITY_WINDOWS:
        out[f"tick_velocity_{w}"] = w / (e - e.shift(w))
    for w in R.IMBALANCE_WINDOWS:
        out[f"imbalance_{w}"] = s.rolling(w).mean()
    run_id = ((s != s.shift()) | (s == 0)).cumsum()
    length = (s.groupby(run_id).cumcount() + 1).clip(upper=R.RUN_CAP)
    out["run_length"] = (length * s).where(np.arange(len(s)) >= R.RUN_CAP)
    for w in R.IMPACT_WINDOWS:
        out[f"impact_{w}"] = r.abs().rolling(w).mean()
    for w in R.RV_WINDOWS:
        out[f"rv_{w}"] = np.sqrt((r**2).rolling(w).mean())
    for w in R.PARKINSON_WINDOWS:
        high, low = k.rolling(w + 1).max(), k.rolling(w + 1).min()
        out[f"parkinson_{w}"] = 1e4 * np.log(high / low) / math.sqrt(4 * math.log(2) * w)
    out["garch_sigma"] = np.sqrt(_pandas_garch(r, fitted))
    out["vol_regime"] = pd.Series(np.interp(out["rv_100"], fitted.rv_knots, np.linspace(0, 1, 101))).where(out["rv_100"].notna())
    out["vol_ratio"] = (out["rv_20"] / out["rv_500"]).where(out["rv_500"] != 0, 0.0).where(out["rv_500"].notna())
    for w in R.LEVEL_WINDOWS:
        out[f"dist_support_{w}"] = 1e4 * np.log(k / k.rolling(w + 1).min())
        out[f"dist_resistance_{w}"] = 1e4 * np.log(k.rolling(w + 1).max() / k)
    for w in R.MOMENTUM_WINDOWS:
        out[f"momentum_{w}"] = 1e4 * np.log(k / k.shift(w))
    a = R.ACCEL_WINDOW
    out[f"accel_{a}"] = out[f"momentum_{a}"] - out[f"momentum_{a}"].shift(a)
    for w in R.MEAN_REVERSION_WINDOWS:
        d2 = (d**2).rolling(w).sum()
        out[f"mr_z_{w}"] = ((k - k.rolling(w).mean()) / np.sqrt(d2 / w) / math.sqrt(w)).where(d2 != 0, 0.0).where(d2.notna())
    prior = (d**2).shift(1).rolling(R.EVENT_SIGMA_WINDOW).mean()
    event = ((d**2 > R.EVENT_SIGMAS**2 * prior) & (d != 0)).astype(int)
    index = pd.Series(np.arange(len(q)), dtype=float)
    last = index.where(event == 1).ffill()
    since = (index - last).fillna(np.inf).clip(upper=R.EVENT_HORIZON)
    valid = index >= R.EVENT_SIGMA_WINDOW + R.EVENT_HORIZON
    out["ticks_since_event"] = since.where(valid)
    out["last_event_sign"] = s.where(event == 1).ffill().where(since < R.EVENT_HORIZON, 0.0).where(valid)
    out["event_rate"] = (event.rolling(R.EVENT_HORIZON).sum() * 1000 / R.EVENT_HORIZON).where(valid)
    base = np.log(k.to_numpy()[(index - since).clip(lower=0).to_numpy(int)])
    out["trend_since_event"] = (1e4 * (np.log(k) - base) / since).where(since != 0, 0.0).where(valid)
    stamp = pd.to_datetime(e, unit="s", utc=True)
    out["hour"] = stamp.dt.hour + stamp.dt.minute / 60 + stamp.dt.second / 3600
    out["day_of_week"] = stamp.dt.dayofweek.astype(float)
    out["session"] = pd.cut(out["hour"], [0, 7, 13, 22, 24], right=False, labels=[0, 1, 2, 0], ordered=False).astype(float)
    return out[["epoch", *R.feature_names(fitted=True)]]


def _pandas_garch(r: pd.Series, fitted: FittedFeatures) -> pd.Series:
    """The windowed GARCH forecast as weighted rolling sums (arch's backcast over the window's start)."""
    g, window = fitted.garch, R.GARCH_WINDOW
    e2 = (r - g.mu) ** 2
    decay = g.beta ** np.arange(window)[::-1]  # newest return gets beta^0
    windowed = e2.rolling(window).apply(lambda x: x @ decay, raw=True)
    taps = BACKCAST_DECAY ** np.arange(BACKCAST_TAPS)
    taps /= taps.sum()
    backcast = e2.rolling(BACKCAST_TAPS).apply(lambda x: x @ taps, raw=True).shift(-(BACKCAST_TAPS - 1))
    start = backcast.shift(window - 1)
    geometric = (1 - g.beta**window) / (1 - g.beta)
    bw = g.beta**window
    return g.omega * geometric + g.alpha * windowed + bw * (g.omega + (g.alpha + g.beta) * start)


def measure(fn, repeats: int) -> tuple[float, float]:
    """(median seconds, peak traced MiB of one run)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-repeats", type=int, default=3)
    args = parser.parse_args()

    spec = get_symbol(SYMBOL)
    days = -(-args.ticks // spec.ticks_per_day)
    first = date(2026, 1, 1)
    ticks = simulator(SYMBOL, 7).days(first, first + timedelta(days=days - 1)).iloc[: args.ticks].reset_index(drop=True)
    pip = spec.pip_size
    head = ticks.iloc[: args.ticks // 2]
    fitted = fit_features(
        log_returns_bp(pips(head["quote"].to_numpy(), pip))[1:], compute_features(head, pip)["rv_100"].to_numpy()
    )

    ours = compute_features(ticks, pip, fitted)
    theirs = pandas_features(ticks, pip, fitted)
    a, b = ours.iloc[:, 1:].to_numpy(), theirs.iloc[:, 1:].to_numpy()
    same_nan = np.isnan(a) == np.isnan(b)
    both = ~np.isnan(a) & ~np.isnan(b)
    rel = np.abs(a[both] - b[both]) / np.maximum(np.abs(b[both]), 1e-6)
    if not same_nan.all() or rel.max() > 1e-7:
        bad = ours.columns[1:][(~same_nan).any(axis=0)].tolist()
        raise SystemExit(f"the two implementations disagree (undefined rows differ in {bad}, max relative gap {rel.max():.3g})")

    library_s, library_mb = measure(lambda: compute_features(ticks, pip, fitted), args.repeats)
    pandas_s, pandas_mb = measure(lambda: pandas_features(ticks, pip, fitted), args.baseline_repeats)
    n_stream = min(50_000, args.ticks)
    state = FeatureState(pip, fitted)
    start = time.perf_counter()
    for epoch, quote in zip(ticks["epoch"].iloc[:n_stream].tolist(), ticks["quote"].iloc[:n_stream].tolist(), strict=True):
        state.update(epoch, quote)
    stream_us = (time.perf_counter() - start) / n_stream * 1e6

    n = len(ticks)
    print(f"Features: {len(ours.columns) - 1} columns (GARCH included) on {n:,} {SYMBOL} ticks, one core.")
    print(f"Agreement with the pandas version: max relative gap {rel.max():.2e} over {both.sum():,} values.\n")
    print(f"{'implementation':<34} {'median s':>9} {'ticks/s':>13} {'peak MiB':>9} {'speed-up':>9}")
    print(f"{'pandas rolling (baseline)':<34} {pandas_s:>9.3f} {n / pandas_s:>13,.0f} {pandas_mb:>9.0f} {1.0:>8.1f}x")
    speedup = pandas_s / library_s
    print(f"{'scalping_assets.features.batch':<34} {library_s:>9.3f} {n / library_s:>13,.0f} {library_mb:>9.0f} {speedup:>8.1f}x")
    print(f"\nStreaming state (serving path): {stream_us:.1f} us per tick over {n_stream:,} ticks.")
    print(f"Targets: {n:,} ticks in <= 2 s ({'met' if library_s <= 2 else 'MISSED'}), >= 5x the baseline ", end="")
    print(f"({'met' if speedup >= 5 else 'MISSED'}).")


if __name__ == "__main__":
    main()
