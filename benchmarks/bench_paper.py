"""The paper trader's cost per tick: tick-to-decision latency and sustained ticks/s, 10 symbols and two
model variants side by side, and the share of a core that 30 symbols at 1 tick/s take.

    python benchmarks/bench_paper.py [--symbols 10] [--ticks 2000] [--repeats 3]

Two paper traders run in one process, one per model variant (XGBoost, the champion of the serving
tests, and the CNN, its challenger), each on `--symbols` simulated symbols with its own SQLite
journal. Every tick goes through what a live tick goes through (`PaperTrader.process`: streaming
features, the bundle's ONNX graphs, the incremental engine, the paper broker and the journal's
transaction with the checkpoint), fed straight from the simulator, so the figures are the trader's
own, without the network. The models are trained briefly on one SIG_AR1 day; each bundle is made to
answer for every benchmarked symbol with SIG_AR1's fitted features (what a tick costs does not
depend on the symbol). After a warm-up of the features' look-back, `--ticks` ticks per symbol are
timed, `--repeats` times; the median run is reported.

Baseline, measured in the same run: the streaming feature state alone on the same ticks (the part
issue 18 priced at about 31 us a tick). Target: 30 symbols at 1 tick/s each under 5 % of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from scalping_assets.backtest.engine import ExecutionConfig
from scalping_assets.features.stream import FeatureState
from scalping_assets.market.simulator import DEFAULT_ORIGIN, simulator
from scalping_assets.market.symbols import get_symbol, simulated_symbols
from scalping_assets.trading.journal import Journal
from scalping_assets.trading.paper import PaperTrader
from scalping_assets_tests.serving_helpers import SYMBOL, train_served_models
from serving.bundle import OnnxPredictor, write_manifest

DAY_SECONDS = 86_400
EXECUTION = ExecutionConfig(instrument="spread", min_confidence=0.4, max_positions=2, max_hold_ticks=20)


def widened(folder: Path, symbols: list[str]) -> OnnxPredictor:
    """The bundle answering for `symbols`, each with SIG_AR1's fitted features."""
    predictor = OnnxPredictor(folder)
    m = predictor.manifest
    fitted = {s: m.fitted[SYMBOL] for s in symbols}
    write_manifest(folder, m.model_copy(update={"symbols": symbols, "fitted": fitted, "cleared_symbols": symbols}))
    return OnnxPredictor(folder)


def feed(symbols: list[str], warmup: int, timed: int) -> list[tuple[str, int, float, bool]]:
    """(symbol, epoch, quote, timed) in epoch order over the symbols: the warm-up, then the timed ticks."""
    rows = []
    for i, symbol in enumerate(symbols):
        day = simulator(symbol, 7 + i).day(DEFAULT_ORIGIN)
        ticks = day.iloc[: warmup + timed]
        for n, (epoch, quote) in enumerate(zip(ticks["epoch"].tolist(), ticks["quote"].tolist(), strict=True)):
            rows.append((symbol, epoch, quote, n >= warmup))
    rows.sort(key=lambda r: (r[1], r[0]))
    return rows


async def run_traders(variants: dict[str, OnnxPredictor], symbols: list[str], ticks, folder: Path) -> dict[str, dict]:
    traders = {}
    for name, predictor in variants.items():
        journal = Journal(f"sqlite:///{folder / f'{name}-{time.monotonic_ns()}.sqlite'}")
        trader = PaperTrader(predictor, EXECUTION, journal, symbols)
        first = {s: next(e for sym, e, _, t in ticks if sym == s and t) for s in symbols}
        for s, t in trader.traders.items():
            t.first_epoch = first[s]
        traders[name] = trader
    busy = dict.fromkeys(variants, 0.0)
    timed = dict.fromkeys(variants, 0)
    for symbol, epoch, quote, is_timed in ticks:
        for name, trader in traders.items():
            started = time.perf_counter()
            await trader.process(trader.traders[symbol], epoch, quote, started, live=False)
            if is_timed:
                busy[name] += time.perf_counter() - started
                timed[name] += 1
    out = {}
    for name, trader in traders.items():
        ms = np.asarray(trader.stats.decision_ms)
        out[name] = {
            "p50_us": float(np.percentile(ms, 50) * 1e3),
            "p99_us": float(np.percentile(ms, 99) * 1e3),
            "tick_us": busy[name] / timed[name] * 1e6,  # features, model, engine, broker, journal
            "trades": trader.stats.fills.get("paper", 0),
        }
    return out


def features_only(symbols: list[str], ticks, fitted) -> float:
    """Microseconds per timed tick of the streaming feature state alone."""
    states = {s: FeatureState(get_symbol(s).pip_size, fitted) for s in symbols}
    busy, n = 0.0, 0
    for symbol, epoch, quote, is_timed in ticks:
        started = time.perf_counter()
        states[symbol].update(epoch, quote)
        if is_timed:
            busy += time.perf_counter() - started
            n += 1
    return busy / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--ticks", type=int, default=2_000, help="timed ticks per symbol")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    symbols = [s for s in simulated_symbols() if s != SYMBOL][: args.symbols - 1] + [SYMBOL]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        served = train_served_models(root / "models", training={"epochs": 1, "max_train_windows": 2_000, "n_estimators": 40})
        variants = {kind: widened(served.export(kind).folder, symbols) for kind in ("xgboost", "cnn")}
        warmup = variants["xgboost"].manifest.min_ticks + 200
        ticks = feed(symbols, warmup, args.ticks)
        fitted = variants["xgboost"].manifest.fitted[SYMBOL]
        runs, baseline = [], []
        for _ in range(args.repeats):
            baseline.append(features_only(symbols, ticks, fitted))
            runs.append(asyncio.run(run_traders(variants, symbols, ticks, root)))
    print(
        f"paper trader, {len(symbols)} symbols x {args.ticks:,} timed ticks, two variants side by side, median of {args.repeats}"
    )
    print(f"{'variant':<10} {'p50 us':>8} {'p99 us':>8} {'us/tick':>8} {'ticks/s':>8} {'30 sym @1/s':>12} {'trades':>7}")
    features_us = statistics.median(baseline)
    for name in runs[0]:
        cell = {k: statistics.median(r[name][k] for r in runs) for k in ("p50_us", "p99_us", "tick_us", "trades")}
        share = 30 * cell["tick_us"] / 1e6
        print(
            f"{name:<10} {cell['p50_us']:>8.0f} {cell['p99_us']:>8.0f} {cell['tick_us']:>8.0f} {1e6 / cell['tick_us']:>8,.0f} "
            f"{share:>11.2%} {cell['trades']:>7.0f}"
        )
    both = sum(statistics.median(r[n]["tick_us"] for r in runs) for n in runs[0])
    print(f"both variants on every tick: {both:.0f} us/tick, {1e6 / both:,.0f} ticks/s sustained on one core")
    print(
        f"baseline, streaming features alone: {features_us:.1f} us/tick; the whole trader costs "
        f"{both / 2 / features_us:.1f}x that per variant"
    )
    print(f"target: 30 symbols at 1 tick/s under 5 % of a core -> {30 * both / 2 / 1e6:.2%} per variant")


if __name__ == "__main__":
    main()
