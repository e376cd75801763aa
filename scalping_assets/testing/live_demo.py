"""The live loop end to end on this machine, with its real parts, in minutes (`make live-demo`).

    python -m scalping_assets.testing.live_demo --data-dir data/live-demo --fresh

The local Deriv server (`testing.fake_deriv`) plays a symbol whose volatility changes half-way, its
clock running `time_scale` times faster than the wall clock. Then, as in production:

1. the first two days are read from its history (the `ticks` source `collected`) and a champion is
   trained, evaluated, gated and exported (the demo's jobs, a small training);
2. `bentoml serve` serves it; the collector (`market.collector`) stores the live feed, and a client
   streams the same ticks to the service's WebSocket, which logs every prediction;
3. the code location's sensors (`sensor_loop.SensorLoop`, as the daemon evaluates them) do the rest on
   their own: each collected day becomes ticks, features and monitoring (prediction log, drift report,
   live performance); a failed check alerts the webhook and triggers a retrain on the last collected
   days; a promoted champion is exported, and the service follows the registry to it.

The day before the change is the control: its checks must pass and raise no alert. The demo ends when
the service answers with the retrained version (or at its timeout) and prints what each part did.
With `--stationary-days N` nothing changes: N whole days are played, and every failed check is a false
alarm (`benchmarks/bench_live.py` counts them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import httpx
from websockets.asyncio.client import connect

from scalping_assets.demo import Pipeline, code_location, code_location_env
from scalping_assets.market.collector import CollectorOptions, TickCollector
from scalping_assets.market.deriv_client import DerivClient
from scalping_assets.market.simulator import day_start_epoch
from scalping_assets.market.store import TickStore
from scalping_assets.market.symbols import UnknownSymbolError, get_symbol
from scalping_assets.settings import Settings

LIVE_SENSORS = [
    "collected_days_sensor",
    "live_performance_sensor",
    "alert_sensor",
    "retrain_sensor",
    "champion_promoted_sensor",
]
# Every family at half the demo profile's epochs: a family trained too little trades noise, and its
# Sharpe ratio, one more trial, raises the deflated-Sharpe hurdle of the others (the gate then keeps the
# champion, as it should).
SMALL_TRAINING = {"epochs": 3, "max_train_windows": 8_000}
# The stack's meta-learner on as many held-out windows per block as a base trains on (the demo's rule).
SMALL_STACK = {"max_oof_windows": SMALL_TRAINING["max_train_windows"]}
RETRAIN_DAYS = 2  # the control day and the changed one
# A flat class worth learning: a 10-tick move within 0.3 bp is NEUTRAL, about 4 % of SIG_AR1's rows. The
# default (0 bp) makes NEUTRAL an exact no-move, under 1 % of rows, which dataset_class_balance warns about
# on every dataset, a retrain's too (one more message on the alert channel).
FLAT_CLASS = {"threshold_bp": 0.3}
IN_FLIGHT = 256  # streamed ticks awaiting their answer: the service's pace sets the client's
SETTLE_TICKS = 3  # evaluations without a run after the version switched, before the demo ends
QUIET_TICKS = 30  # evaluations without a run, once the feed ended, after which the loop has nothing left to do
TAIL_S = 3_600  # of the day after the last live day: completes it, and feeds the check of the new version
REPORT = "live-demo.json"
QUIET_INSTANCE = {"telemetry": {"enabled": False}}


@dataclass(frozen=True)
class LiveDays:
    """A warm-up day, a training day, the live days the feed plays (from `clock_start`), then the first
    TAIL_S seconds of the day after them (which completes the last live day)."""

    warm: date
    train: date
    live: tuple[date, ...]
    clock_start: int

    @classmethod
    def demo(cls, first: date, control_hours: float) -> LiveDays:
        """Live: the control day's last `control_hours`, then the changed day."""
        control, changed = first + timedelta(days=2), first + timedelta(days=3)
        return cls(first, first + timedelta(days=1), (control, changed), day_start_epoch(changed) - round(control_hours * 3600))

    @classmethod
    def stationary(cls, first: date, days: int) -> LiveDays:
        """Live: `days` whole days, streamed from the first one's start (the clock starts after the
        training day, which history must hold whole); the service predicts once its features warmed up."""
        live = tuple(first + timedelta(days=2 + i) for i in range(days))
        return cls(first, first + timedelta(days=1), live, day_start_epoch(live[0]))

    @property
    def changed(self) -> date:
        return self.live[-1]

    @property
    def tail(self) -> date:
        return self.live[-1] + timedelta(days=1)

    @property
    def stop_epoch(self) -> int:
        return day_start_epoch(self.tail) + TAIL_S


