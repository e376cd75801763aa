"""Simulator throughput per family and tick-store day write+read time, as tables.

    python benchmarks/bench_simulator.py [--repeats 7] [--days 5]

Each figure is the median of `--repeats` runs. Baselines are measured in the same run: a per-tick
pure-Python GBM loop for the simulator, and pandas CSV for the store.
"""

import os

# Measure one core: no BLAS or Arrow thread pools.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import timedelta  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402

from scalping_assets.market.simulator import DEFAULT_ORIGIN, TickSimulator  # noqa: E402
from scalping_assets.market.store import TickStore  # noqa: E402
from scalping_assets.market.symbols import get_symbol  # noqa: E402

pa.set_cpu_count(1)
pa.set_io_thread_count(1)

FAMILIES = {
    "volatility (GBM, 2 s)": "R_100",
    "volatility (GBM, 1 s)": "1HZ100V",
    "crash/boom": "CRASH500",
    "jump": "JD75",
    "step": "stpRNG",
    "bull/bear (GBM, reset)": "RDBULL",
    "planted AR(1)": "SIG_AR1",
}


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def python_loop_gbm(n: int, sigma: float, dt: float, seed: int = 0) -> list[float]:
    """How a per-tick simulator in plain Python runs: the baseline."""
    rng = random.Random(seed)
    price, drift, scale = 1000.0, -0.5 * sigma**2 * dt, sigma * math.sqrt(dt)
    path = []
    for _ in range(n):
        price *= math.exp(drift + scale * rng.gauss(0.0, 1.0))
        path.append(round(price, 2))
    return path


def bench_simulator(repeats: int, days: int) -> None:
    spec = get_symbol("1HZ100V")
    n_base = spec.ticks_per_day
    base = n_base / median_seconds(lambda: python_loop_gbm(n_base, spec.generator.sigma, spec.dt), repeats)
    print(f"\nSimulator, one core, {days} day(s) per run, median of {repeats} runs")
    print(f"{'family':<24} {'symbol':<9} {'ticks/run':>10} {'Mticks/s':>9} {'vs Python loop':>15}")
    print(f"{'baseline: Python loop':<24} {'1HZ100V':<9} {n_base:>10,} {base / 1e6:>9.2f} {1.0:>14.1f}x")
    for family, symbol in FAMILIES.items():
        n = get_symbol(symbol).ticks_per_day * days

        def run(symbol=symbol):
            sim = TickSimulator(symbol, seed=1)
            for i in range(days):
                sim.simulate_day(DEFAULT_ORIGIN + timedelta(days=i))

        rate = n / median_seconds(run, repeats)
        print(f"{family:<24} {symbol:<9} {n:>10,} {rate / 1e6:>9.2f} {rate / base:>14.1f}x")
    print("target: >= 5 Mticks/s for GBM indices on one core")


def bench_store(repeats: int) -> None:
    day = DEFAULT_ORIGIN
    frame = TickSimulator("1HZ100V", seed=1).day(day)
    with tempfile.TemporaryDirectory() as tmp:
        store = TickStore(Path(tmp) / "ticks")
        csv = Path(tmp) / "day.csv"

        def parquet_round_trip():
            store.write_day("1HZ100V", day, frame)
            store.read_day("1HZ100V", day)

        def csv_round_trip():
            frame.to_csv(csv, index=False)
            pd.read_csv(csv)

        ours = median_seconds(parquet_round_trip, repeats)
        base = median_seconds(csv_round_trip, repeats)
        size = store.path("1HZ100V", day).stat().st_size
        csv_size = csv.stat().st_size
        write = median_seconds(lambda: store.write_day("1HZ100V", day, frame), repeats)
        read = median_seconds(lambda: store.read_day("1HZ100V", day), repeats)
    print(f"\nTick store, one day of 1 s ticks ({len(frame):,} rows), median of {repeats} runs")
    print(f"{'format':<30} {'write+read ms':>14} {'days/s':>8} {'vs CSV':>7} {'file KiB':>9}")
    print(f"{'baseline: pandas CSV':<30} {base * 1e3:>14.1f} {1 / base:>8.1f} {1.0:>6.1f}x {csv_size / 1024:>9.0f}")
    print(f"{'store: Parquet zstd, atomic':<30} {ours * 1e3:>14.1f} {1 / ours:>8.1f} {base / ours:>6.1f}x {size / 1024:>9.0f}")
    print(f"  of which write (fsync + rename) {write * 1e3:.1f} ms, read {read * 1e3:.1f} ms")
    print("target: a day written and read back in well under a second")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--days", type=int, default=5)
    args = parser.parse_args()
    bench_simulator(args.repeats, args.days)
    bench_store(args.repeats)


if __name__ == "__main__":
    main()
