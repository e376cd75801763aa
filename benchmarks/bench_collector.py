"""End-to-end ingestion from the local Deriv server into Parquet, a day's paged backfill, and a long
backfill under connection drops.

    python benchmarks/bench_collector.py [--repeats 3] [--seconds 6]

The server runs in its own process, accelerated so that it offers about 60,000 ticks/s whatever
the symbol count. The collector runs with its default options (flush every 5 s); a run counts the
ticks it takes in during a steady-state window and checks at the end that every tick taken in is
in the Parquet store, once. Each row is the median of `--repeats` runs. The baseline, measured in the same
run against the same server, is a bare reader that only receives and decodes the tick messages:
the ceiling the collector (dedupe, hole tracking, atomic Parquet flushes) is compared with.

The long backfill starts the collector 48 h behind the server on four symbols of every kind (1 s, 2 s,
Crash, Step), the server's clock running 10 times faster than the wall clock and every connection
dropped each 20 s of server time (2 s of wall time). The figure is the wall time until all 48 h are on
disk, checked tick for tick against the simulator; its baseline is the same backfill without drops.
"""

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect

from scalping_assets.market.collector import CollectorOptions, CollectorStats, TickCollector
from scalping_assets.market.deriv_client import DerivClient
from scalping_assets.market.simulator import day_start_epoch
from scalping_assets.market.store import TickStore
from scalping_assets.market.symbols import simulated_symbols
from scalping_assets.testing.server_process import free_port
from scalping_assets.testing.tick_source import SimulatedTicks

START = day_start_epoch(__import__("datetime").date(2026, 2, 1))
OFFERED_TICKS_PER_S = 60_000
SERVER_SEED = 7  # the local server's default
BACKFILL_SYMBOLS = ["1HZ100V", "R_100", "CRASH500", "stpRNG"]
BACKFILL_HOURS = 48
ONE_SECOND_SYMBOLS = [s for s in simulated_symbols() if s not in ("R_10", "R_25", "R_50", "R_75", "R_100", "RDBULL", "RDBEAR")]
SYMBOLS_30 = ONE_SECOND_SYMBOLS + ["R_10", "R_25", "R_50", "R_75", "R_100", "RDBULL", "RDBEAR"][: 30 - len(ONE_SECOND_SYMBOLS)]


class Server:
    def __init__(self, time_scale: float, *faults: str):
        self.port = free_port()
        args = ["--port", str(self.port), "--start", str(START), "--time-scale", str(time_scale), "--rate-limit", "100000"]
        args += faults
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scalping_assets.testing.fake_deriv", *args], stdout=subprocess.PIPE, text=True
        )
        self.proc.stdout.readline()  # the banner: listening
        self.url = f"ws://127.0.0.1:{self.port}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)


async def bare_reader(url: str, symbols: list[str], seconds: float) -> float:
    async with connect(url, max_size=2**24, compression=None) as ws:
        await ws.send(json.dumps({"ticks": symbols, "subscribe": 1, "req_id": 1}))
        await ws.recv()
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            message = json.loads(await ws.recv())
            count += message["msg_type"] == "tick"
        return count / (time.perf_counter() - started)


async def collector_rate(url: str, symbols: list[str], seconds: float, warmup: float = 3.0) -> float:
    """Ticks taken in per second in steady state (after the start-up backfill), all of them on disk at the end."""
    with tempfile.TemporaryDirectory() as tmp:
        store = TickStore(Path(tmp) / "ticks")
        collector = TickCollector(url, symbols, store, options=CollectorOptions(silence_timeout_s=5.0))
        stop = asyncio.Event()
        run = asyncio.create_task(collector.run(stop))
        await asyncio.sleep(warmup)
        taken0, t0 = collector.stats.live + collector.stats.backfilled, time.perf_counter()
        await asyncio.sleep(seconds)
        taken1, t1 = collector.stats.live + collector.stats.backfilled, time.perf_counter()
        stop.set()
        stats = await run  # ends with a final flush
        on_disk = sum(len(store.read(s)) for s in symbols)
        assert on_disk == stats.stored == stats.live + stats.backfilled, (on_disk, stats)
        return (taken1 - taken0) / (t1 - t0)


async def backfill_day(url: str) -> float:
    async with DerivClient(url) as client:
        started = time.perf_counter()
        day = await client.ticks_history("1HZ100V", START - 86_400, START - 1)
        assert len(day) == 86_400
        return time.perf_counter() - started