@dataclass
class LiveDemoOptions:
    settings: Settings
    symbol: str = "SIG_AR1"
    first_day: date = date(2026, 1, 1)
    # The volatility change: +20 % is inside what the ticks' quality check accepts of the published
    # generator ([0.8, 1.25] of its sigma), so the day enters datasets, and the drift check sees it (a
    # third of the features). At x3 the quality check refuses the day as implausible: it never reaches
    # features, datasets or a retrain, which is right for an index whose generator is published.
    factor: float = 1.2
    control_hours: float = 2.0
    stationary_days: int = 0  # > 0: no change, this many whole days (the false-alarm rate of the checks)
    # What the service keeps up with on two cores (about 1,000 predictions a second) with room to spare:
    # a client that falls behind the clock leaves a day's last predictions to be logged after the
    # collector completed the day and its monitoring ran (prediction_log_complete then fails).
    time_scale: float = 700.0
    timeout_s: float = 1_800.0


@dataclass
class FeedStats:
    forwarded: int = 0
    answers: Counter = field(default_factory=Counter)  # version -> predictions answered
    warming: int = 0
    errors: Counter = field(default_factory=Counter)
    last_epoch: int = 0


class Feed:
    """The collector and a streaming client on the local Deriv server's live feed, in a thread of
    their own: the collector stores every tick; the client sends each one to the service's
    WebSocket (at most IN_FLIGHT unanswered) and counts the answers by model version."""

    def __init__(self, deriv_url: str, service_url: str, symbol: str, store: TickStore, days: LiveDays):
        self.deriv_url, self.symbol, self.store, self.days = deriv_url, symbol, store, days
        self.service_ws = service_url.replace("http://", "ws://") + "/stream/ticks?client_id=live-demo"
        self.stats = FeedStats()
        self.streamed = threading.Event()  # the client reached the stop epoch
        self.finished = threading.Event()  # both ended
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="live-feed", daemon=True)

    def start(self) -> Feed:
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by the demo, which stops
            self.error = exc
        finally:
            self.finished.set()

    async def _run(self) -> None:
        stop = asyncio.Event()
        since = day_start_epoch(self.days.live[0])  # the first live day's ticks before the clock's start: from history
        options = CollectorOptions(flush_interval_s=0.5)
        collector = TickCollector(self.deriv_url, [self.symbol], self.store, since=since, options=options)
        collecting = asyncio.create_task(collector.run(stop))
        try:
            await self._stream()
            await asyncio.sleep(3 * options.flush_interval_s)  # the tail's first ticks stored: the changed day complete
        finally:
            stop.set()
            await collecting

    async def _stream(self) -> None:
        ticks: asyncio.Queue = asyncio.Queue()
        slots = asyncio.Semaphore(IN_FLIGHT)
        async with DerivClient(self.deriv_url, on_tick=ticks.put_nowait) as deriv, connect(self.service_ws) as service:

            async def answers() -> None:
                async for raw in service:
                    slots.release()
                    answer = json.loads(raw)
                    if "error" in answer:
                        self.stats.errors[answer["error"][:120]] += 1
                    elif answer.get("ready"):
                        self.stats.answers[answer["version"]] += 1
                    else:
                        self.stats.warming += 1

            reader = asyncio.create_task(answers())
            await deriv.subscribe_ticks(self.symbol)  # the server's clock starts now
            try:
                while True:
                    tick = await ticks.get()
                    if tick["epoch"] >= self.days.stop_epoch:
                        break
                    await slots.acquire()
                    await service.send(json.dumps({"symbol": tick["symbol"], "epoch": tick["epoch"], "quote": tick["quote"]}))
                    self.stats.forwarded += 1
                    self.stats.last_epoch = tick["epoch"]
                for _ in range(IN_FLIGHT):  # every answer in
                    await asyncio.wait_for(slots.acquire(), 60)
            finally:
                reader.cancel()
        self.streamed.set()


