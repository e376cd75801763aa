"""Months of ticks in bounded memory: ticks to a trained XGBoost and a backtest, per stage.

    python benchmarks/bench_scale.py [--days 7 30] [--rounds 30] [--workers N] [--root DIR]

Four 1-second symbols (SIG_AR1, CRASH1000, 1HZ100V, BOOM500: 345,600 ticks a day), the first day only
warming up. Each stage runs in a process of its own, and its peak RSS is the largest resident set of
that process and the workers it started (`os.wait4`), so no stage hides behind another's peak:
- ticks: simulate and store every (symbol, day), the symbols in `--workers` processes;
- features: every (day, symbol) partition's features, `--workers` partitions at a time (a backfill);
- dataset: the streamed assembly into Parquet shards (`features.shards`);
- xgboost: the demo profile's XGBoost (`--rounds` rounds) from the shards (external memory);
- backtest: the test span's predictions, shard by shard, backtested per symbol (`backtest_predictions`).
The baseline, measured in the same run on the same stored days: the in-memory path of the first
`--days` value (`build_dataset` on the ticks read whole, then `train_xgboost` on the arrays).
Ticks/s counts every stored tick the stage covers. The growth line divides each streamed stage's
peak RSS at the largest `--days` by its peak at the smallest.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import xgboost as xgb

from scalping_assets.backtest.engine import ExecutionConfig
from scalping_assets.backtest.report import backtest_predictions
from scalping_assets.features.daily import FrameStore, day_features
from scalping_assets.features.dataset import DatasetSpec, build_dataset
from scalping_assets.features.labels import PROBABILITY_COLUMNS
from scalping_assets.features.sharded import ShardedDataset
from scalping_assets.features.shards import DaySource, build_sharded
from scalping_assets.market.simulator import DEFAULT_ORIGIN, simulator
from scalping_assets.market.store import TickStore
from scalping_assets.market.symbols import get_symbol
from scalping_assets.models.config import profile_config
from scalping_assets.models.families import family
from scalping_assets.models.trees import predict_tree, train_xgboost
from scalping_assets.settings import Settings

SYMBOLS = ["SIG_AR1", "CRASH1000", "1HZ100V", "BOOM500"]
STAGES = ("ticks", "features", "dataset", "xgboost", "backtest")
BASELINE = "in-memory"
SEED = 11
# The spread model with a fixed spread: every symbol has its costs without a catalog figure.
EXECUTION = ExecutionConfig(instrument="spread", spread_pips=1)


def _days(n: int) -> list[date]:
    return [DEFAULT_ORIGIN + timedelta(days=i) for i in range(n)]


def _spec(n: int) -> DatasetSpec:
    return DatasetSpec(symbols=SYMBOLS, start=DEFAULT_ORIGIN + timedelta(days=1), end=_days(n)[-1])


def _simulate(root: Path, symbol: str, n: int) -> int:
    store, sim, stored = TickStore(root / "ticks"), simulator(symbol, SEED), 0
    for day in _days(n):
        ticks = sim.day(day)
        store.write_day(symbol, day, ticks)
        stored += len(ticks)
    return stored


def _features(root: Path, symbol: str, day: date) -> int:
    frame, _ = day_features(TickStore(root / "ticks"), symbol, day)
    FrameStore(root / "features").write_day(symbol, day, frame)
    return len(frame)


def _config(rounds: int):
    return profile_config("demo", "xgboost", seed=SEED, n_estimators=rounds)


def run_stage(stage: str, root: Path, n: int, rounds: int, workers: int) -> int:
    """Run one stage on the first `n` days under `root`; returns the ticks it covered."""
    store, spec = TickStore(root / "ticks"), _spec(n)
    if stage == "ticks":
        with ProcessPoolExecutor(workers) as pool:
            return sum(pool.map(_simulate, [root] * len(SYMBOLS), SYMBOLS, [n] * len(SYMBOLS)))
    partitions = [(s, d) for d in _days(n) for s in SYMBOLS]
    if stage == "features":
        with ProcessPoolExecutor(workers) as pool:
            return sum(pool.map(_features, [root] * len(partitions), *zip(*partitions, strict=True)))
    ticks = n * sum(get_symbol(s).ticks_per_day for s in SYMBOLS)
    if stage == "dataset":
        build_sharded(spec, DaySource(store, FrameStore(root / "features")), root / "dataset")
    elif stage == "xgboost":
        trained = family("xgboost").fit(ShardedDataset.load(root / "dataset"), _config(rounds))
        trained.model.save_model(root / "model.ubj")
    elif stage == "backtest":
        _backtest(root, store)
    elif stage == BASELINE:
        dataset = build_dataset(spec, {s: store.read(s, DEFAULT_ORIGIN, spec.end_epoch) for s in SYMBOLS})
        (x, y), (xv, yv) = dataset.xy("train"), dataset.xy("validation")
        train_xgboost(_config(rounds), x, y, xv, yv, dataset.feature_names)
    return ticks


def _backtest(root: Path, store: TickStore) -> None:
    dataset = ShardedDataset.load(root / "dataset")
    booster = xgb.Booster(model_file=root / "model.ubj")
    parts = []
    for frame in dataset.frames("test", ["symbol", "epoch", *dataset.feature_names]):
        proba = predict_tree(booster, dataset.meta.scale(frame[dataset.feature_names].to_numpy()))
        part = frame[["symbol", "epoch"]].copy()
        part[PROBABILITY_COLUMNS] = proba
        parts.append(part)
    predictions = pd.concat(parts, ignore_index=True)
    start, end = dataset.meta.boundaries[1], dataset.meta.spec.end_epoch
    # The day before the test span warms up the sigma barriers' RMS move.
    ticks = {s: store.read(s, start - 86_400, end) for s in SYMBOLS}
    report = backtest_predictions("bench", ticks, predictions, EXECUTION, start, end, draws=20, seed=SEED)
    print(f"  backtest: {len(report.trades):,} trades on {len(predictions):,} test rows", file=sys.stderr)


def measure(stage: str, root: Path, n: int, rounds: int, workers: int) -> dict:
    """Wall time, peak RSS (the stage's process and its workers) and ticks of one stage, in a child."""
    command = [sys.executable, __file__, "--stage", stage, "--root", str(root), "--days", str(n)]
    command += ["--rounds", str(rounds), "--workers", str(workers)]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"stage {stage} at {n} days failed (exit {os.waitstatus_to_exitcode(status)})")
    ticks = json.loads(out.strip().splitlines()[-1])["ticks"]
    return {"stage": stage, "days": n, "seconds": seconds, "rss_gib": usage.ru_maxrss / 2**20, "ticks": ticks}