async def long_backfill(url: str, hours: int = BACKFILL_HOURS, timeout_s: float = 600) -> tuple[float, CollectorStats]:
    """Wall seconds until `hours` of BACKFILL_SYMBOLS behind the server are stored; every tick checked."""
    since = START - hours * 3_600
    with tempfile.TemporaryDirectory() as tmp:
        store = TickStore(Path(tmp) / "ticks")
        options = CollectorOptions(silence_timeout_s=5.0, backoff_cap_s=2.0)
        collector = TickCollector(url, BACKFILL_SYMBOLS, store, since=since, options=options, seed=1)
        stop = asyncio.Event()
        run = asyncio.create_task(collector.run(stop))
        started = time.perf_counter()
        last_ticks = {s: int(SimulatedTicks(SERVER_SEED).between(s, START - 10, START - 1)[0][-1]) for s in BACKFILL_SYMBOLS}
        while not (collector.states and all(collector.states[s].stored >= last for s, last in last_ticks.items())):
            if time.perf_counter() - started > timeout_s or run.done():
                raise RuntimeError(f"the backfill did not complete within {timeout_s:.0f} s: {collector.stats}")
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        stop.set()
        stats = await run
        for symbol in BACKFILL_SYMBOLS:
            epochs, quotes = SimulatedTicks(SERVER_SEED).between(symbol, since, START - 1)
            stored = store.read(symbol, since, START)
            assert np.array_equal(stored["epoch"], epochs) and np.array_equal(stored["quote"], quotes), symbol
        return elapsed, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    logging.getLogger("scalping_assets").setLevel(logging.ERROR)  # the drops' reconnect warnings are expected
    print(
        f"\nLive ingestion, local server offering ~{OFFERED_TICKS_PER_S:,} ticks/s, "
        f"{args.seconds:.0f} s steady-state windows, median of {args.repeats}"
    )
    print(f"{'symbols':>7} {'bare reader ticks/s':>20} {'collector ticks/s':>18} {'collector/bare':>15}")
    for n in (1, 10, 30):
        symbols = SYMBOLS_30[:n] if n > 1 else ["1HZ100V"]
        with Server(OFFERED_TICKS_PER_S / n) as server:
            bare = statistics.median(asyncio.run(bare_reader(server.url, symbols, args.seconds)) for _ in range(args.repeats))
            ours = statistics.median(asyncio.run(collector_rate(server.url, symbols, args.seconds)) for _ in range(args.repeats))
        print(f"{n:>7} {bare:>20,.0f} {ours:>18,.0f} {ours / bare:>14.2f}x")
    print("target: >= 20,000 ticks/s with 30 symbols (Deriv itself sends ~1 tick/s per symbol)")
    with Server(1.0) as server:
        seconds = statistics.median(asyncio.run(backfill_day(server.url)) for _ in range(args.repeats))
    print(
        f"\nBackfill of one day of 1HZ100V (86,400 ticks, 18 pages of 5,000) via ticks_history: {seconds:.2f} s "
        f"({86_400 / seconds:,.0f} ticks/s), median of {args.repeats}"
    )
    since = START - BACKFILL_HOURS * 3_600
    n_ticks = sum(len(SimulatedTicks(SERVER_SEED).between(s, since, START - 1)[0]) for s in BACKFILL_SYMBOLS)
    print(
        f"\nBackfill of {BACKFILL_HOURS} h of {', '.join(BACKFILL_SYMBOLS)} ({n_ticks:,} ticks), server time x10, "
        f"median of {args.repeats}"
    )
    print(f"{'connection drops':<28} {'wall s':>7} {'reconnects':>10} {'ticks/s':>9} {'vs no drops':>11}")
    rows = {}
    for label, faults in (("none", ()), ("every 20 s of server time", ("--drop-every", "2"))):
        with Server(10.0, *faults) as server:
            runs = [asyncio.run(long_backfill(server.url)) for _ in range(args.repeats)]
        seconds = statistics.median(r[0] for r in runs)
        reconnects = statistics.median(r[1].reconnects for r in runs)
        rows[label] = seconds
        print(f"{label:<28} {seconds:>7.1f} {reconnects:>10.0f} {n_ticks / seconds:>9,.0f} {seconds / rows['none']:>10.2f}x")


if __name__ == "__main__":
    main()
