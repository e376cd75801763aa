"""Collected days drive the graph (issue 17): each day the collector completed becomes one `daily_job`
run of its (day, symbol) partition, once; the `ticks` asset reads the stored day as it is and backfills
a day the collector never stored from Deriv's history (the local Deriv server here)."""

import json
import os
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from scalping_assets.assets.ticks import ticks
from scalping_assets.checks import tick_checks
from scalping_assets.collected import LOG_SETTLE_S, collected_days_sensor
from scalping_assets.definitions import build_resources
from scalping_assets.market.simulator import day_start_epoch
from scalping_assets.market.store import TickStore
from scalping_assets.partitions import tick_partition
from scalping_assets.settings import Settings
from scalping_assets.testing.fake_deriv import FakeDerivServer, ServerThread
from scalping_assets.testing.tick_source import SimulatedTicks

SYMBOL, SEED = "R_75", 6
DAY = [date(2026, 1, 2) + timedelta(days=i) for i in range(5)]  # 2026-01-02 .. 2026-01-06


def _store_day(store: TickStore, day: date, seconds: int = 86_400) -> None:
    """What the collector leaves for `day`: every tick of its first `seconds` seconds."""
    start = day_start_epoch(day)
    epochs, quotes = SimulatedTicks(SEED).between(SYMBOL, start, start + seconds - 1)
    store.write_day(SYMBOL, day, pd.DataFrame({"epoch": epochs, "quote": quotes}))


def _evaluate(data, cursor=None):
    resources = build_resources(Settings(data_dir=data))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"tick_store": resources["tick_store"]})
        return collected_days_sensor(context)


@pytest.fixture
def deriv_source(monkeypatch, tmp_path):
    monkeypatch.setenv("SCALPING_TICK_SOURCE", "deriv")
    monkeypatch.setenv("SCALPING_DATA_DIR", str(tmp_path))  # where the service's prediction log is


def _served(data: Path, day: date, written_s_ago: float = 60.0) -> Path:
    """The service answered for `day`: a log file of it (one process's), last written `written_s_ago`."""
    folder = Settings(data_dir=data).prediction_log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"predictions-{day}-1.jsonl"
    path.write_text("{}\n")
    os.utime(path, (time.time() - written_s_ago,) * 2)
    return path


def test_each_completed_day_is_requested_once(tmp_path, deriv_source):
    store = TickStore(tmp_path / "ticks")
    _store_day(store, DAY[0])
    _store_day(store, DAY[2])  # DAY[1]: the collector was down all day
    _store_day(store, DAY[3], seconds=600)  # being collected now
    for day in (DAY[0], DAY[2], DAY[3]):  # DAY[1]: nobody asked the service either
        _served(tmp_path, day)
    result = _evaluate(tmp_path)
    daily = [r for r in result.run_requests if r.job_name == "daily_job"]
    assert [r.partition_key for r in daily] == [tick_partition(d.isoformat(), SYMBOL) for d in DAY[:3]]
    assert {r.run_key for r in daily} == {f"collected:{d}:{SYMBOL}" for d in DAY[:3]}
    assert all(r.run_config["ops"]["ticks"]["config"]["source"] == "collected" for r in daily)
    # Then the monitoring of each completed day the service answered for, after every day's ticks.
    monitoring = result.run_requests[len(daily) :]
    assert [(r.job_name, r.partition_key, r.run_key) for r in monitoring] == [
        ("monitoring_job", str(d), f"monitoring:{d}") for d in (DAY[0], DAY[2])
    ]

    again = _evaluate(tmp_path, result.cursor)
    assert not again.run_requests and "no newly completed day" in again.skip_reason.skip_message
    _store_day(store, DAY[4], seconds=60)  # the collector moved into the next day: DAY[3] is complete
    later = _evaluate(tmp_path, again.cursor)
    assert [(r.job_name, r.partition_key) for r in later.run_requests] == [
        ("daily_job", tick_partition(DAY[3].isoformat(), SYMBOL)),
        ("monitoring_job", str(DAY[3])),
    ]


def test_a_day_whose_log_is_still_being_written_is_judged_once_it_settles(tmp_path, deriv_source):
    store = TickStore(tmp_path / "ticks")
    _store_day(store, DAY[0])
    _store_day(store, DAY[1], seconds=60)  # the collector just moved past midnight
    log = _served(tmp_path, DAY[0], written_s_ago=0.5)  # answers to DAY[0]'s last ticks still arriving
    first = _evaluate(tmp_path)
    assert [r.job_name for r in first.run_requests] == ["daily_job"]
    assert json.loads(first.cursor)["monitoring_pending"] == [str(DAY[0])]
    os.utime(log, (time.time() - LOG_SETTLE_S - 1,) * 2)
    settled = _evaluate(tmp_path, first.cursor)
    assert [(r.job_name, r.partition_key) for r in settled.run_requests] == [("monitoring_job", str(DAY[0]))]
    assert json.loads(settled.cursor)["monitoring_pending"] == []
    assert not _evaluate(tmp_path, settled.cursor).run_requests


def test_the_sensor_leaves_a_simulated_deployment_to_the_schedule(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALPING_TICK_SOURCE", "simulator")
    _store_day(TickStore(tmp_path / "ticks"), DAY[0])
    result = _evaluate(tmp_path)
    assert "daily_ticks_schedule makes the days" in result.skip_message


def test_a_collected_day_is_read_as_stored_and_a_missing_one_backfilled_from_history(tmp_path):
    store = TickStore(tmp_path / "ticks")
    _store_day(store, DAY[0], seconds=43_200)  # half a day: a gap the checks are there to flag
    stored_at = store.path(SYMBOL, DAY[0]).stat().st_mtime_ns
    fake = FakeDerivServer(seed=SEED, start=day_start_epoch(DAY[2]) + 600)
    with ServerThread(fake) as server, dg.instance_for_test() as instance:
        resources = build_resources(Settings(data_dir=tmp_path, deriv_url=server.url))
        for day in DAY[:2]:
            result = dg.materialize(
                [ticks, tick_checks],
                partition_key=tick_partition(day.isoformat(), SYMBOL),
                resources=resources,
                instance=instance,
                run_config={"ops": {"ticks": {"config": {"source": "collected"}}}},
            )
            assert result.success
            gaps = next(c for c in result.get_asset_check_evaluations() if c.check_name == "cadence_gaps")
            assert gaps.passed == (day == DAY[1]), "the half-collected day is flagged, the backfilled one is whole"
    assert store.path(SYMBOL, DAY[0]).stat().st_mtime_ns == stored_at, "the collected day is not rewritten"
    assert len(store.read_day(SYMBOL, DAY[0])) == 21_600
    backfilled = store.read_day(SYMBOL, DAY[1])
    epochs, quotes = SimulatedTicks(SEED).between(SYMBOL, day_start_epoch(DAY[1]), day_start_epoch(DAY[2]) - 1)
    assert np.array_equal(backfilled["epoch"], epochs) and np.array_equal(backfilled["quote"], quotes)
