"""The Parquet tick store: schema, range reads, idempotent and atomic writes, clear errors."""

import subprocess
import sys
import threading
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scalping_assets.market.simulator import TickSimulator, day_start_epoch
from scalping_assets.market.store import TICK_SCHEMA, TickStoreError

DAY = date(2026, 1, 2)


@pytest.fixture(scope="module")
def three_days() -> dict[date, pd.DataFrame]:
    sim = TickSimulator("1HZ100V", seed=3)
    return {d: sim.day(d) for d in (date(2026, 1, 1), DAY, date(2026, 1, 3))}


def test_round_trip_keeps_schema_and_values(store, three_days):
    frame = three_days[DAY]
    path = store.write_day("1HZ100V", DAY, frame)
    assert path == store.root / "1HZ100V" / "2026-01-02.parquet"
    assert pq.read_schema(path).remove_metadata().equals(TICK_SCHEMA.remove_metadata())
    back = store.read_day("1HZ100V", DAY)
    assert back["epoch"].dtype == np.int64 and back["quote"].dtype == np.float64
    assert np.array_equal(back["epoch"], frame["epoch"]) and np.array_equal(back["quote"], frame["quote"])
    assert (back["symbol"] == "1HZ100V").all()
    assert back["bid"].isna().all() and back["ask"].isna().all()


def test_bid_ask_are_kept_when_present(store):
    epochs = day_start_epoch(DAY) + np.arange(3)
    frame = pd.DataFrame(
        {"epoch": epochs, "quote": [218.0926, 218.1, 218.2], "bid": [218.0826, 218.09, 218.19], "ask": [218.1026, 218.11, 218.21]}
    )
    store.write_day("R_50", DAY, frame)
    back = store.read_day("R_50", DAY)
    assert back["bid"].tolist() == [218.0826, 218.09, 218.19] and back["ask"].tolist() == [218.1026, 218.11, 218.21]


def test_read_by_time_range_spans_partitions(store, three_days):
    for day, frame in three_days.items():
        store.write_day("1HZ100V", day, frame)
    assert store.days("1HZ100V") == sorted(three_days)
    start = datetime(2026, 1, 1, 23, 59, 0, tzinfo=UTC)
    end = datetime(2026, 1, 2, 0, 1, 0, tzinfo=UTC)
    window = store.read("1HZ100V", start, end)
    assert len(window) == 120
    assert window["epoch"].iloc[0] == int(start.timestamp()) and window["epoch"].iloc[-1] == int(end.timestamp()) - 1
    everything = store.read("1HZ100V")
    assert len(everything) == 3 * 86_400 and everything["epoch"].is_monotonic_increasing
    assert len(store.read("1HZ100V", DAY, date(2026, 1, 3))) == 86_400
    assert store.read("1HZ100V", date(2026, 2, 1)).empty
    assert store.last_epoch("1HZ100V") == day_start_epoch(date(2026, 1, 3)) + 86_399
    assert store.last_epoch("R_10") is None and store.days("R_10") == []


def test_rewriting_a_day_replaces_it(store, three_days):
    frame = three_days[DAY]
    store.write_day("1HZ100V", DAY, frame)
    store.write_day("1HZ100V", DAY, frame)
    assert len(store.read_day("1HZ100V", DAY)) == len(frame)
    smaller = frame.iloc[:100]
    store.write_day("1HZ100V", DAY, smaller)
    assert len(store.read("1HZ100V")) == 100
    assert [p.name for p in (store.root / "1HZ100V").iterdir()] == ["2026-01-02.parquet"]