def stream_stored(service_url: str, store: TickStore, symbol: str, day: date) -> Counter:
    """The stored ticks of `day` streamed to the service on a new connection: answers by version."""

    async def run() -> Counter:
        answers = Counter()
        frame = store.read_day(symbol, day)
        url = service_url.replace("http://", "ws://") + "/stream/ticks?client_id=live-demo-check"
        async with connect(url) as ws:
            for epoch, quote in zip(frame["epoch"].tolist(), frame["quote"].tolist(), strict=True):
                await ws.send(json.dumps({"symbol": symbol, "epoch": epoch, "quote": quote}))
                answer = json.loads(await ws.recv())
                answers[answer.get("version", "error" if "error" in answer else "warming up")] += 1
        return answers

    return asyncio.run(run())


def served_version(service_url: str) -> str | None:
    champion = httpx.post(f"{service_url}/info", json={}, timeout=10).json()["models"].get("champion")
    return champion["version"] if champion else None


def follow_lines(log: Path) -> list[str]:
    """The service's own lines saying it followed the registry to another version."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return [m.group(0) for m in re.finditer(r"followed the registry at \S+: .*", text)]


@dataclass
class LiveDemoResult:
    """What a live demo did, for people (printed) and for its test."""

    initial: str | None = None  # the champion version served first
    served: str | None = None  # at the end
    launched: list = field(default_factory=list)  # sensor_loop.Launched
    alerts: list[dict] = field(default_factory=list)  # bodies the local webhook received
    follows: list[str] = field(default_factory=list)
    final_answers: Counter = field(default_factory=Counter)
    feed: FeedStats | None = None
    sensor_errors: dict[str, str] = field(default_factory=dict)  # a sensor's last failed evaluation
    problem: str = ""

    def summary(self) -> dict:
        """The result as JSON: what the test of the loop reads (`REPORT` in the data folder)."""
        return {
            "initial": self.initial,
            "served": self.served,
            "closed": self.closed,
            "problem": self.problem,
            "launched": [
                {
                    "sensor": launched.sensor,
                    "job": launched.job,
                    "partition": launched.partition,
                    "success": launched.outcome.success,
                    "checks": {c.check_name: {"passed": c.passed, "description": c.description} for c in launched.outcome.checks},
                    "errors": launched.outcome.errors,
                }
                for launched in self.launched
            ],
            "alerts": self.alerts,
            "follows": self.follows,
            "sensor_errors": self.sensor_errors,
            "final_answers": dict(self.final_answers),
            "feed": None
            if self.feed is None
            else {
                "forwarded": self.feed.forwarded,
                "answers": dict(self.feed.answers),
                "warming": self.feed.warming,
                "errors": dict(self.feed.errors),
            },
        }

    @property
    def closed(self) -> bool:
        return (
            not self.problem
            and self.served is not None
            and self.served != self.initial
            and bool(self.final_answers.get(self.served))
        )


def instance_dir(settings: Settings) -> Path:
    """The demo's Dagster instance, in its data folder (`DAGSTER_HOME` for `dagster dev` to browse it)."""
    folder = (Path(settings.data_dir) / "dagster").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_live_demo(options: LiveDemoOptions) -> LiveDemoResult:
    from scalping_assets.testing.fake_deriv import FakeDerivServer, ServerThread
    from scalping_assets.testing.tick_source import VolatilityChange
    from scalping_assets.testing.webhook import WebhookReceiver

    if options.stationary_days:
        days, changes = LiveDays.stationary(options.first_day, options.stationary_days), ()
    else:
        days = LiveDays.demo(options.first_day, options.control_hours)
        changes = (VolatilityChange(options.symbol, day_start_epoch(days.changed), options.factor),)
    server = FakeDerivServer(
        seed=options.settings.seed, start=days.clock_start, time_scale=options.time_scale, changes=changes, hold=True
    )
    own_hook = not os.environ.get("SCALPING_ALERT_WEBHOOK_URL")
    with ServerThread(server) as deriv, WebhookReceiver() if own_hook else _NoHook() as hook:
        env = code_location_env(options.settings) | {
            "SCALPING_TICK_SOURCE": "deriv",
            "DERIV_WS_URL": deriv.url,
            "SCALPING_SYMBOLS": options.symbol,
            "SCALPING_START_DAY": days.warm.isoformat(),
            "SCALPING_RETRAIN_DAYS": str(RETRAIN_DAYS),
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            **({"SCALPING_ALERT_WEBHOOK_URL": hook.url} if own_hook else {}),
        }
        os.environ.update(env)  # before the code location is first imported: it reads them
        played = (
            f"{len(days.live)} stationary days from {days.live[0]}"
            if options.stationary_days
            else f"volatility x{options.factor:g} from {days.changed} 00:00 UTC"
        )
        print(
            f"local Deriv server on {deriv.url}: {options.symbol} from {days.warm}, {played}, "
            f"clock x{options.time_scale:g} (held until the feed subscribes)",
            flush=True,
        )
        return _run(options, days, deriv.url, hook)


