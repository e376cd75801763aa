"""Each tick check passes on faithful data and fails on the defect it exists for."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from scalping_assets.market.quality import TICK_CHECKS
from scalping_assets.market.simulator import TickSimulator
from scalping_assets.market.symbols import get_symbol, simulated_symbols

DAY = date(2026, 1, 5)


def day_of(symbol: str, seed: int = 1) -> pd.DataFrame:
    return TickSimulator(symbol, seed).day(DAY)


@pytest.mark.parametrize("symbol", simulated_symbols())
def test_all_checks_pass_on_simulated_days(symbol):
    frame, spec = day_of(symbol), get_symbol(symbol)
    failed = {name: check(frame, spec).description for name, check in TICK_CHECKS.items() if not check(frame, spec).passed}
    assert not failed


def run(name: str, frame: pd.DataFrame, symbol: str):
    return TICK_CHECKS[name](frame, get_symbol(symbol))


def test_backwards_and_duplicated_epochs_fail():
    frame = day_of("R_100")
    swapped = frame.copy()
    swapped.loc[[10, 11], "epoch"] = swapped.loc[[11, 10], "epoch"].to_numpy()
    outcome = run("epochs_strictly_increasing", swapped, "R_100")
    assert not outcome.passed and outcome.metadata["first_row"] == 11
    repeated = pd.concat([frame.iloc[:500], frame.iloc[499:]], ignore_index=True)
    assert not run("epochs_strictly_increasing", repeated, "R_100").passed
    outcome = run("no_duplicate_epochs", repeated, "R_100")
    assert not outcome.passed and outcome.metadata["duplicates"] == 1


def test_missing_ticks_are_counted():
    frame = day_of("CRASH500").drop(index=range(1000, 1030)).reset_index(drop=True)
    outcome = run("cadence_gaps", frame, "CRASH500")
    assert not outcome.passed
    assert outcome.metadata["missing_ticks"] == 30 and outcome.metadata["gaps"] == 1 and outcome.metadata["max_gap_s"] == 31


def test_a_day_that_starts_late_or_stops_early_is_missing_ticks():
    day = day_of("CRASH500")  # one tick a second
    late = run("cadence_gaps", day.iloc[600:].reset_index(drop=True), "CRASH500")
    assert not late.passed and late.metadata["missing_ticks"] == 600 and late.metadata["gaps"] == 1
    early = run("cadence_gaps", day.iloc[: len(day) // 2].reset_index(drop=True), "CRASH500")
    assert not early.passed and early.metadata["missing_ticks"] == len(day) - len(day) // 2


def test_off_grid_and_non_finite_quotes_fail():
    frame = day_of("R_50")
    off = frame.copy()
    off.loc[7, "quote"] += 0.00004
    assert run("quotes_on_pip_grid", off, "R_50").metadata["off_grid"] == 1
    for bad in (np.nan, np.inf, -1.0, 0.0):
        broken = frame.copy()
        broken.loc[3, "quote"] = bad
        assert not run("finite_quotes", broken, "R_50").passed


@pytest.mark.parametrize(
    ("data_of", "labelled"),
    [
        ("R_10", "R_100"),
        ("1HZ100V", "R_100"),
        ("CRASH1000", "BOOM1000"),
        ("CRASH300", "CRASH1000"),
        ("JD200", "JD50"),
        ("R_100", "stpRNG"),
        ("R_100", "SIG_AR1"),
        ("RDBULL", "R_10"),
    ],
)
def test_data_of_the_wrong_symbol_is_implausible(data_of, labelled):
    outcome = run("return_distribution_plausible", day_of(data_of), labelled)
    assert not outcome.passed, outcome.description


def test_too_few_ticks_cannot_be_judged():
    assert not run("return_distribution_plausible", day_of("R_100").iloc[:50], "R_100").passed
