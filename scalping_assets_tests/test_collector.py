"""Zero lost, zero duplicated: the collector against the local server with faults, and across a kill."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from scalping_assets.assets.ticks import ticks
from scalping_assets.definitions import build_resources
from scalping_assets.market.collector import CollectorOptions, TickCollector
from scalping_assets.market.store import TickStore
from scalping_assets.partitions import tick_partition
from scalping_assets.settings import Settings
from scalping_assets.testing.fake_deriv import FakeDerivServer, Faults, ServerThread
from scalping_assets.testing.tick_audit import audit, flawless, print_audit
from scalping_assets.testing.tick_source import SimulatedTicks

START = 1_767_312_000  # 2026-01-02 00:00 UTC
SINCE = START - 1_800
SEED = 6
SYMBOLS = ["1HZ100V", "R_100", "CRASH500", "stpRNG"]  # 1 s, 2 s, a jump process, a step process
FAST = CollectorOptions(
    flush_interval_s=0.5,
    silence_timeout_s=0.8,
    hole_grace_s=0.3,
    backoff_base_s=0.05,
    backoff_cap_s=0.4,
    rate_limit_wait_s=0.1,
    request_timeout_s=3.0,
)


def collect_for(root: Path, fake: FakeDerivServer, symbols: list[str], since: int, seconds: float, **options) -> tuple:
    """Run a collector in process against `fake` for `seconds`; (stats, store, collector, server epoch at the stop)."""
    store = TickStore(root / "ticks")
    with ServerThread(fake) as server:
        collector = TickCollector(server.url, symbols, store, since=since, options=replace(FAST, **options), seed=1)

        async def bounded():
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(seconds, stop.set)
            return await collector.run(stop)

        stats = asyncio.run(bounded())
        stopped_at = fake.clock.now()
    return stats, store, collector, stopped_at


def test_drops_stall_repeats_reorders_misses_skips_refusals_short_pages_and_rate_limits_lose_nothing(tmp_path):
    faults = Faults(
        drop_every_s=3.0,
        stall_at_s=8.0,
        stall_for_s=2.0,
        repeat_prob=0.02,
        reorder_prob=0.02,
        rate_limit_every=9,
        miss_prob=0.01,
        skip_prob=0.005,
        refuse={"CRASH500": "MarketIsClosed"},
        refuse_count=2,
        history_page_max=1_500,
        history_rate_limit_every=7,
        seed=2,
    )
    fake = FakeDerivServer(seed=SEED, start=START, time_scale=30, faults=faults)
    stats, store, _, _ = collect_for(tmp_path, fake, SYMBOLS, SINCE, 20)
    report = {s: audit(fake, store, s, SINCE) for s in SYMBOLS}
    print_audit(f"fault run: {stats}, server drops {fake.drops}", report)
    assert flawless(report), report
    # The faults really happened and were survived.
    assert fake.drops >= 5 and stats.reconnects >= 5 and stats.silences >= 1 and stats.gap_fills >= 5
    assert stats.duplicates > 0 and stats.live > 1_000 and stats.backfilled > 1_000 and stats.refusals >= 2
    # The run reached into the last seconds: the collector kept up with the live stream on every cadence.
    assert report["1HZ100V"]["stored"] > 1_800 + 30 * 15
    assert report["R_100"]["stored"] > (1_800 + 30 * 15) // 2


@pytest.mark.parametrize(
    ("symbols", "faults"),
    [
        (["R_100"], Faults(miss_prob=0.05, seed=3)),  # a 2 s symbol misses live ticks
        (["R_100", "1HZ100V"], Faults(skip_prob=0.03, seed=3)),  # the feed's own epochs skip
    ],
    ids=["two-second-missed-ticks", "skipping-epochs"],
)
def test_gap_fills_keep_every_cadence_stored_to_the_live_edge(symbols, faults, tmp_path):
    fake = FakeDerivServer(seed=SEED, start=START, time_scale=30, faults=faults)
    stats, store, _, stopped_at = collect_for(tmp_path, fake, symbols, START, 6, silence_timeout_s=5.0)
    report = {s: audit(fake, store, s, START) for s in symbols}
    print_audit(f"gap fills: {stats}", report)
    assert flawless(report), report
    assert stats.gap_fills >= 1 and stats.reconnects == 0
    for symbol in symbols:  # stored up to the last second or two of the run, not stuck at the first hole
        assert store.last_epoch(symbol) >= stopped_at - 2 * 30, (symbol, store.last_epoch(symbol), stopped_at)


def test_a_refused_symbol_is_retried_or_dropped_while_the_others_keep_collecting(caplog, tmp_path):
    faults = Faults(refuse={"R_100": "MarketIsClosed", "R_50": "InvalidSymbol"}, refuse_count=3)
    fake = FakeDerivServer(seed=SEED, start=START, time_scale=30, faults=faults)
    with caplog.at_level("INFO", logger="scalping_assets.market.collector"):
        stats, store, collector, _ = collect_for(tmp_path, fake, ["1HZ100V", "R_100", "R_50"], SINCE, 6)
    report = {s: audit(fake, store, s, SINCE) for s in ["1HZ100V", "R_100"]}
    print_audit(f"refusals: {stats}", report)
    assert flawless(report), report
    # MarketIsClosed: retried with back-off until the market opens; InvalidSymbol: refused for good, once.
    assert [r["ticks"] for r in fake.requests if r.get("ticks") == "R_100"] == ["R_100"] * 4
    assert [r["ticks"] for r in fake.requests if r.get("ticks") == "R_50"] == ["R_50"]
    assert set(collector.refused) == {"R_50"} and "InvalidSymbol" in collector.refused["R_50"]
    assert store.days("R_50") == [] and stats.refusals == 4
    assert any("R_50" in m and "refused" in m and "not collected" in m for m in caplog.messages)
    assert report["R_100"]["stored"] > 1_800 // 2


def test_history_paging_goes_on_past_short_pages(tmp_path):
    fake = FakeDerivServer(seed=SEED, start=START, time_scale=30, faults=Faults(history_page_max=700))
    since = START - 3 * 3_600
    stats, store, _, _ = collect_for(tmp_path, fake, ["1HZ100V", "R_100"], since, 5)
    report = {s: audit(fake, store, s, since) for s in ["1HZ100V", "R_100"]}
    print_audit(f"short pages: {stats}", report)
    assert flawless(report), report
    assert report["1HZ100V"]["stored"] > 3 * 3_600


def test_a_backfill_longer_than_a_connection_lasts_progresses_page_by_page(tmp_path):
    # Each history page is 0.3 s late and every connection dies after 1 s: twelve hours of history (nine
    # pages) cannot be fetched on one connection, only kept page by page across reconnects.
    faults = Faults(drop_every_s=1.0, history_delay_s=0.3)
    fake = FakeDerivServer(seed=SEED, start=START, time_scale=10, faults=faults)
    since = START - 12 * 3_600
    stats, store, _, _ = collect_for(tmp_path, fake, ["1HZ100V"], since, 12, silence_timeout_s=5.0)
    report = {"1HZ100V": audit(fake, store, "1HZ100V", since)}
    print_audit(f"long backfill under drops: {stats}, server drops {fake.drops}", report)
    assert flawless(report), report
    # All twelve hours are stored, and live ticks after them (the tail behind the last drop's hole waits
    # in memory for its own fill, as it must).
    assert stats.reconnects >= 5 and store.last_epoch("1HZ100V") > START


def test_a_short_stall_is_seen_as_a_hole_and_filled_from_history(tmp_path):
    fake = FakeDerivServer(seed=SEED, start=START, time_scale=30, faults=Faults(stall_at_s=2.0, stall_for_s=0.4))
    store = TickStore(tmp_path / "ticks")
    options = CollectorOptions(**{**FAST.__dict__, "silence_timeout_s": 5.0})
    with ServerThread(fake) as server:
        collector = TickCollector(server.url, ["1HZ100V"], store, since=START, options=options)

        async def bounded():
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(5, stop.set)
            return await collector.run(stop)

        stats = asyncio.run(bounded())
    assert stats.reconnects == 0 and stats.gap_fills >= 1
    assert flawless({"1HZ100V": audit(fake, store, "1HZ100V", START)})


def collect_process(url: str, data_dir: Path, *extra: str) -> subprocess.Popen:
    scalping = str(Path(sys.executable).parent / "scalping")
    args = ["collect", "--url", url, "--symbols", ",".join(SYMBOLS), "--since", str(SINCE), "--data-dir", str(data_dir)]
    args += ["--flush-interval", "0.5", "--silence-timeout", "1.0", "--progress-interval", "1", *extra]
    return subprocess.Popen([scalping, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_ticks(store: TickStore, symbol: str, minimum: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(store.read(symbol)) >= minimum:
                return
        except Exception:  # a reader may race the very first write of a new partition directory
            pass
        time.sleep(0.2)
    raise AssertionError(f"fewer than {minimum} {symbol} ticks stored after {timeout} s")


def test_kill_mid_run_and_restart_lose_and_duplicate_nothing(tmp_path):
    fake = FakeDerivServer(seed=SEED, start=START, time_scale=30, faults=Faults(drop_every_s=4.0, repeat_prob=0.01))
    store = TickStore(tmp_path / "ticks")
    with ServerThread(fake) as server:
        first = collect_process(server.url, tmp_path)
        wait_for_ticks(store, "1HZ100V", 2_000)
        time.sleep(1.0)
        first.send_signal(signal.SIGKILL)  # no chance to flush
        first.wait(10)
        stored_at_kill = {s: len(store.read(s)) for s in SYMBOLS}
        time.sleep(2.0)  # the server goes on: the restart has a gap to backfill
        second = collect_process(server.url, tmp_path, "--duration", "6")
        out, _ = second.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL
    assert second.returncode == 0, out
    assert "stopped:" in out
    report = {s: audit(fake, store, s, SINCE) for s in SYMBOLS}
    print_audit(f"kill/restart: stored at kill {stored_at_kill}", report)
    assert flawless(report), report
    assert all(report[s]["stored"] > stored_at_kill[s] for s in SYMBOLS)
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "ticks").rglob("*"))


def sigterm_to_exit_s(process: subprocess.Popen) -> float:
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    finally:
        process.kill()
    return time.monotonic() - sent


def test_sigterm_during_a_backfill_stops_within_two_seconds_keeping_every_page_stored(tmp_path):
    # Two days of history behind four symbols, each page 1.5 s late: the backfill takes minutes.
    fake = FakeDerivServer(seed=SEED, start=START + 2 * 86_400, time_scale=5, faults=Faults(history_delay_s=1.5))
    since = START
    store = TickStore(tmp_path / "ticks")
    with ServerThread(fake) as server:
        process = collect_process(server.url, tmp_path, "--since", str(since))
        wait_for_ticks(store, "1HZ100V", 5_000)  # the first page is stored while the rest is still coming
        exit_s = sigterm_to_exit_s(process)
        out = process.stdout.read()
    print(f"\nSIGTERM to exit during a backfill: {exit_s:.2f} s")
    assert process.returncode == 0 and "stopped:" in out, out
    assert exit_s < 2.0
    report = {s: audit(fake, store, s, since) for s in SYMBOLS if store.days(s)}
    print_audit("stored before the SIGTERM", report)
    assert flawless(report) and "1HZ100V" in report, report


def test_sigterm_during_a_rate_limit_wait_stops_within_two_seconds(tmp_path):
    # Every history call is answered RateLimit; the collector waits 60 s (its default) before retrying.
    fake = FakeDerivServer(seed=SEED, start=START, time_scale=5, faults=Faults(history_rate_limit_every=1))
    with ServerThread(fake) as server:
        process = collect_process(server.url, tmp_path)
        deadline = time.monotonic() + 30
        while fake._history_calls < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        exit_s = sigterm_to_exit_s(process)
        out = process.stdout.read()
    print(f"\nSIGTERM to exit during a RateLimit wait: {exit_s:.2f} s")
    assert fake._history_calls >= 1, out
    assert process.returncode == 0 and "stopped:" in out, out
    assert exit_s < 2.0


def test_collect_command_exits_with_a_clear_message_when_every_symbol_is_refused(tmp_path):
    fake = FakeDerivServer(seed=SEED, start=START, faults=Faults(refuse={"R_100": "InvalidSymbol"}))
    with ServerThread(fake) as server:
        scalping = str(Path(sys.executable).parent / "scalping")
        args = ["collect", "--url", server.url, "--symbols", "R_100", "--data-dir", str(tmp_path), "--duration", "20"]
        done = subprocess.run([scalping, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert "R_100" in done.stderr and "InvalidSymbol" in done.stderr and "nothing left to collect" in done.stderr


def test_ticks_asset_backfills_a_day_from_the_deriv_source(tmp_path):
    day = date(2026, 1, 3)
    fake = FakeDerivServer(seed=SEED, start=START + 2 * 86_400 + 600)
    with ServerThread(fake) as server, dg.instance_for_test() as instance:
        resources = build_resources(Settings(data_dir=tmp_path, deriv_url=server.url))
        result = dg.materialize(
            [ticks],
            partition_key=tick_partition(day.isoformat(), "R_75"),
            resources=resources,
            instance=instance,
            run_config={"ops": {"ticks": {"config": {"source": "deriv"}}}},
        )
    assert result.success
    stored = TickStore(tmp_path / "ticks").read_day("R_75", day)
    epochs, quotes = SimulatedTicks(SEED).between("R_75", START + 86_400, START + 2 * 86_400 - 1)
    assert np.array_equal(stored["epoch"], epochs) and np.array_equal(stored["quote"], quotes)
    assert len(stored) == 43_200


@pytest.mark.parametrize("symbols", [["RB100"], ["NOPE"]])
def test_collector_refuses_symbols_it_cannot_collect(symbols, tmp_path):
    with pytest.raises((ValueError, KeyError)):
        TickCollector("ws://127.0.0.1:9", symbols, TickStore(tmp_path))


def test_collect_command_reports_a_bad_symbol(tmp_path):
    scalping = str(Path(sys.executable).parent / "scalping")
    done = subprocess.run(
        [scalping, "collect", "--symbols", "R_10,NOPE", "--url", "ws://127.0.0.1:9"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ},
        timeout=60,
    )
    assert done.returncode == 2 and "unknown symbol 'NOPE'" in done.stderr


def test_symbol_state_holds_each_epoch_once_and_completes_only_without_holes():
    from scalping_assets.market.collector import SymbolState

    state = SymbolState(interval=1, complete=100, stored=100)
    assert not state.add(100, 1.0)  # already stored
    assert state.add(101, 1.0) and not state.add(101, 1.0)  # a repeat
    state.advance()
    assert state.complete == 101 and not state.has_hole()
    assert state.add(104, 1.3, 1.2, 1.4) and state.add(103, 1.2)  # reordered, 102 missing
    state.advance()
    assert state.complete == 101 and state.has_hole()
    assert not state.add(103, 1.2, 1.1, 1.3)  # a live copy of a history tick brings its bid/ask
    assert state.pending[103] == (1.2, 1.1, 1.3)
    state.add(102, 1.1)
    state.advance()
    assert state.complete == 104 and not state.has_hole()


def test_a_tick_within_one_cadence_of_the_watermark_is_the_next_whatever_epoch_the_watermark_stands_on():
    from scalping_assets.market.collector import SymbolState

    # A 2 s symbol whose gap fill ended one second before the first live tick after the hole.
    state = SymbolState(interval=2, complete=103, stored=100)
    for epoch in (104, 106, 110):
        state.add(epoch, 1.0)
    state.advance()
    assert state.complete == 106 and state.has_hole() and state.hole_end() == 109  # 108 is missing
    # The feed skipped 108 (history has nothing there): filled through 109, the watermark moves on.
    state.complete = 109
    state.advance()
    assert state.complete == 110 and not state.has_hole()
    # Spacing wider than the cadence with no fill is a hole on either cadence.
    one = SymbolState(interval=1, complete=10, stored=10)
    one.add(12, 1.0)
    one.advance()
    assert one.complete == 10 and one.hole_end() == 11
