"""Backtest engine throughput on 10M ticks with about 100k trades, against the naive per-tick loop.

    python benchmarks/bench_backtest.py [--ticks 10000000] [--repeats 5] [--reference-ticks 200000]

The ticks are the simulator's 1HZ100V (one tick a second); about 1 % of the ticks carry a confident
UP or DOWN signal, the others a NEUTRAL one. Sigma barriers (1 / 2 RMS moves), a 10-tick timeout, one
slot, latency 1 and every cost are on. The engine is compiled once before timing (numba caches it on
disk). The naive loop (`backtest/reference.py`) runs on the first `--reference-ticks` ticks of the
same path and is checked to agree with the engine there first. Medians of the repeats; one core.
"""

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from datetime import timedelta  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from scalping_assets.backtest.engine import ExecutionConfig, TickPath, run_backtest, signal_sides  # noqa: E402
from scalping_assets.backtest.reference import reference_backtest  # noqa: E402
from scalping_assets.market.simulator import DEFAULT_ORIGIN, TickSimulator  # noqa: E402
from scalping_assets.market.symbols import get_symbol  # noqa: E402

SYMBOL = "1HZ100V"
CONFIG = ExecutionConfig(spread_pips=2, slippage_pips=0.5, slippage_sigma=0.1, commission=0.01)


def ticks(n: int) -> pd.DataFrame:
    per_day = get_symbol(SYMBOL).ticks_per_day
    days = -(-n // per_day)
    return TickSimulator(SYMBOL, seed=1).days(DEFAULT_ORIGIN, DEFAULT_ORIGIN + timedelta(days=days - 1)).iloc[:n]


def signals(n: int, share: float = 0.01, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    proba = np.tile(np.array([0.1, 0.8, 0.1], np.float32), (n, 1))
    hot = rng.random(n) < share
    up = rng.random(n) < 0.5
    proba[hot & up] = (0.1, 0.1, 0.8)
    proba[hot & ~up] = (0.8, 0.1, 0.1)
    return proba


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference-ticks", type=int, default=200_000)
    parser.add_argument("--reference-repeats", type=int, default=3)
    args = parser.parse_args()

    frame = ticks(args.ticks)
    proba = signals(len(frame))
    pip = get_symbol(SYMBOL).pip_size

    def build(rows: slice) -> TickPath:
        return TickPath.build(SYMBOL, frame["epoch"].to_numpy()[rows], frame["quote"].to_numpy()[rows], pip, CONFIG)

    subset = slice(0, args.reference_ticks)
    small = build(subset)
    engine_small = run_backtest(small, proba[subset], CONFIG)  # compiles (or loads the cache)
    reference, _ = reference_backtest(small, signal_sides(proba[subset], CONFIG.min_confidence), CONFIG)
    same = (
        len(reference) == len(engine_small.trades)
        and (
            reference.sort_values("entry_tick")[["entry_tick", "exit_tick", "reason"]].astype(str).to_numpy()
            == engine_small.trades[["entry_tick", "exit_tick", "reason"]].astype(str).to_numpy()
        ).all()
    )
    if not same:
        raise SystemExit("the engine and the reference loop disagree: no timing")

    prepare = [timed(lambda: build(slice(None)))[0] for _ in range(args.repeats)]
    path = build(slice(None))
    runs = [timed(lambda: run_backtest(path, proba, CONFIG)) for _ in range(args.repeats)]
    engine_s = statistics.median(t for t, _ in runs)
    trades = len(runs[0][1].trades)
    naive_s = statistics.median(
        timed(lambda: reference_backtest(small, signal_sides(proba[subset], CONFIG.min_confidence), CONFIG))[0]
        for _ in range(args.reference_repeats)
    )
    naive_rate = args.reference_ticks / naive_s
    engine_rate = len(frame) / engine_s
    print(f"\nBacktest of {len(frame):,} {SYMBOL} ticks, {trades:,} trades, one core (median of {args.repeats} runs)")
    print(f"{'implementation':<34} {'ticks':>11} {'seconds':>8} {'Mticks/s':>9} {'trades/s':>11} {'speed-up':>9}")
    naive_trades = len(reference) / naive_s
    print(
        f"{'naive per-tick loop (median of ' + str(args.reference_repeats) + ')':<34} {args.reference_ticks:>11,} "
        f"{naive_s:>8.2f} {naive_rate / 1e6:>9.3f} {naive_trades:>11,.0f} {1.0:>8.1f}x"
    )
    print(
        f"{'engine (signals, loop, trade table)':<34} {len(frame):>11,} {engine_s:>8.3f} {engine_rate / 1e6:>9.2f} "
        f"{trades / engine_s:>11,.0f} {engine_rate / naive_rate:>8.0f}x"
    )
    prepare_s = statistics.median(prepare)
    print(f"{'tick path preparation (pips, sigma)':<34} {len(frame):>11,} {prepare_s:>8.3f} {len(frame) / prepare_s / 1e6:>9.2f}")
    verdict = "met" if engine_s <= 1.0 else "missed"
    print(f"target: {args.ticks:,} ticks in <= 1 s: {verdict} ({engine_s:.3f} s; {engine_s + prepare_s:.3f} s with preparation)")


if __name__ == "__main__":
    main()
