"""The paper A/B's sequential decision, measured: how often it declares a winner between two strategies
of equal skill although it is looked at every day, and how soon it finds a better challenger.

    python benchmarks/bench_ab.py [--reps 400] [--days 30] [--deltas 0.005,0.01,0.02,0.04] [--workers 1]

Every repetition r simulates `--days` days of `--symbol` (default R_100, 43,200 ticks a day, every tick
of the simulator: nothing is shortened) with seed r, and runs strategies on them through the batch
backtest engine (`TickPath.build` + `run_backtest`) with the default execution (Deriv's multiplier at
the catalog's commission, take-profit 1 and stop-loss 2 RMS moves, timeout 10 ticks, one slot,
latency 1 tick, enter at p >= 0.55, so a strategy trades whenever its slot is free). A strategy of
skill delta calls, at every tick, the direction of the move from its fill tick to its timeout right
with probability 0.5 + delta and wrong otherwise, each call independent of every other strategy's
(its own seeded noise); ties (no move) are a coin flip.

- A/A: champion and challenger both of skill `--base-delta`: no difference exists, any decision by
  the boundary (promote, or keep because the challenger is worse) is false.
- Planted: the challenger's skill is `--base-delta` + each of `--deltas`, against the same champion.

Each pair's fills (exit epoch, net P&L) become hourly paired differences (`period_differences`),
looked at once a simulated day through `looks` with the default `SequentialConfig` (alpha 0.05, 24
periods before any decision, kept after 30 days without one). Printed: the A/A false-decision rate
with its Clopper-Pearson 95 % interval, beside what a fixed-sample t-test looked at every day would
have declared on the same differences; and per planted difference, its size per hour (in standard
deviations of the hourly difference), the share found (promoted) within the days with its interval,
the median days it took, and the shares kept.
"""

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from datetime import timedelta  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from scalping_assets.backtest.engine import ExecutionConfig, TickPath, run_backtest  # noqa: E402
from scalping_assets.features.labels import DOWN, UP  # noqa: E402
from scalping_assets.market.simulator import DEFAULT_ORIGIN, simulator  # noqa: E402
from scalping_assets.market.symbols import get_symbol  # noqa: E402
from scalping_assets.trading.sequential import SequentialConfig, looks, period_differences  # noqa: E402

EXECUTION = ExecutionConfig()
SEQUENTIAL = SequentialConfig()
DAY = 86_400


def future_moves(quotes: np.ndarray, config: ExecutionConfig) -> np.ndarray:
    """Sign of the move from a signal's fill tick to its timeout (0 where the path ends or nothing moved)."""
    n, lat, hold = len(quotes), config.latency_ticks, config.max_hold_ticks
    move = np.zeros(n)
    move[: n - lat - hold] = np.sign(quotes[lat + hold :] - quotes[lat : n - hold])
    return move


def planted_proba(move: np.ndarray, delta: float, rng: np.random.Generator) -> np.ndarray:
    """Class probabilities of a strategy that calls each future move right with probability 0.5 + delta."""
    n = len(move)
    truth = np.where(move == 0, rng.choice([-1.0, 1.0], n), move)
    side = np.where(rng.random(n) < 0.5 + delta, truth, -truth)
    proba = np.zeros((n, 3))
    proba[:, UP] = np.where(side > 0, 0.6, 0.4)
    proba[:, DOWN] = 1 - proba[:, UP]
    return proba


def fills(path: TickPath, proba: np.ndarray) -> pd.DataFrame:
    trades = run_backtest(path, proba, EXECUTION).trades
    return pd.DataFrame({"exit_epoch": trades["exit_epoch"], "pnl": trades["pnl_net"]})


def naive_peeking(d: np.ndarray, per_day: int) -> bool:
    """Would a two-sided fixed-sample t-test at alpha, run at every daily look from min_periods on, reject?"""
    for end in range(per_day, len(d) + 1, per_day):
        if end >= SEQUENTIAL.min_periods and stats.ttest_1samp(d[:end], 0.0).pvalue < SEQUENTIAL.alpha:
            return True
    return False


def judge(d: pd.Series, first_day, days: int) -> dict:
    per_day = DAY // SEQUENTIAL.period_s
    values = d.to_numpy()
    daily = [((first_day + timedelta(days=i)).isoformat(), values[i * per_day : (i + 1) * per_day]) for i in range(days)]
    found = looks(daily, SEQUENTIAL)
    number = next((i for i, look in enumerate(found, start=1) if look.decision != "continue"), None)
    decided = found[number - 1] if number else None
    boundary = decided is not None and (decided.lower > 0 or decided.upper < 0)
    return {
        "decision": decided.decision if boundary else "none",  # 'keep' after max_days without a decision: none
        "day": number if boundary else None,
        "naive": naive_peeking(values, per_day),
        "mean": float(values.mean()),
        "sd": float(values.std(ddof=1)),
    }