class _NoHook:
    """The user's own webhook (SCALPING_ALERT_WEBHOOK_URL): its messages are theirs to read."""

    bodies: list[dict] = []

    def __enter__(self) -> _NoHook:
        return self

    def __exit__(self, *exc) -> None:
        pass


def _run(options: LiveDemoOptions, days: LiveDays, deriv_url: str, hook) -> LiveDemoResult:
    from scalping_assets.assets.models import BASE_MODEL_ASSETS
    from scalping_assets.definitions import build_resources, defs
    from scalping_assets.records import GateRecord
    from scalping_assets.testing.bentoml_server import bentoml_server
    from scalping_assets.testing.sensor_loop import SensorLoop

    settings, symbol, result = options.settings, options.symbol, LiveDemoResult()
    resources = build_resources(settings)
    # An instance of its own: a retrain's dataset partition is requested once per instance.
    with (
        dg.DagsterInstance.local_temp(str(instance_dir(settings)), overrides=QUIET_INSTANCE) as instance,
        code_location(instance) as location,
    ):
        pipeline = Pipeline(f"live-{days.train}", resources, instance, location)
        print(f"[1/3] history: {days.warm} (warm-up) and {days.train} (training) from the local server", flush=True)
        pipeline.run_days(
            "daily_job", [(days.warm, symbol), (days.train, symbol)], {"ticks": {"config": {"source": "collected"}}}
        )
        dataset = {"symbols": [symbol], "start": str(days.train), "end": str(days.train), "labels": FLAT_CLASS}
        pipeline.run("dataset_job", {"training_dataset": {"config": dataset}})
        small = {a.key.path[-1]: {"config": SMALL_TRAINING} for a in BASE_MODEL_ASSETS}
        small["ensemble_model"] = {"config": SMALL_STACK}
        pipeline.run("models_job", small, "every model family, small")
        pipeline.run("evaluation_job", announce="backtests and the gate")
        gate = pipeline.record("champion", GateRecord)
        if gate.champion is None:
            result.problem = f"the gate promoted no champion, nothing to serve: {gate.message}"
            return result
        pipeline.run("serving_job", announce=f"exporting {gate.registered_model} v{gate.champion}")
        if pipeline.failures:
            result.problem = f"{pipeline.failures} failure(s) before the live part: see the runs above"
            return result
        service_env = {
            "MLFLOW_TRACKING_URI": settings.mlflow_uri(),
            "SCALPING_MODEL": gate.registered_model,
            "SCALPING_FOLLOW_INTERVAL": "1",
            "SCALPING_WORKERS": "1",
        }
        service_log = Path(settings.data_dir) / "live-demo-service.log"
        with bentoml_server(service_env, service_log) as service_url:
            result.initial = served_version(service_url)
            print(f"[2/3] bentoml serve on {service_url}: {gate.registered_model} v{result.initial}; the feed starts", flush=True)
            loop = SensorLoop(pipeline, defs, LIVE_SENSORS, log_level=logging.WARNING)  # the demo prints what they did
            loop.tick()  # the alert and retrain sensors watch from now on
            store = resources["tick_store"].store()
            feed = Feed(deriv_url, service_url, symbol, store, days).start()
            print("[3/3] the sensors take over (as the daemon would evaluate them), every second", flush=True)
            _loop(loop, feed, service_url, result, options.timeout_s, bool(options.stationary_days))
            result.feed = feed.stats
            result.launched = loop.launched
            result.sensor_errors = dict(loop.errors)
            result.follows = follow_lines(service_log)
            if result.served != result.initial and feed.streamed.is_set() and not options.stationary_days:
                result.final_answers = stream_stored(service_url, store, symbol, days.tail)
    result.alerts = list(hook.bodies)
    return result


