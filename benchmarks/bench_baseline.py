"""The random-trader baseline: its cost per candidate at the demo's size, and its calibration on null data.

    python benchmarks/bench_baseline.py [--draws 200] [--repeats 3] [--seeds 1000] [--calibration-draws 19]

Cost: one candidate's backtest on three symbols (SIG_AR1, R_100, CRASH1000) for one day of test ticks
(216k ticks, a day of warm-up before it), a prediction on every tick and a confident UP or DOWN signal
on 5 %, 20 % or 50 % of them, the default execution config; `backtest_predictions` in full and the
baseline's share of it (`--draws` draws, median of `--repeats`). One core.

Calibration: `--seeds` strategies whose signals are themselves random (so the null holds) on 20,000
ticks each of R_100 (a martingale; 10 % signals, half buys, TP 1 / SL 2 RMS moves) and of CRASH500
(30 % long-only signals with the Crash trap's exits, TP 0.5 / SL 20), each against
`--calibration-draws` draws of its random trader. The p-values should be uniform: the share at or
below 0.05 with its 95 % binomial interval, and a chi-square test of uniformity over the possible
values. A negative control runs the CRASH500 null against a random trader allowed 50 positions where
the strategy holds one; its rejection rate must be far above 5 %.
"""

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from datetime import date  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import binomtest, chisquare  # noqa: E402

from scalping_assets.backtest import report  # noqa: E402
from scalping_assets.backtest.engine import ExecutionConfig  # noqa: E402
from scalping_assets.market.simulator import simulator  # noqa: E402
from scalping_assets_tests.test_significance import PLAIN, TRAP, _path, null_p_values, rejections  # noqa: E402

SYMBOLS = ["SIG_AR1", "R_100", "CRASH1000"]


def predictions(ticks: dict[str, pd.DataFrame], start: int, share: float) -> pd.DataFrame:
    rng, frames = np.random.default_rng(0), []
    for symbol, frame in ticks.items():
        test = frame[frame["epoch"] >= start]
        n = len(test)
        proba = np.tile([0.2, 0.6, 0.2], (n, 1))
        hot, up = rng.random(n) < share, rng.random(n) < 0.5
        proba[hot & up], proba[hot & ~up] = (0.1, 0.1, 0.8), (0.8, 0.1, 0.1)
        columns = {"p_down": proba[:, 0], "p_neutral": proba[:, 1], "p_up": proba[:, 2]}
        frames.append(pd.DataFrame({"symbol": symbol, "epoch": test["epoch"].to_numpy(), **columns}))
    return pd.concat(frames, ignore_index=True)


def cost(draws: int, repeats: int) -> None:
    ticks = {s: simulator(s, 7).days(date(2026, 1, 1), date(2026, 1, 2)) for s in SYMBOLS}
    start = int(ticks["SIG_AR1"]["epoch"].iloc[0]) + 86_400
    end, config = start + 86_400, ExecutionConfig(instrument="spread")  # CRASH1000 has no known Deriv figures
    spent = {}
    original = report.random_signal_expectancies

    def timed(*args, **kwargs):
        began = time.perf_counter()
        out = original(*args, **kwargs)
        spent["baseline"] = time.perf_counter() - began
        return out

    report.random_signal_expectancies = timed
    report.backtest_predictions("warm-up", ticks, predictions(ticks, start, 0.01), config, start, end, draws=5)
    print(f"\nOne candidate, {', '.join(SYMBOLS)}, one day of test ticks each, {draws} draws (median of {repeats})")
    print(f"{'signals':>8} {'ticks':>9} {'trades':>8} {'backtest s':>11} {'baseline s':>11} {'ms/draw':>8}")
    for share in (0.05, 0.2, 0.5):
        chosen = predictions(ticks, start, share)
        runs = []
        for _ in range(repeats):
            began = time.perf_counter()
            result = report.backtest_predictions("x", ticks, chosen, config, start, end, draws=draws)
            runs.append((time.perf_counter() - began, spent["baseline"], len(result.trades)))
        total, baseline = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"{share:>8.0%} {len(chosen):>9,} {runs[0][2]:>8,} {total:>11.2f} {baseline:>11.2f} {1e3 * baseline / draws:>8.1f}")
    report.random_signal_expectancies = original


def calibration(seeds: int, draws: int) -> None:
    print(f"\nCalibration on null data: {seeds} random-signal strategies each, {draws} draws each")
    print(f"{'null':<46} {'p <= 0.05':>10} {'95 % interval':>16} {'uniform (chi2 p)':>17} {'seconds':>8}")
    cases = [
        ("R_100, 10 % signals, half buys", "R_100", PLAIN, 0.1, 0.5, None),
        ("CRASH500, 30 % long-only, Crash-trap exits", "CRASH500", TRAP, 0.3, 1.0, None),
        ("negative control: random trader with 50 slots", "CRASH500", TRAP, 0.3, 1.0, 50),
    ]
    for label, symbol, config, share, buys, slots in cases:
        began = time.perf_counter()
        baseline = config.model_copy(update={"max_positions": slots}) if slots else None
        p = null_p_values(_path(symbol, config, 20_000), config, share, buys, seeds, draws, baseline)
        k = rejections(p)
        ci = binomtest(k, seeds).proportion_ci(0.95)
        counts = np.bincount(np.rint(p * (draws + 1)).astype(int) - 1, minlength=draws + 1)
        print(
            f"{label:<46} {k / seeds:>10.3f} {f'[{ci.low:.3f}, {ci.high:.3f}]':>16} {chisquare(counts).pvalue:>17.3f} "
            f"{time.perf_counter() - began:>8.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--calibration-draws", type=int, default=19)
    args = parser.parse_args()
    cost(args.draws, args.repeats)
    calibration(args.seeds, args.calibration_draws)


if __name__ == "__main__":
    main()
