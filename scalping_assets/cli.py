"""`scalping` command line: the end-to-end demo on embedded defaults, and the symbol catalog."""

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from datetime import date, timedelta

import dagster as dg

from scalping_assets.market.collector import CollectorOptions, TickCollector
from scalping_assets.market.deriv_client import DerivAPIError, deriv_url
from scalping_assets.market.simulator import DEFAULT_ORIGIN
from scalping_assets.market.store import TickStore, parse_epoch
from scalping_assets.market.summary import tick_summary
from scalping_assets.market.symbols import UnknownSymbolError, catalog, get_symbol
from scalping_assets.partitions import tick_partition

DEMO_SYMBOLS = "R_100,1HZ50V,CRASH1000,BOOM500,JD25,stpRNG,RDBULL,SIG_AR1"
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _symbols(text: str, simulated: bool = False) -> list[str]:
    """Comma-separated symbols, each checked against the catalog (and its generator, for the simulator)."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    for name in names:
        if not get_symbol(name).simulated and simulated:
            raise ValueError(f"{name} has no published generation formula and cannot be simulated")
    return names


def _instance() -> dg.DagsterInstance:
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    print("DAGSTER_HOME is not set: runs go to a temporary instance (set it to keep them for the UI).")
    return dg.DagsterInstance.ephemeral()


def demo(args: argparse.Namespace) -> int:
    from scalping_assets.definitions import build_resources, defs

    symbols = _symbols(args.symbols, simulated=True)
    first = date.fromisoformat(args.start)
    days = [first + timedelta(days=i) for i in range(args.days)]
    resources = build_resources(args.data_dir, args.seed)
    store = resources["tick_store"].store()
    job = defs.resolve_job_def("ticks_job")
    instance = _instance()
    total = len(days) * len(symbols)
    rows, failures = [], 0
    started = time.perf_counter()
    for i, (day, symbol) in enumerate(((d, s) for d in days for s in symbols), start=1):
        result = job.execute_in_process(
            partition_key=tick_partition(day.isoformat(), symbol),
            instance=instance,
            resources=resources,
            run_config=QUIET_LOGS,
            raise_on_error=False,
        )
        checks = result.get_asset_check_evaluations()
        failed = [c.check_name for c in checks if not c.passed]
        failures += (not result.success) + len(failed)
        summary = tick_summary(store.read_day(symbol, day)) if result.success else {"rows": 0}
        rows.append((day, symbol, summary, f"{len(checks) - len(failed)}/{len(checks)}", failed))
        print(f"[{i}/{total}] {symbol} {day}: {'ok' if result.success and not failed else 'FAILED'}", flush=True)
    elapsed = time.perf_counter() - started

    print(f"\n{'date':<10}  {'symbol':<10} {'ticks':>7} {'first':>12} {'last':>12} {'min':>12} {'max':>12}  checks")
    for day, symbol, s, passed, failed in rows:
        if s["rows"]:
            print(
                f"{day}  {symbol:<10} {s['rows']:>7} {s['first_quote']:>12} {s['last_quote']:>12} "
                f"{s['min_quote']:>12} {s['max_quote']:>12}  {passed}" + (f" failed: {failed}" if failed else "")
            )
        else:
            print(f"{day}  {symbol:<10} materialization failed")
    n_ticks = sum(r[2]["rows"] for r in rows)
    print(
        f"\n{n_ticks:,} ticks in {total} partitions under {store.root} in {elapsed:.1f}s; "
        f"{'all checks passed' if not failures else f'{failures} failure(s)'}."
    )
    print("Browse them: DAGSTER_HOME=$PWD .venv/bin/dagster dev -w workspace.yaml")
    return 1 if failures else 0


def collect(args: argparse.Namespace) -> int:
    names = _symbols(args.symbols)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    options = CollectorOptions(flush_interval_s=args.flush_interval, silence_timeout_s=args.silence_timeout)
    store = TickStore(os.path.join(args.data_dir, "ticks"))
    collector = TickCollector(deriv_url(args.url), names, store, since=parse_epoch(args.since), options=options)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if args.duration:
            loop.call_later(args.duration, stop.set)

        async def report() -> None:
            while True:
                await asyncio.sleep(args.progress_interval)
                s = collector.stats
                print(
                    f"live {s.live:,}  backfilled {s.backfilled:,}  stored {s.stored:,}  duplicates dropped "
                    f"{s.duplicates:,}  reconnects {s.reconnects}",
                    flush=True,
                )

        reporter = asyncio.create_task(report())
        try:
            await collector.run(stop)
        finally:
            reporter.cancel()

    try:
        asyncio.run(run())
    except DerivAPIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    s = collector.stats
    print(
        f"stopped: {s.stored:,} ticks stored under {store.root} ({s.live:,} live, {s.backfilled:,} backfilled, "
        f"{s.duplicates:,} duplicates dropped, {s.reconnects} reconnects)"
    )
    return 0


def symbols(args: argparse.Namespace) -> int:
    print(f"{'symbol':<10} {'family':<12} {'pip':>7} {'tick s':>6}  {'simulated':<9} display name")
    for name, spec in catalog().items():
        print(
            f"{name:<10} {spec.family.value:<12} {spec.pip_size:>7} {spec.tick_interval_s or '-':>6}  "
            f"{'yes' if spec.simulated else 'no':<9} {spec.display_name}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scalping", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="materialize and check simulated ticks for a few symbols and days")
    p.add_argument("--symbols", default=DEMO_SYMBOLS, help=f"comma-separated (default {DEMO_SYMBOLS})")
    p.add_argument("--start", default=DEFAULT_ORIGIN.isoformat(), help="first UTC day (default %(default)s)")
    p.add_argument("--days", type=int, default=3, help="number of days (default %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="simulator seed (default %(default)s)")
    p.add_argument("--data-dir", default=os.environ.get("SCALPING_DATA_DIR", "data"), help="default %(default)s")
    p.set_defaults(func=demo)
    sub.add_parser("symbols", help="list the symbol catalog").set_defaults(func=symbols)
    c = sub.add_parser("collect", help="stream live ticks from the Deriv API (or the local server) into the store")
    c.add_argument("--symbols", required=True, help="comma-separated, e.g. R_100,1HZ100V,CRASH500")
    c.add_argument("--url", help="WebSocket URL (default DERIV_WS_URL, else Deriv's, with DERIV_APP_ID)")
    c.add_argument("--since", help="first epoch or UTC time to backfill from when nothing is stored yet (default: now)")
    c.add_argument("--duration", type=float, help="stop after this many seconds (default: run until SIGINT/SIGTERM)")
    c.add_argument("--data-dir", default=os.environ.get("SCALPING_DATA_DIR", "data"), help="default %(default)s")
    c.add_argument("--flush-interval", type=float, default=5.0, help="seconds between flushes (default %(default)s)")
    c.add_argument(
        "--silence-timeout",
        type=float,
        default=10.0,
        help="seconds without a tick of a symbol before reconnecting (default %(default)s)",
    )
    c.add_argument("--progress-interval", type=float, default=30.0, help="seconds between progress lines")
    c.set_defaults(func=collect)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UnknownSymbolError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