def verdict(outcome) -> str:
    failed = [c.check_name for c in outcome.checks if not c.passed]
    if not outcome.success:
        return "run failed"
    return f"checks failed: {', '.join(failed)}" if failed else "ok"


def _loop(loop, feed: Feed, service_url: str, result: LiveDemoResult, timeout_s: float, stationary: bool) -> None:
    deadline = time.monotonic() + timeout_s
    last_report, quiet = 0.0, 0  # evaluations without a run since the feed finished

    def announce(launched) -> None:
        print(f"  {launched.sensor} -> {launched.job} {launched.partition}: {verdict(launched.outcome)}", flush=True)
        launched.outcome.report()

    while True:
        launched = loop.tick(announce)
        quiet = quiet + 1 if feed.finished.is_set() and not launched else 0
        result.served = served_version(service_url)
        if feed.error is not None:
            result.problem = f"the feed stopped: {type(feed.error).__name__}: {feed.error}"
            return
        if feed.finished.is_set() and result.served != result.initial and not stationary and quiet >= SETTLE_TICKS:
            return  # a few evaluations after the switch: the alert sensor has read the retrain's outcome
        if quiet >= QUIET_TICKS:  # the feed ended and every sensor has had its say
            if not stationary:
                result.problem = (
                    f"nothing ran for {QUIET_TICKS} evaluations after the feed ended; the service still serves v{result.served}"
                )
            return
        if time.monotonic() > deadline:
            result.problem = f"the loop did not close within {timeout_s:.0f} s"
            return
        if time.monotonic() - last_report > 15:
            s = feed.stats
            print(f"  feed: {s.forwarded:,} ticks streamed, up to epoch {s.last_epoch}; answers {dict(s.answers)}", flush=True)
            last_report = time.monotonic()
        time.sleep(1)