def test_refuses_ticks_from_another_day_or_symbol(store, three_days):
    with pytest.raises(ValueError, match="does not belong to partition 1HZ100V 2026-01-02"):
        store.write_day("1HZ100V", DAY, three_days[date(2026, 1, 3)])
    with pytest.raises(ValueError, match="other symbols"):
        store.write_day("R_100", DAY, three_days[DAY])
    with pytest.raises(ValueError, match="lack column"):
        store.write_day("1HZ100V", DAY, three_days[DAY].drop(columns="quote"))
    with pytest.raises(KeyError, match="unknown symbol"):
        store.write_day("NOPE", DAY, three_days[DAY])
    with pytest.raises(ValueError, match="no time zone"):
        store.read("1HZ100V", datetime(2026, 1, 2))
    assert not store.root.exists() or not any(store.root.rglob("*.parquet"))


CRASH_DURING_WRITE = """
import os, sys, datetime
import pyarrow.parquet as pq
from scalping_assets.market.simulator import TickSimulator
from scalping_assets.market.store import TickStore

def die(self, *args, **kwargs):
    os._exit(9)  # the process dies after the row groups, before the Parquet footer

pq.ParquetWriter.close = die
day = datetime.date(2026, 1, 2)
TickStore(sys.argv[1]).write_day("1HZ100V", day, TickSimulator("1HZ100V", seed=99).day(day))
"""


def test_a_crash_mid_write_never_leaves_a_readable_half_file(store, three_days):
    old = three_days[DAY]
    store.write_day("1HZ100V", DAY, old)
    crashed = subprocess.run([sys.executable, "-c", CRASH_DURING_WRITE, str(store.root)], capture_output=True)
    assert crashed.returncode == 9, crashed.stderr.decode()
    # The previous version is intact and is the only visible partition.
    assert store.read_day("1HZ100V", DAY).equals(store.read("1HZ100V"))
    assert np.array_equal(store.read_day("1HZ100V", DAY)["quote"], old["quote"])
    leftovers = [p for p in (store.root / "1HZ100V").iterdir() if p.name != "2026-01-02.parquet"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".")
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(leftovers[0])  # what the rename protected readers from
    store.write_day("1HZ100V", DAY, old)
    assert [p.name for p in (store.root / "1HZ100V").iterdir()] == ["2026-01-02.parquet"]


def test_corrupt_and_foreign_files_name_the_file(store, three_days):
    store.write_day("1HZ100V", DAY, three_days[DAY])
    path = store.path("1HZ100V", DAY)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(TickStoreError, match=str(path)):
        store.read_day("1HZ100V", DAY)
    pq.write_table(pa.table({"time": ["2026-01-02"], "price": [1.0]}), path)
    with pytest.raises(TickStoreError, match=f"{path}: foreign Parquet file"):
        store.read("1HZ100V")
    path.write_text("epoch,quote\n1,2\n")
    with pytest.raises(TickStoreError, match=str(path)):
        store.read_day("1HZ100V", DAY)
    stray = store.root / "1HZ100V" / "notes.parquet"
    stray.write_bytes(b"")
    with pytest.raises(TickStoreError, match="notes.parquet"):
        store.days("1HZ100V")


def test_missing_day_is_a_clear_error(store):
    with pytest.raises(FileNotFoundError, match="no ticks stored for R_10 on 2026-01-02"):
        store.read_day("R_10", DAY)


def test_reads_while_the_collector_replaces_the_day_see_one_whole_file(store, three_days):
    """The collector rewrites the day being collected while sensors read it: every read is one whole
    version of the file (a read that opened the path twice paired one file's footer with another's pages)."""
    frame = three_days[DAY]
    sizes = [len(frame) // 4 * k for k in (1, 2, 3, 4)]
    store.write_day("1HZ100V", DAY, frame.iloc[: sizes[0]])
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            for n in sizes:
                store.write_day("1HZ100V", DAY, frame.iloc[:n])

    writer = threading.Thread(target=collect)
    writer.start()
    try:
        seen = {len(store.read_day("1HZ100V", DAY)) for _ in range(150)}
        last = {store.last_epoch("1HZ100V") for _ in range(150)}
    finally:
        stop.set()
        writer.join()
    assert seen <= set(sizes) and len(seen) > 1, seen
    assert last <= {int(frame["epoch"].iloc[n - 1]) for n in sizes}
