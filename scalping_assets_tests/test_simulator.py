"""Statistical and structural tests of the simulator against the published generation formulas."""

import hashlib
import math
import subprocess
import sys
from datetime import date, timedelta
from functools import cache

import numpy as np
import pytest
from scipy import stats

from scalping_assets.market.simulator import DEFAULT_ORIGIN, NotSimulatedError, TickSimulator
from scalping_assets.market.symbols import Family, catalog, get_symbol

START = DEFAULT_ORIGIN
VOLATILITY = [s for s, spec in catalog().items() if spec.family is Family.VOLATILITY and spec.simulated]
CRASH_BOOM = [s for s, spec in catalog().items() if spec.family is Family.CRASH_BOOM]
JUMP = [s for s, spec in catalog().items() if spec.family is Family.JUMP]
MARTINGALES = VOLATILITY + CRASH_BOOM + JUMP + ["stpRNG"]


@cache
def quotes(symbol: str, n_days: int, seed: int = 11) -> np.ndarray:
    sim = TickSimulator(symbol, seed)
    return sim.days(START, START + timedelta(days=n_days - 1))["quote"].to_numpy()


@pytest.mark.parametrize("symbol", VOLATILITY)
def test_volatility_tick_stdev_matches_sigma_sqrt_dt(symbol):
    spec = get_symbol(symbol)
    log_returns = np.diff(np.log(quotes(symbol, 3)))
    expected = spec.generator.sigma * math.sqrt(spec.dt)
    # Relative standard error of a stdev estimate is 1/sqrt(2n): about 0.2 % here.
    assert np.std(log_returns) == pytest.approx(expected, rel=0.015)
    assert abs(np.mean(log_returns)) < 5 * expected / math.sqrt(len(log_returns))


@pytest.mark.parametrize("symbol", CRASH_BOOM)
def test_crash_boom_events_are_geometric_with_rate_one_over_n(symbol):
    g = get_symbol(symbol).generator
    moves = np.diff(quotes(symbol, 10))
    event_sign = -1 if g.event == "down" else 1
    events = np.flatnonzero(np.sign(moves) == event_sign)
    n, p = len(moves), 1 / g.mean_event_gap
    z = (len(events) - n * p) / math.sqrt(n * p * (1 - p))
    assert abs(z) < 4.5, f"{len(events)} events in {n} ticks, expected {n * p:.0f}"
    gaps = np.diff(events)
    assert np.mean(gaps) == pytest.approx(g.mean_event_gap, rel=0.15)
    # Memoryless: the gaps follow the geometric distribution (KS is conservative on discrete data).
    assert stats.kstest(gaps, stats.geom(p).cdf).pvalue > 1e-3


@pytest.mark.parametrize("symbol", CRASH_BOOM)
def test_crash_boom_move_one_way_between_events(symbol):
    spec = get_symbol(symbol)
    g = spec.generator
    sim = TickSimulator(symbol, seed=5)
    log_returns = np.concatenate([np.diff(np.log(sim.simulate_day(START + timedelta(days=i)).prices)) for i in range(3)])
    event_sign = -1 if g.event == "down" else 1
    events = np.sign(log_returns) == event_sign
    quiet = log_returns[~events]
    # Every non-event tick moves against the event direction, never with it, never flat.
    assert np.all(np.sign(quiet) == -event_sign)
    sqrt_dt = math.sqrt(spec.dt)
    quiet_coef, event_coef = (g.mut, g.mdt) if g.event == "down" else (g.mdt, g.mut)
    # Move sizes are |coef| * Y / mean(Y) * sqrt(dt), Y folded normal: their mean is |coef| * sqrt(dt).
    assert np.mean(np.abs(quiet)) == pytest.approx(abs(quiet_coef) * sqrt_dt, rel=0.01)
    assert np.mean(np.abs(log_returns[events])) == pytest.approx(abs(event_coef) * sqrt_dt, rel=0.12)


@pytest.mark.parametrize("symbol", JUMP)
def test_jump_indices_diffuse_at_sigma_and_jump_72_times_a_day(symbol):
    spec = get_symbol(symbol)
    g = spec.generator
    log_returns = np.diff(np.log(quotes(symbol, 5)))
    scale = g.sigma * math.sqrt(spec.dt)
    robust_sd = 1.4826 * np.median(np.abs(log_returns - np.median(log_returns)))
    assert robust_sd == pytest.approx(scale, rel=0.06)  # coarse pips round the smallest indices
    # A diffusion tick beyond 6 sd is practically impossible; a jump (sd 30x) lands there with
    # probability P(|N(0, 1 + 30^2)| > 6).
    big = int(np.sum(np.abs(log_returns) > 6 * scale))
    rate = g.jumps_per_day / 86_400
    p_jump = rate * math.exp(-rate)
    expected = len(log_returns) * p_jump * 2 * stats.norm.sf(6 / math.sqrt(1 + g.jump_scale**2))
    assert abs(big - expected) < 4.5 * math.sqrt(expected), (big, expected)


def test_step_index_moves_exactly_one_step_every_second():
    sim = TickSimulator("stpRNG", seed=3)
    frame = sim.days(START, START + timedelta(days=1))
    moves = np.round(np.diff(frame["quote"].to_numpy()), 6)
    assert set(np.unique(moves)) == {-0.1, 0.1}
    assert set(np.diff(frame["epoch"].to_numpy())) == {1}
    ups = np.mean(moves > 0)
    assert abs(ups - 0.5) < 4.5 * 0.5 / math.sqrt(len(moves))


