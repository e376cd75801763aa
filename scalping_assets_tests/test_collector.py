"""Zero lost, zero duplicated: the collector against the local server with faults, and across a kill."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from scalping_assets.assets.ticks import ticks
from scalping_assets.definitions import build_resources
from scalping_assets.market.collector import CollectorOptions, TickCollector
from scalping_assets.market.fake_deriv import FakeDerivServer, Faults, ServerThread
from scalping_assets.market.store import TickStore
from scalping_assets.market.tick_source import SimulatedTicks
from scalping_assets.partitions import tick_partition

START = 1_767_312_000  # 2026-01-02 00:00 UTC
SINCE = START - 1_800
SEED = 6
SYMBOLS = ["1HZ100V", "R_50", "CRASH500", "stpRNG"]
FAST = CollectorOptions(
    flush_interval_s=0.5,
    silence_timeout_s=0.8,
    hole_grace_s=0.3,
    backoff_base_s=0.05,
    backoff_cap_s=0.4,
    rate_limit_wait_s=0.1,
    request_timeout_s=3.0,
)


def lost_and_duplicated(store: TickStore, symbol: str, since: int) -> tuple[int, int, int]:
    """(stored, lost, duplicated) against the ticks the server generated from `since` to the last stored one."""
    stored = store.read(symbol)
    epochs = stored["epoch"].to_numpy()
    assert np.all(np.diff(epochs) >= 0), f"{symbol}: out of order"
    truth_epochs, truth_quotes = SimulatedTicks(SEED).between(symbol, since, epochs[-1])
    lost = len(np.setdiff1d(truth_epochs, epochs))
    duplicated = len(epochs) - len(np.unique(epochs))
    unique_epochs, first = np.unique(epochs, return_index=True)
    assert np.array_equal(unique_epochs, truth_epochs[np.isin(truth_epochs, unique_epochs)])
    assert np.array_equal(stored["quote"].to_numpy()[first], truth_quotes[np.isin(truth_epochs, unique_epochs)])
    assert epochs[0] == truth_epochs[0], f"{symbol}: the backfill did not start at {since}"
    return len(epochs), lost, duplicated


def test_drops_stall_repeats_reorders_and_rate_limits_lose_and_duplicate_nothing(tmp_path):
    faults = Faults(
        drop_every_s=3.0, stall_at_s=8.0, stall_for_s=2.0, repeat_prob=0.02, reorder_prob=0.02, rate_limit_every=9, seed=2
    )
    fake = FakeDerivServer(seed=SEED, start=START, time_scale=30, faults=faults)
    store = TickStore(tmp_path / "ticks")
    with ServerThread(fake) as server:
        collector = TickCollector(server.url, SYMBOLS, store, since=SINCE, options=FAST, seed=1)

        async def bounded():
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(20, stop.set)
            return await collector.run(stop)

        stats = asyncio.run(bounded())
    report = {s: lost_and_duplicated(store, s, SINCE) for s in SYMBOLS}
    print(f"\nfault run: {stats}, server drops {fake.drops}; (stored, lost, duplicated) {report}")
    assert all(lost == 0 and dup == 0 for _, lost, dup in report.values()), report
    # The faults really happened and were survived.
    assert fake.drops >= 5 and stats.reconnects >= 5 and stats.silences >= 1
    assert stats.duplicates > 0 and stats.live > 1_000 and stats.backfilled > 1_000
    # The run reached into the last seconds: the collector kept up with the live stream.
    assert report["1HZ100V"][0] > 1_800 + 30 * 15


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
    assert lost_and_duplicated(store, "1HZ100V", START)[1:] == (0, 0)


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
    report = {s: lost_and_duplicated(store, s, SINCE) for s in SYMBOLS}
    print(f"\nkill/restart: stored at kill {stored_at_kill}; (stored, lost, duplicated) {report}")
    assert all(lost == 0 and dup == 0 for _, lost, dup in report.values()), report
    assert all(report[s][0] > stored_at_kill[s] for s in SYMBOLS)
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "ticks").rglob("*"))


def test_ticks_asset_backfills_a_day_from_the_deriv_source(tmp_path):
    day = date(2026, 1, 3)
    fake = FakeDerivServer(seed=SEED, start=START + 2 * 86_400 + 600)
    with ServerThread(fake) as server, dg.instance_for_test() as instance:
        resources = build_resources(str(tmp_path), deriv_url=server.url)
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
