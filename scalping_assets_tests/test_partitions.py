"""The (day, symbol) partition space is what the deployment tracks (issue 16): the symbols of
`SCALPING_SYMBOLS` on every UTC day from `SCALPING_START_DAY`, not the catalogue since January."""

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from pydantic import ValidationError

from scalping_assets import partitions, schedules
from scalping_assets.features.dataset import DATASET_SYMBOLS
from scalping_assets.market.simulator import DEFAULT_ORIGIN
from scalping_assets.market.symbols import catalog, get_symbol
from scalping_assets.partitions import tick_partitions
from scalping_assets.settings import DEFAULT_SYMBOLS, Settings

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("SCALPING_SYMBOLS", "SCALPING_START_DAY", "SYMBOLS", "START_DAY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _dims(definition: dg.MultiPartitionsDefinition) -> dict:
    return {d.name: d.partitions_def for d in definition.partitions_defs}


def test_the_default_space_is_the_demo_symbols_from_the_demo_first_day(clean_env):
    settings = Settings()
    assert settings.symbols == DEFAULT_SYMBOLS
    assert settings.start_day == DEFAULT_ORIGIN
    assert set(DATASET_SYMBOLS) <= set(settings.symbols), "the default dataset must be built from tracked symbols"
    assert all(get_symbol(s).simulated for s in settings.symbols), "the demo simulates every default symbol"
    space = tick_partitions(settings)
    dims = _dims(space)
    days = dims["date"].get_partition_keys(current_time=NOW)
    assert days[0] == "2026-01-01" and days[-1] == "2026-11-29"  # the last complete day
    assert dims["symbol"].get_partition_keys() == list(settings.symbols)
    keys = space.get_partition_keys(current_time=NOW)
    assert len(keys) == 8 * 333 == 2_664
    old = dg.MultiPartitionsDefinition({"date": dims["date"], "symbol": dg.StaticPartitionsDefinition(list(catalog()))})
    assert len(old.get_partition_keys(current_time=NOW)) == 39 * 333 > 4 * len(keys), "the old space: the whole catalogue"
    # `scalping demo` (3 days from --start, default the simulator's origin, and its default symbols) fits inside.
    demo = {
        partitions.tick_partition((DEFAULT_ORIGIN + timedelta(days=i)).isoformat(), s) for i in range(3) for s in settings.symbols
    }
    assert demo <= set(keys) and len(demo) == 24


def test_settings_round_trip_from_the_environment(clean_env):
    clean_env.setenv("SCALPING_SYMBOLS", " R_100 ,SIG_AR1,R_100,")
    clean_env.setenv("SCALPING_START_DAY", "2026-11-27")
    settings = Settings()
    assert settings.symbols == ("R_100", "SIG_AR1") and settings.start_day == date(2026, 11, 27)
    keys = tick_partitions(settings).get_partition_keys(current_time=NOW)
    assert [k.keys_by_dimension for k in keys[:2]] == [
        {"date": "2026-11-27", "symbol": "R_100"},
        {"date": "2026-11-27", "symbol": "SIG_AR1"},
    ]
    assert len(keys) == 2 * 3
    # An argument wins over the variable; an empty variable counts as unset.
    assert Settings(symbols=["R_50"], start_day="2026-02-01").symbols == ("R_50",)
    clean_env.setenv("SCALPING_SYMBOLS", "")
    assert Settings().symbols == DEFAULT_SYMBOLS


@pytest.mark.parametrize("value,named", [("R_100,BAD", ["BAD"]), ("NOPE,R_100,r_50", ["NOPE", "r_50"])])
def test_an_unknown_symbol_is_refused_by_name(clean_env, value, named):
    clean_env.setenv("SCALPING_SYMBOLS", value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    message = str(refused.value)
    assert f"unknown symbol{'s' * (len(named) > 1)} {', '.join(named)} in SCALPING_SYMBOLS" in message
    assert "the catalogue" in message


def test_no_symbol_and_a_bad_day_are_refused(clean_env):
    clean_env.setenv("SCALPING_SYMBOLS", " , ")
    with pytest.raises(ValidationError, match="names no symbol"):
        Settings()
    clean_env.delenv("SCALPING_SYMBOLS")
    clean_env.setenv("SCALPING_START_DAY", "January")
    with pytest.raises(ValidationError, match="start_day"):
        Settings()


def test_the_module_partitions_come_from_the_environment_at_import():
    assert partitions.TICK_PARTITIONS == tick_partitions(Settings())
    assert partitions.SYMBOLS.get_partition_keys() == list(Settings().symbols)
    assert partitions.DAILY.start.date() == Settings().start_day
    env = {**os.environ, "SCALPING_SYMBOLS": "JD10,RB100", "SCALPING_START_DAY": "2026-06-01"}
    script = (
        "from scalping_assets.partitions import DAILY, SYMBOLS, TICK_PARTITIONS as T\n"
        "from scalping_assets.schedules import simulated_tracked_symbols\n"
        "print(SYMBOLS.get_partition_keys(), DAILY.get_first_partition_key(), T.partitions_defs[0].name,"
        " simulated_tracked_symbols())"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['JD10',", "'RB100']", "2026-06-01", "date", "['JD10']"]


def _evaluate(at: datetime):
    return schedules.daily_ticks_schedule(dg.build_schedule_context(scheduled_execution_time=at))


def test_the_schedule_requests_the_tracked_simulated_symbols_from_the_start_day(monkeypatch):
    space = tick_partitions(Settings(symbols=["R_100", "RB100", "SIG_AR1"], start_day="2026-03-01"))
    dims = _dims(space)
    monkeypatch.setattr(schedules, "SYMBOLS", dims["symbol"])
    monkeypatch.setattr(schedules, "DAILY", dims["date"])
    requests = _evaluate(datetime(2026, 3, 5, 0, 15, tzinfo=UTC))
    assert [r.partition_key.keys_by_dimension for r in requests] == [
        {"date": "2026-03-04", "symbol": "R_100"},
        {"date": "2026-03-04", "symbol": "SIG_AR1"},  # RB100 is only collected live: no simulator run
    ]
    assert "start on 2026-03-01" in _evaluate(datetime(2026, 3, 1, 0, 15, tzinfo=UTC)).skip_message
    monkeypatch.setattr(schedules, "SYMBOLS", dg.StaticPartitionsDefinition(["RB100", "RB200"]))
    assert "can be simulated" in _evaluate(datetime(2026, 3, 5, 0, 15, tzinfo=UTC)).skip_message