@pytest.mark.parametrize("symbol", MARTINGALES)
def test_martingale_mean_ratio_is_one(symbol):
    q = quotes(symbol, 10)
    ratios = q[1:] / q[:-1]
    z = (np.mean(ratios) - 1) / (np.std(ratios) / math.sqrt(len(ratios)))
    assert abs(z) < 4.5, f"mean S_t/S_(t-1) - 1 is {z:.1f} standard errors from 0"


@pytest.mark.parametrize("symbol", ["RDBULL", "RDBEAR"])
def test_bull_bear_drift_and_daily_reset(symbol):
    spec = get_symbol(symbol)
    g = spec.generator
    sim = TickSimulator(symbol, seed=2)
    days = [sim.day(START + timedelta(days=i))["quote"].to_numpy() for i in range(20)]
    assert all(day[0] == spec.initial_quote for day in days)  # every day restarts at 00:00 GMT
    log_returns = np.concatenate([np.diff(np.log(day)) for day in days])
    expected = (-g.dividend - 0.5 * g.sigma**2) * spec.dt
    se = g.sigma * math.sqrt(spec.dt) / math.sqrt(len(log_returns))
    assert abs(np.mean(log_returns) - expected) < 4.5 * se
    assert np.std(log_returns) == pytest.approx(g.sigma * math.sqrt(spec.dt), rel=0.015)
    assert np.sign(np.mean(log_returns)) == (1 if symbol == "RDBULL" else -1)


def test_planted_signal_has_its_autocorrelation():
    g = get_symbol("SIG_AR1").generator
    log_returns = np.diff(np.log(quotes("SIG_AR1", 2)))
    rho = np.corrcoef(log_returns[:-1], log_returns[1:])[0, 1]
    assert rho == pytest.approx(g.phi, abs=4.5 / math.sqrt(len(log_returns)))


@pytest.mark.parametrize("symbol", sorted(s for s, spec in catalog().items() if spec.simulated))
def test_ticks_on_cadence_and_pip_grid(symbol):
    spec = get_symbol(symbol)
    frame = TickSimulator(symbol, seed=1).day(date(2026, 2, 3))
    epochs = frame["epoch"].to_numpy()
    assert len(frame) == spec.ticks_per_day
    assert epochs[0] == 1770076800  # 2026-02-03 00:00:00 UTC
    assert set(np.diff(epochs)) == {spec.tick_interval_s}
    pips = frame["quote"].to_numpy() / spec.pip_size
    assert np.max(np.abs(pips - np.round(pips))) < 1e-6
    assert (frame["symbol"] == symbol).all()


@pytest.mark.parametrize("symbol", ["R_100", "CRASH500", "JD75", "stpRNG", "RDBEAR", "SIG_AR1"])
def test_same_seed_same_ticks_other_seed_other_ticks(symbol):
    day = date(2026, 1, 4)
    a = TickSimulator(symbol, seed=42).day(day)
    b = TickSimulator(symbol, seed=42).day(day)
    c = TickSimulator(symbol, seed=43).day(day)
    assert a.equals(b)
    assert not np.array_equal(a["quote"].to_numpy(), c["quote"].to_numpy())


@pytest.mark.parametrize("symbol", ["R_50", "1HZ75V", "BOOM300", "JD200", "stpRNG", "RDBULL", "SIG_AR1"])
def test_continuation_is_exact(symbol):
    first, last = date(2026, 1, 2), date(2026, 1, 4)
    at_once = TickSimulator(symbol, seed=9).days(first, last)
    one_by_one = [TickSimulator(symbol, seed=9).simulate_day(first + timedelta(days=i)) for i in range(3)]
    assert np.array_equal(at_once["quote"].to_numpy(), np.concatenate([d.quotes for d in one_by_one]))
    assert np.array_equal(at_once["epoch"].to_numpy(), np.concatenate([d.epochs for d in one_by_one]))
    # Day 2 begins where day 1 ended, unrounded.
    sim = TickSimulator(symbol, seed=9)
    day1, day2 = sim.simulate_day(first), sim.simulate_day(first + timedelta(days=1))
    if not get_symbol(symbol).generator.model_dump().get("daily_reset"):
        step = abs(day2.prices[0] / day1.prices[-1] - 1)
        assert step < 50 * np.std(np.diff(np.log(day1.prices)))


def test_another_process_generates_the_same_day():
    code = (
        "import hashlib, datetime;"
        "from scalping_assets.market.simulator import TickSimulator;"
        "d = TickSimulator('CRASH1000', seed=4).simulate_day(datetime.date(2026, 1, 6));"
        "print(hashlib.sha256(d.quotes.tobytes()).hexdigest())"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    here = TickSimulator("CRASH1000", seed=4).simulate_day(date(2026, 1, 6))
    assert other == hashlib.sha256(here.quotes.tobytes()).hexdigest()


def test_symbols_use_independent_streams():
    a = np.diff(np.log(TickSimulator("R_100", seed=1).simulate_day(START).prices))
    b = np.diff(np.log(TickSimulator("1HZ100V", seed=1).simulate_day(START).prices))[: len(a)]
    assert abs(np.corrcoef(a, b)[0, 1]) < 4.5 / math.sqrt(len(a))


def test_refuses_days_before_origin_unsimulated_symbols_and_bad_seeds():
    with pytest.raises(ValueError, match="before the simulation origin"):
        TickSimulator("R_10").day(DEFAULT_ORIGIN - timedelta(days=1))
    with pytest.raises(NotSimulatedError, match="RB100"):
        TickSimulator("RB100")
    with pytest.raises(ValueError, match="non-negative"):
        TickSimulator("R_10", seed=-1)
    with pytest.raises(ValueError, match="before first day"):
        TickSimulator("R_10").days(date(2026, 1, 3), date(2026, 1, 2))
