"""Data-quality checks of one day of ticks (pure functions; Dagster wires them as asset checks)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .symbols import SECONDS_PER_DAY, AR1Generator, CrashBoomGenerator, GBMGenerator, JumpGenerator, StepGenerator, SymbolSpec

# Plausibility bands are wide on purpose: they flag data from the wrong symbol, a broken feed or a
# broken generator, not ordinary sampling noise of a single day.
STDEV_RATIO_BAND = (0.8, 1.25)
MAX_Z = 6.0


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict[str, float | int | str] = field(default_factory=dict)


def epochs_strictly_increasing(ticks: pd.DataFrame, spec: SymbolSpec) -> CheckOutcome:
    """Every epoch is later than the one before it."""
    steps = np.diff(ticks["epoch"].to_numpy())
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        return CheckOutcome(
            False, f"{bad.size} non-increasing step(s); first at row {i}", {"non_increasing_steps": int(bad.size), "first_row": i}
        )
    return CheckOutcome(True, "every epoch is later than the one before", {"non_increasing_steps": 0})


def no_duplicate_epochs(ticks: pd.DataFrame, spec: SymbolSpec) -> CheckOutcome:
    """No epoch appears twice."""
    epochs = ticks["epoch"]
    dupes = int(epochs.duplicated().sum())
    if dupes:
        first = int(epochs[epochs.duplicated()].iloc[0])
        return CheckOutcome(False, f"{dupes} duplicated epoch(s); first {first}", {"duplicates": dupes, "first_epoch": first})
    return CheckOutcome(True, "no epoch appears twice", {"duplicates": 0})


def cadence_gaps(ticks: pd.DataFrame, spec: SymbolSpec) -> CheckOutcome:
    """No tick is missing against the symbol's published cadence, from the day's start to its end."""
    if spec.tick_interval_s is None:
        return CheckOutcome(True, f"{spec.symbol} has no published cadence; gaps not assessed")
    epochs = np.sort(ticks["epoch"].to_numpy())
    if epochs.size:
        # The day's bounds count as ticks one cadence outside it: a day that starts late or stops early
        # (a collector started at noon, stopped before midnight) is missing ticks like a hole inside it.
        start = int(epochs[0]) // SECONDS_PER_DAY * SECONDS_PER_DAY
        bounds = [start - spec.tick_interval_s], [start + SECONDS_PER_DAY + spec.tick_interval_s - 1]
        gaps = np.diff(np.concatenate([bounds[0], epochs, bounds[1]]))
    else:
        gaps = np.diff(epochs)
    # A gap of two intervals or more means at least one tick is missing.
    missing_at = gaps >= 2 * spec.tick_interval_s
    missing = int(np.sum(gaps[missing_at] // spec.tick_interval_s - 1))
    metadata = {
        "ticks": len(epochs),
        "expected_ticks": spec.ticks_per_day,
        "gaps": int(missing_at.sum()),
        "missing_ticks": missing,
        "max_gap_s": int(gaps.max()) if gaps.size else 0,
    }
    if missing_at.any():
        return CheckOutcome(False, f"{int(missing_at.sum())} gap(s), about {missing} tick(s) missing", metadata)
    return CheckOutcome(True, f"every tick follows the previous one within {spec.tick_interval_s}s cadence", metadata)


def quotes_on_pip_grid(ticks: pd.DataFrame, spec: SymbolSpec) -> CheckOutcome:
    """Every quote is a whole number of pips."""
    units = ticks["quote"].to_numpy() / spec.pip_size
    # Tolerance in pips: pip sizes like 0.0001 have no exact binary representation.
    off = np.isfinite(units) & (np.abs(units - np.round(units)) > 1e-5)
    if off.any():
        first = float(ticks["quote"].to_numpy()[off][0])
        return CheckOutcome(
            False, f"{int(off.sum())} quote(s) off the {spec.pip_size} pip grid; first {first!r}", {"off_grid": int(off.sum())}
        )
    return CheckOutcome(True, f"all quotes are multiples of {spec.pip_size}", {"off_grid": 0})


def finite_quotes(ticks: pd.DataFrame, spec: SymbolSpec) -> CheckOutcome:
    """No quote is NaN, infinite or non-positive."""
    quotes = ticks["quote"].to_numpy()
    bad = ~np.isfinite(quotes) | (quotes <= 0)
    if bad.any():
        return CheckOutcome(False, f"{int(bad.sum())} quote(s) NaN, infinite or not positive", {"bad_quotes": int(bad.sum())})
    return CheckOutcome(True, "all quotes finite and positive", {"bad_quotes": 0})


def _stdev_ratio(observed: float, expected: float, what: str) -> CheckOutcome:
    ratio = observed / expected
    lo, hi = STDEV_RATIO_BAND
    metadata = {"observed_stdev": observed, "expected_stdev": expected, "ratio": ratio}
    passed = lo <= ratio <= hi
    verdict = "within" if passed else "outside"
    return CheckOutcome(passed, f"{what} stdev / expected = {ratio:.3f}, {verdict} [{lo}, {hi}]", metadata)


def _binomial_z(count: int, n: int, p: float) -> float:
    return (count - n * p) / math.sqrt(n * p * (1 - p))


def return_distribution_plausible(ticks: pd.DataFrame, spec: SymbolSpec) -> CheckOutcome:
    """Tick moves are plausible for the symbol's generator (volatility, event rate, step size)."""
    g = spec.generator
    quotes = ticks["quote"].to_numpy()
    if g is None:
        return CheckOutcome(True, f"{spec.symbol} has no published generator; nothing to compare against")
    if len(quotes) < 100:
        return CheckOutcome(False, f"only {len(quotes)} ticks: too few to judge the distribution", {"ticks": len(quotes)})
    if isinstance(g, StepGenerator):
        moves = np.abs(np.diff(quotes))
        off = int(np.sum(np.abs(moves - g.step) > 1e-6 * g.step))
        return CheckOutcome(off == 0, f"{off} move(s) differ from ±{g.step}", {"non_step_moves": off})
    log_returns = np.diff(np.log(quotes))
    sd = math.sqrt(spec.dt)
    if isinstance(g, GBMGenerator):
        return _stdev_ratio(float(np.std(log_returns)), g.sigma * sd, "log-return")
    if isinstance(g, JumpGenerator):
        # Median absolute deviation ignores the rare jumps.
        robust = 1.4826 * float(np.median(np.abs(log_returns - np.median(log_returns))))
        return _stdev_ratio(robust, g.sigma * sd, "robust log-return")
    if isinstance(g, AR1Generator):
        outcome = _stdev_ratio(float(np.std(log_returns)), g.sigma / math.sqrt(1 - g.phi**2), "log-return")
        rho = float(np.corrcoef(log_returns[:-1], log_returns[1:])[0, 1])
        z = (rho - g.phi) * math.sqrt(len(log_returns)) / (1 - g.phi**2)
        passed = outcome.passed and abs(z) < MAX_Z
        return CheckOutcome(
            passed,
            f"{outcome.description}; lag-1 autocorrelation {rho:.3f} vs phi {g.phi}",
            {**outcome.metadata, "autocorrelation": rho, "autocorrelation_z": z},
        )
    if isinstance(g, CrashBoomGenerator):
        event_sign = -1 if g.event == "down" else 1
        events = int(np.sum(np.sign(log_returns) == event_sign))
        z = _binomial_z(events, len(log_returns), 1 / g.mean_event_gap)
        # Between events the index moves one way; its typical move is |quiet coefficient| * sqrt(dt).
        quiet = log_returns[np.sign(log_returns) != event_sign]
        quiet_coef = g.mut if g.event == "down" else g.mdt
        expected_quiet = abs(quiet_coef) * sd
        observed_quiet = float(np.mean(np.abs(quiet)))
        metadata = {
            "events": events,
            "expected_events": len(log_returns) / g.mean_event_gap,
            "event_rate_z": z,
            "quiet_move_mean": observed_quiet,
            "quiet_move_expected": expected_quiet,
        }
        size_ok = STDEV_RATIO_BAND[0] <= observed_quiet / expected_quiet <= STDEV_RATIO_BAND[1]
        passed = abs(z) < MAX_Z and size_ok
        return CheckOutcome(
            passed,
            f"{events} events ({z:+.1f} sd from 1/{g.mean_event_gap}); mean quiet move "
            f"{observed_quiet / expected_quiet:.2f}x expected",
            metadata,
        )
    raise TypeError(f"no plausibility rule for {type(g).__name__}")


TICK_CHECKS: dict[str, Callable[[pd.DataFrame, SymbolSpec], CheckOutcome]] = {
    "epochs_strictly_increasing": epochs_strictly_increasing,
    "no_duplicate_epochs": no_duplicate_epochs,
    "cadence_gaps": cadence_gaps,
    "quotes_on_pip_grid": quotes_on_pip_grid,
    "finite_quotes": finite_quotes,
    "return_distribution_plausible": return_distribution_plausible,
}