def print_report(result: LiveDemoResult, settings: Settings) -> None:
    print("\nwhat the sensors launched:")
    for launched in result.launched:
        outcome = launched.outcome
        print(f"  {launched.sensor:<24} {launched.job:<15} {launched.partition:<45} {verdict(outcome)}")
        for check in (c for c in outcome.checks if not c.passed):
            print(f"    {check.check_name}: {check.description}")
    if result.feed is not None:
        s = result.feed
        errors = f"; errors {dict(s.errors)}" if s.errors else ""
        print(f"\nthe feed: {s.forwarded:,} ticks streamed to the service; answers by version {dict(s.answers)}{errors}")
    for sensor, error in result.sensor_errors.items():
        print(f"  {sensor}: an evaluation failed ({error}); the next one went on")
    print(f"\n{len(result.alerts)} message(s) to the webhook:")
    for body in result.alerts:
        print("  " + body["text"].replace("\n", "\n  "))
    print("\nthe service:")
    for line in result.follows or ["never followed the registry to another version"]:
        print(f"  {line}")
    if result.final_answers:
        print(f"  the tail day's ticks streamed again: answers by version {dict(result.final_answers)}")
    home = instance_dir(settings)
    env = " ".join(f"{k}={v}" for k, v in code_location_env(settings).items())
    print(f"\nBrowse the runs: DAGSTER_HOME={home} {env} SCALPING_TICK_SOURCE=deriv .venv/bin/dagster dev -w workspace.yaml")
    if result.closed:
        print(
            f"The loop closed on its own: v{result.initial} served, drift found, v{result.served} retrained, exported and served."
        )
    else:
        print(f"The loop did not close: {result.problem or 'no new version served'}")


OWN_SETTINGS = ("SCALPING_", "MLFLOW_", "DAGSTER_", "DERIV_")  # the demo sets its own


def run_in_subprocess(
    data_dir: Path, *args: str, timeout_s: float | None = None
) -> tuple[subprocess.CompletedProcess, dict | None]:
    """The demo in a process of its own (the code location reads the demo's settings when it is
    imported), with none of this process's settings: how it ended, and its report (None if it wrote none)."""
    from scalping_assets.testing.server_process import REPO_ROOT

    command = [sys.executable, "-m", "scalping_assets.testing.live_demo", "--data-dir", str(data_dir), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_SETTINGS)}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    report = data_dir / REPORT
    return done, json.loads(report.read_text()) if report.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scalping_assets.testing.live_demo",
        description="The live loop end to end: a local feed whose volatility changes half-way, the service, "
        "monitoring, one alert, a retrain and the new version served.",
    )
    parser.add_argument("--symbol", default="SIG_AR1", help="the symbol played (default %(default)s: a planted signal to trade)")
    parser.add_argument(
        "--start", default="2026-01-01", help="first day: warm-up; then training, control, change (default %(default)s)"
    )
    parser.add_argument(
        "--factor", type=float, default=1.2, help="volatility multiplier from the change on (default %(default)s)"
    )
    parser.add_argument("--control-hours", type=float, default=2.0, help="hours streamed before the change (default %(default)s)")
    parser.add_argument("--time-scale", type=float, default=700.0, help="server seconds per wall second (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before giving up (default %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (default %(default)s)")
    parser.add_argument(
        "--stationary-days", type=int, default=0, help="no change: this many whole days, every check's false alarms (0: the demo)"
    )
    parser.add_argument(
        "--data-dir", default="data/live-demo", help="its own folder: data, MLflow, Dagster instance (default %(default)s)"
    )
    parser.add_argument("--fresh", action="store_true", help="empty --data-dir first")
    args = parser.parse_args(argv)
    try:
        if not get_symbol(args.symbol).simulated:
            raise ValueError(f"{args.symbol} has no published generation formula: the local Deriv server cannot play it")
        start = date.fromisoformat(args.start)
    except (UnknownSymbolError, ValueError) as exc:
        parser.error(str(exc))
    data_dir = Path(args.data_dir)
    if data_dir.exists() and any(data_dir.iterdir()):
        if not args.fresh:
            parser.error(f"{data_dir} is not empty: the live demo starts from nothing (pass --fresh to empty it)")
        shutil.rmtree(data_dir)
    settings = Settings(data_dir=data_dir, seed=args.seed)
    options = LiveDemoOptions(
        settings=settings,
        symbol=args.symbol,
        first_day=start,
        factor=args.factor,
        control_hours=args.control_hours,
        time_scale=args.time_scale,
        timeout_s=args.timeout,
        stationary_days=args.stationary_days,
    )
    result = run_live_demo(options)
    print_report(result, settings)
    (data_dir / REPORT).write_text(json.dumps(result.summary(), indent=1, default=str))
    return 0 if result.closed else 1


if __name__ == "__main__":
    sys.exit(main())
