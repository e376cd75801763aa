"""The champion-versus-challenger sequential decision (`trading/sequential.py`): under A/A its false
decisions stay at or under alpha although it is looked at every day, where a fixed-sample t-test
looked at daily exceeds alpha on the same data; a planted difference is found and a worse challenger
kept; and the API's properties (pairing, zero periods, errors, degenerate inputs, a decision that
sticks, a non-increasing p-value, equality with a direct evaluation of the formula)."""

import math
import statistics
import warnings
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scalping_assets.trading.sequential import (
    Look,
    SequentialConfig,
    looks,
    period_differences,
    plot_looks,
)

CONFIG = SequentialConfig()
DAYS = 30
PER_DAY = 24  # hourly periods
REPS = 400


def day_names(n: int) -> list[str]:
    return [(date(2026, 3, 1) + timedelta(days=i)).isoformat() for i in range(n)]


def daily(d: np.ndarray, per_day: int = PER_DAY) -> list[tuple[str, np.ndarray]]:
    names = day_names(len(d) // per_day)
    return [(name, d[i * per_day : (i + 1) * per_day]) for i, name in enumerate(names)]


def student_t_pairs(rng: np.random.Generator, reps: int, shift: float = 0.0) -> np.ndarray:
    """(reps, periods) differences of two variants of equal skill (plus `shift` for the challenger):
    each period's P&L is a shared market part (which pairing cancels) plus the variant's own noise,
    all Student-t with 3 degrees of freedom (finite variance, infinite kurtosis)."""
    n = DAYS * PER_DAY
    shared = 3.0 * rng.standard_t(3, (reps, n))
    champion = 0.2 + shared + rng.standard_t(3, (reps, n))
    challenger = 0.2 + shift + shared + rng.standard_t(3, (reps, n))
    return challenger - champion


def trade_sums(rng: np.random.Generator, reps: int) -> np.ndarray:
    """(reps, periods) differences of per-period sums of trade P&L of two variants of equal skill,
    with the Crash trap's shape: most trades a small win, a few a heavy-tailed loss (Pareto, shape 2.5),
    a trade count that follows the hour of the day, and a shared exposure to the hour's market move."""
    n = DAYS * PER_DAY
    rate = 30 * (1 + 0.8 * np.sin(2 * np.pi * (np.arange(n) % PER_DAY) / PER_DAY))  # busy and quiet hours
    market = rng.standard_t(3, (reps, n))

    def book() -> np.ndarray:
        count = rng.poisson(np.broadcast_to(rate, (reps, n)))
        total = int(count.sum())
        win = rng.random(total) < 0.95
        pnl = np.where(win, rng.uniform(0.5, 1.5, total), -(10 + 10 * rng.pareto(2.5, total)))
        group = np.repeat(np.arange(reps * n), count.ravel())
        sums = np.bincount(group, weights=pnl, minlength=reps * n).reshape(reps, n)
        return sums + 20 * market  # the exposure both variants share

    return book() - book()


def first_decision(found: list[Look]) -> tuple[Look | None, int | None]:
    """The look that decided by the boundary (not by running out of days) and its day number."""
    for number, look in enumerate(found, start=1):
        if look.decision != "continue":
            by_boundary = look.lower > 0 or look.upper < 0
            return (look, number) if by_boundary else (None, None)
    return None, None


def naive_peeking_decides(d: np.ndarray, alpha: float) -> np.ndarray:
    """Per repetition: does a fixed-sample two-sided t-test, run on all data at each daily look from
    `min_periods` on, reject 'mean 0' at some look?"""
    ends = np.arange(PER_DAY, d.shape[1] + 1, PER_DAY)
    ends = ends[ends >= CONFIG.min_periods]
    s1, s2 = np.cumsum(d, axis=1)[:, ends - 1], np.cumsum(d * d, axis=1)[:, ends - 1]
    mean = s1 / ends
    sd = np.sqrt((s2 - ends * mean**2) / (ends - 1))
    t = mean / (sd / np.sqrt(ends))
    p = 2 * stats.t.sf(np.abs(t), ends - 1)
    return (p < alpha).any(axis=1)


@pytest.mark.parametrize("generator", [student_t_pairs, trade_sums])
def test_aa_false_decisions_stay_under_alpha_where_a_peeking_t_test_does_not(generator):
    rng = np.random.default_rng(20260319 if generator is student_t_pairs else 20260320)
    d = generator(rng, REPS)
    false = sum(first_decision(looks(daily(row), CONFIG))[0] is not None for row in d)
    test = stats.binomtest(false, REPS)
    low, high = test.proportion_ci(0.95, method="exact")  # Clopper-Pearson
    naive = int(naive_peeking_decides(d, CONFIG.alpha).sum())
    naive_low, naive_high = stats.binomtest(naive, REPS).proportion_ci(0.95, method="exact")
    print(
        f"\n{generator.__name__}: A/A false decisions {false}/{REPS} = {false / REPS:.1%} [{low:.1%}, {high:.1%}]; "
        f"a t-test looked at daily: {naive}/{REPS} = {naive / REPS:.1%} [{naive_low:.1%}, {naive_high:.1%}]"
    )
    assert false / REPS <= CONFIG.alpha
    assert high < 0.08
    assert naive_low > CONFIG.alpha  # the peeking problem the test exists for


@pytest.mark.parametrize("effect", [0.25, -0.25])
def test_a_planted_difference_is_found_and_a_worse_challenger_kept(effect):
    rng = np.random.default_rng(7 if effect > 0 else 8)
    reps = 150
    sd = math.sqrt(2 * 3)  # of the difference of two independent t(3) noises
    d = student_t_pairs(rng, reps, shift=effect * sd)
    wanted = "promote" if effect > 0 else "keep"
    days = []
    for row in d:
        look, number = first_decision(looks(daily(row), CONFIG))
        if look is not None and look.decision == wanted:
            days.append(number)
    print(f"\neffect {effect:+} sd: {wanted} in {len(days)}/{reps}, median {statistics.median(days)} days to the decision")
    assert len(days) / reps >= 0.9
    assert statistics.median(days) < DAYS / 2


def test_period_differences_pair_by_exit_period_and_count_empty_periods_as_zero():
    start, period = 1_000_000, 3600
    champion = pd.DataFrame(
        {"exit_epoch": [start + 10, start + 3599, start + 2 * 3600 + 5, start - 1], "pnl": [1.0, 2.0, -4.0, 99.0]}
    )
    challenger = pd.DataFrame({"exit_epoch": [start + 3600, start + 3 * 3600 + 1, start + 4 * 3600 + 7], "pnl": [5.0, 0.5, 77.0]})
    end = start + 4 * 3600 + 1800  # 4 whole periods; the fills after them and before start are ignored
    d = period_differences(champion, challenger, start, end, period)
    assert list(d.index) == [start, start + 3600, start + 7200, start + 10800]
    assert d.tolist() == [-3.0, 5.0, 4.0, 0.5]
    empty = pd.DataFrame({"exit_epoch": pd.Series([], dtype="int64"), "pnl": pd.Series([], dtype="float64")})
    assert period_differences(empty, empty, start, end, period).tolist() == [0.0] * 4
    assert len(period_differences(empty, empty, start, start + 3599, period)) == 0


@pytest.mark.parametrize("side", ["champion", "challenger"])
@pytest.mark.parametrize("column", ["exit_epoch", "pnl"])
def test_period_differences_name_a_missing_column(side, column):
    good = pd.DataFrame({"exit_epoch": [10], "pnl": [1.0]})
    bad = good.drop(columns=column)
    frames = {"champion": good, "challenger": good, side: bad}
    with pytest.raises(ValueError, match=f"{side} fills: missing column.*{column}"):
        period_differences(frames["champion"], frames["challenger"], 0, 3600, 3600)


@pytest.mark.parametrize("column", ["exit_epoch", "pnl"])
def test_a_non_finite_fill_is_refused(column):
    fills = pd.DataFrame({"exit_epoch": [10.0, 20.0], "pnl": [1.0, 2.0]})
    fills.loc[1, column] = np.nan
    with pytest.raises(ValueError, match=f"challenger fills: column {column} has 1 non-finite"):
        period_differences(fills.iloc[:1], fills, 0, 3600, 3600)


@pytest.mark.parametrize("value", [0.0, 2.5])
def test_zero_variance_never_decides(value):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero, no invalid value
        found = looks(daily(np.full(DAYS * PER_DAY, value))[: DAYS - 1], CONFIG)
        last_day = looks(daily(np.full(DAYS * PER_DAY, value)), CONFIG)[-1]
    assert {look.decision for look in found} == {"continue"}
    assert all(look.p_value == 1.0 and look.sd == 0.0 and math.isinf(look.lower) and math.isinf(look.upper) for look in found)
    assert "equal in each of" in found[-1].why
    assert last_day.decision == "keep" and "no difference shown after 30 days" in last_day.why


def test_nothing_before_min_periods_and_non_finite_values_are_ignored():
    d = np.full(12, 50.0) + np.random.default_rng(0).normal(0, 1, 12)  # huge, but only 12 periods a day
    d[3] = np.nan
    found = looks([("2026-03-01", d), ("2026-03-02", d), ("2026-03-03", d)], CONFIG)
    assert [look.periods for look in found] == [11, 22, 33]
    assert [look.decision for look in found] == ["continue", "continue", "promote"]
    assert found[0].p_value == found[1].p_value == 1.0 and "fewer than the 24" in found[0].why
    assert all(np.isfinite([look.mean, look.sd, look.lower, look.upper, look.p_value]).all() for look in found)
    assert "3 non-finite difference(s) ignored" in found[2].why


def test_a_decision_sticks_and_the_p_value_never_rises():
    rng = np.random.default_rng(3)
    d = student_t_pairs(rng, 1, shift=1.5)[0]
    d[10 * PER_DAY :] -= 5.0  # the challenger turns worse after the decision: the test has stopped
    found = looks(daily(d), CONFIG)
    decided = next(i for i, look in enumerate(found) if look.decision != "continue")
    assert found[decided].decision == "promote"
    stopped = f"Stopped on {found[decided].day}"
    assert all(look.decision == "promote" and look.why.startswith(stopped) for look in found[decided + 1 :])
    assert found[-1].upper < 0  # the data turned, the decision did not
    for row in (d, student_t_pairs(rng, 1)[0], trade_sums(rng, 1)[0]):
        p = [look.p_value for look in looks(daily(row), CONFIG)]
        assert all(0 <= x <= 1 for x in p)
        assert all(b <= a for a, b in zip(p, p[1:], strict=False))


def test_looks_equal_a_direct_evaluation_of_the_formula():
    config = SequentialConfig(alpha=0.1, planned_periods=200, min_periods=5)
    rng = np.random.default_rng(11)
    d = 0.3 + rng.standard_t(4, 8 * 10)
    found = looks(daily(d, per_day=10), config)
    ell = -2 * math.log(config.alpha)
    rho2 = (ell + math.log(1 + ell)) / config.planned_periods
    p_min = 1.0
    for number, look in enumerate(found, start=1):
        x = [float(v) for v in d[: number * 10]]
        t, mean, sd = len(x), statistics.fmean(x), statistics.stdev(x)
        half = sd * math.sqrt(2 * (t * rho2 + 1) / (t**2 * rho2) * math.log(math.sqrt(t * rho2 + 1) / config.alpha))
        ratio = math.exp(rho2 * (sum(x) / sd) ** 2 / (2 * (t * rho2 + 1))) / math.sqrt(t * rho2 + 1)
        p_min = min(p_min, 1 / ratio)
        assert look.periods == t
        assert look.mean == pytest.approx(mean, rel=1e-12)
        assert look.sd == pytest.approx(sd, rel=1e-12)
        assert (look.lower, look.upper) == pytest.approx((mean - half, mean + half), rel=1e-12)
        assert look.p_value == pytest.approx(min(1.0, p_min), rel=1e-9)
        # The sequence excludes 0 exactly when the mixture ratio reaches 1/alpha.
        assert (look.lower > 0 or look.upper < 0) == (1 / ratio < config.alpha)


def test_days_must_increase():
    with pytest.raises(ValueError, match="increasing days"):
        looks([("2026-03-02", np.zeros(24)), ("2026-03-01", np.zeros(24))], CONFIG)


def test_plot_looks_is_a_png():
    d = student_t_pairs(np.random.default_rng(5), 1, shift=1.0)[0]
    png = plot_looks(looks(daily(d), CONFIG), "SIG_AR1: challenger v5 against champion v4")
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert plot_looks([], "nothing yet").startswith(b"\x89PNG")