def _row(m: dict) -> str:
    rate = m["ticks"] / m["seconds"]
    return f"{m['days']:>5} {m['stage']:<10} {m['ticks']:>12,} {m['seconds']:>9.1f} {m['rss_gib']:>9.2f} {rate:>12,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, nargs="+", default=[7, 30], help="stored days, the first only warming up")
    parser.add_argument("--rounds", type=int, default=30, help="XGBoost boosting rounds")
    parser.add_argument("--workers", type=int, default=Settings().max_concurrent, help="partitions run side by side")
    parser.add_argument("--root", type=Path, default=None, help="where the data goes (default: a temporary folder)")
    parser.add_argument("--stage", choices=[*STAGES, BASELINE], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:  # a child: one stage, its tick count on the last line
        print(json.dumps({"ticks": run_stage(args.stage, args.root, args.days[0], args.rounds, args.workers)}))
        return
    root = args.root or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"{len(SYMBOLS)} symbols {', '.join(SYMBOLS)}; {os.cpu_count()} CPUs, {args.workers} workers; data in {root}")
    print(f"{'days':>5} {'stage':<10} {'ticks':>12} {'wall s':>9} {'peak GiB':>9} {'ticks/s':>12}")
    results = []
    for n in sorted(args.days):
        folder = root / f"days-{n}"
        shutil.rmtree(folder, ignore_errors=True)
        for stage in STAGES:
            results.append(measure(stage, folder, n, args.rounds, args.workers))
            print(_row(results[-1]), flush=True)
        if n == min(args.days):
            results.append(measure(BASELINE, folder, n, args.rounds, args.workers))
            print(_row(results[-1]) + "   (baseline: dataset + XGBoost in memory)", flush=True)
    small, large = min(args.days), max(args.days)
    peak = {(m["stage"], m["days"]): m["rss_gib"] for m in results}
    streamed = {n: max(peak[(s, n)] for s in STAGES) for n in (small, large)}
    print(
        f"\npeak RSS growth {small} -> {large} days (streamed, largest stage): "
        f"{streamed[small]:.2f} -> {streamed[large]:.2f} GiB, x{streamed[large] / streamed[small]:.2f}"
    )
    for stage in STAGES:
        print(f"  {stage:<10} x{peak[(stage, large)] / peak[(stage, small)]:.2f}")
    in_memory = peak[(BASELINE, small)]
    train = max(peak[("dataset", small)], peak[("xgboost", small)])
    print(f"in-memory dataset + XGBoost at {small} days: {in_memory:.2f} GiB, {in_memory / train:.2f}x the streamed stages' peak")
    if args.root is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