def repetition(args: tuple) -> dict:
    rep, symbol, days, base, deltas = args
    first, last = DEFAULT_ORIGIN, DEFAULT_ORIGIN + timedelta(days=days - 1)
    ticks = simulator(symbol, rep).days(first, last)
    path = TickPath.build(symbol, ticks["epoch"].to_numpy(), ticks["quote"].to_numpy(), get_symbol(symbol).pip_size, EXECUTION)
    move = future_moves(path.quotes, EXECUTION)
    start = int(ticks["epoch"].iloc[0])
    end = start + days * DAY
    streams = np.random.SeedSequence(rep).spawn(2 + len(deltas))
    champion = fills(path, planted_proba(move, base, np.random.default_rng(streams[0])))
    out = {"trades_per_day": len(champion) / days}
    skills = {"A/A": base} | {delta: base + delta for delta in deltas}
    for stream, (name, skill) in zip(streams[1:], skills.items(), strict=True):
        challenger = fills(path, planted_proba(move, skill, np.random.default_rng(stream)))
        out[name] = judge(period_differences(champion, challenger, start, end, SEQUENTIAL.period_s), first, days)
    return out


def interval(k: int, n: int) -> str:
    low, high = stats.binomtest(k, n).proportion_ci(0.95, method="exact")  # Clopper-Pearson
    return f"{k}/{n} = {k / n:.1%} [{low:.1%}, {high:.1%}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=400, help="repetitions (independent tick paths)")
    parser.add_argument("--days", type=int, default=SEQUENTIAL.max_days, help="simulated days, one look each")
    parser.add_argument("--symbol", default="R_100")
    parser.add_argument("--base-delta", type=float, default=0.02, help="the champion's (and the A/A challenger's) skill")
    parser.add_argument("--deltas", default="0.005,0.01,0.02,0.04", help="planted challenger skill over the champion's")
    parser.add_argument("--workers", type=int, default=1, help="processes")
    args = parser.parse_args()
    deltas = [float(x) for x in args.deltas.split(",") if x]
    jobs = [(rep, args.symbol, args.days, args.base_delta, deltas) for rep in range(args.reps)]
    began = time.perf_counter()
    results = []
    with ProcessPoolExecutor(args.workers) as pool:
        for i, result in enumerate(pool.map(repetition, jobs), start=1):
            results.append(result)
            if i % 20 == 0 or i == len(jobs):
                print(f"  {i}/{len(jobs)} repetitions, {(time.perf_counter() - began) / 60:.1f} min", file=sys.stderr, flush=True)
    minutes = (time.perf_counter() - began) / 60
    n = len(results)
    spec = get_symbol(args.symbol)
    trades = statistics.median(r["trades_per_day"] for r in results)
    print(
        f"{n} repetitions x {args.days} simulated days of {args.symbol} ({spec.ticks_per_day:,} ticks a day, none shortened), "
        f"batch engine, default execution ({EXECUTION.instrument}), champion skill 0.5 + {args.base_delta:g}, "
        f"median {trades:,.0f} trades a day per strategy; hourly paired differences, one look a day, "
        f"alpha {SEQUENTIAL.alpha:g}, min {SEQUENTIAL.min_periods} periods; {minutes:.1f} min with {args.workers} worker(s)\n"
    )
    aa = [r["A/A"] for r in results]
    false = sum(a["decision"] != "none" for a in aa)
    naive = sum(a["naive"] for a in aa)
    print("| A/A (equal skill) | false decisions | Clopper-Pearson 95 % |")
    print("|---|---|---|")
    low, high = stats.binomtest(false, n).proportion_ci(0.95, method="exact")
    print(f"| sequential test (`looks`), daily | {false}/{n} = {false / n:.1%} | {low:.1%}-{high:.1%} |")
    low, high = stats.binomtest(naive, n).proportion_ci(0.95, method="exact")
    print(f"| fixed-sample t-test, looked at daily | {naive}/{n} = {naive / n:.1%} | {low:.1%}-{high:.1%} |")
    kinds = {k: sum(a["decision"] == k for a in aa) for k in ("promote", "keep")}
    print(f"\nA/A false decisions by kind: promote {kinds['promote']}, keep (challenger worse) {kinds['keep']}")
    print(f"hourly difference: sd median {statistics.median(a['sd'] for a in aa):.1f} (account currency)\n")
    print(f"| skill over the champion | effect per hour (sd) | promoted in {args.days} days | median days | kept as worse |")
    print("|---|---|---|---|---|")
    for delta in deltas:
        rows = [r[delta] for r in results]
        effect = statistics.median(x["mean"] / x["sd"] for x in rows)
        found = [x["day"] for x in rows if x["decision"] == "promote"]
        worse = sum(x["decision"] == "keep" for x in rows)
        median = f"{statistics.median(found):g}" if found else "-"
        print(f"| +{delta:g} | {effect:.3f} | {interval(len(found), n)} | {median} | {worse} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
