"""An anytime-valid sequential decision for a champion-versus-challenger paper A/B.

The paper trader runs champion and challenger on the same ticks. The A/B compares them on the paired
per-period P&L difference d_k = challenger P&L - champion P&L summed over period k (by exit epoch,
default one hour): per period, because trades overlap and are autocorrelated within minutes while
hours are close to independent for strategies that hold seconds to minutes; paired, because both
variants saw the same ticks, so the market noise they share cancels. A period in which neither traded
is an observation of 0.

The test is looked at once a day and may stop at any look. A fixed-sample t-test looked at daily
declares a winner between identical models far more often than its alpha (about a quarter of the
time at alpha 0.05 over 30 daily looks); the bound used here holds over every look.

**Method.** The asymptotic confidence sequence (AsympCS) of Waudby-Smith, Arbour, Sinha, Kennedy &
Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences", Annals of Statistics
52(6), 2024 (arXiv:2103.06476), Theorem 2.2, two-sided: after t periods with mean m_t and standard
deviation s_t of the differences,

    m_t +- s_t * sqrt( 2 (t rho^2 + 1) / (t^2 rho^2) * log( sqrt(t rho^2 + 1) / alpha ) ),

which covers the true mean difference at every t at once with probability tending to 1 - alpha, with
no assumption on the differences' distribution beyond a finite variance (heavy tails and skew only
slow the approximation; `min_periods` keeps the first, roughest looks from deciding). rho is the
mixture's scale, chosen so that the sequence is tightest at `planned_periods` (the paper's
appendix): rho^2 = (-2 log alpha + log(1 - 2 log alpha)) / planned_periods. The boundary is that of
Robbins' normal mixture, so the same test is the mixture sequential probability ratio test (mSPRT)
of Johari, Koomen, Pekelis & Walsh, "Always valid inference: continuous monitoring of A/B tests",
Operations Research 70(3), 2022, with a N(0, rho^2) mixture over the standardised effect and the
variance plugged in: the mixture likelihood ratio of "mean 0" after t periods is

    Lambda_t = exp( rho^2 S_t^2 / (2 (t rho^2 + 1)) ) / sqrt(t rho^2 + 1),   S_t = t m_t / s_t,

and Lambda_t >= 1/alpha exactly when 0 lies outside the sequence above. The always-valid p-value is
the running minimum of min(1, 1/Lambda_t) over the looks taken from `min_periods` on (1 before: the
test has not started); restricting a time-uniform bound to the looks actually taken keeps it valid.

Why not a library: `expectation` 0.6 requires Python >= 3.12 (this project supports 3.11);
`confseq` 0.0.11 (2023) builds C++ against system Boost headers and offers the known-variance
boundaries only; `savvi` 0.3.1 has an anytime-valid t-test (Lindon et al.) for Gaussian errors, a
per-observation Python loop, and pulls cvxpy with eight more packages for a part we do not use. The
formula above is two lines; the tests hold it to a direct evaluation and measure its error rates.

**Decision rule**, at the look of day k with t paired periods so far:
- promote (the challenger is better): t >= min_periods and lower > 0 (equivalently p < alpha, mean > 0);
- keep (the challenger is worse): t >= min_periods and upper < 0;
- keep ("no difference shown"): the `max_days`-th look ends without either of the above;
- continue otherwise. Zero variance (every difference equal, as between identical models) never
  decides: the sequence is unbounded and p = 1.
The first decision other than continue stops the test: every later look repeats it (its statistics
still include the later data, for the record). Non-finite differences are ignored and counted.
Under "no difference" (an A/A test) the chance that any look promotes or keeps by the boundary is at
most alpha (asymptotically; measured in `scalping_assets_tests/test_sequential.py` and
`benchmarks/bench_ab.py`).
"""

from __future__ import annotations

import math
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from ..plotting import figure_png, plt

COLUMNS = ("exit_epoch", "pnl")


class SequentialConfig(BaseModel):
    alpha: float = Field(
        default=0.05, gt=0, lt=1, description="the false-decision rate under A/A (identical skill), over every look together"
    )
    period_s: int = Field(default=3600, ge=1, description="the paired unit in seconds: P&L is summed per period by exit epoch")
    min_periods: int = Field(default=24, ge=2, description="no decision before this many paired periods")
    max_days: int = Field(
        default=30, ge=1, description="looks after which, without a decision, the champion is kept ('no difference shown')"
    )
    planned_periods: int = Field(
        default=720, ge=1, description="the number of periods at which the confidence sequence is tightest (30 days of hours)"
    )


class Look(BaseModel):
    day: str = Field(description="ISO date of the look")
    periods: int = Field(ge=0, description="paired periods so far")
    mean: float = Field(description="mean difference per period so far, challenger - champion")
    sd: float = Field(ge=0, description="standard deviation of the differences so far (0 below two periods)")
    lower: float = Field(description="lower end of the confidence sequence for the mean difference (-inf: unbounded)")
    upper: float = Field(description="upper end of the confidence sequence for the mean difference (+inf: unbounded)")
    p_value: float = Field(ge=0, le=1, description="always-valid p-value of 'no difference' (running minimum over looks)")
    decision: Literal["promote", "keep", "continue"]
    why: str = Field(description="one sentence with the numbers")


def period_differences(champion: pd.DataFrame, challenger: pd.DataFrame, start: int, end: int, period_s: int) -> pd.Series:
    """Challenger P&L minus champion P&L per period of `period_s` seconds in [start, end), by exit epoch.

    Only whole periods count: the last one ends at or before `end`. A period in which neither variant
    closed a trade is 0 (an observation). Fills outside the periods are ignored. Index: each period's
    start epoch."""
    if period_s < 1:
        raise ValueError(f"period_s must be >= 1 second, got {period_s}")
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    n = (end - start) // period_s
    total = np.zeros(n)
    for name, frame, sign in (("champion", champion, -1.0), ("challenger", challenger, 1.0)):
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} fills: missing column(s) {', '.join(missing)} (need {', '.join(COLUMNS)})")
        columns = {c: np.asarray(frame[c], dtype=np.float64) for c in COLUMNS}
        for column, values in columns.items():
            bad = int((~np.isfinite(values)).sum())
            if bad:
                raise ValueError(f"{name} fills: column {column} has {bad} non-finite value(s)")
        epoch, pnl = columns["exit_epoch"].astype(np.int64), columns["pnl"]
        k = (epoch - start) // period_s
        inside = (epoch >= start) & (k < n)
        total += sign * np.bincount(k[inside], weights=pnl[inside], minlength=n)
    index = pd.Index(start + period_s * np.arange(n, dtype=np.int64), name="period_start")
    return pd.Series(total, index=index, name="difference")


def mixture_rho2(alpha: float, planned: int) -> float:
    """The mixture scale rho^2 that makes the boundary tightest at `planned` periods (Waudby-Smith et al.)."""
    ell = -2.0 * math.log(alpha)
    return (ell + math.log1p(ell)) / planned


def radius(t: int, sd: float, alpha: float, rho2: float) -> float:
    """Half-width of the two-sided asymptotic confidence sequence after t observations of spread `sd`."""
    v = t * rho2 + 1.0
    return sd * math.sqrt(2.0 * v / (t * t * rho2) * math.log(math.sqrt(v) / alpha))


def log_mixture_ratio(t: int, mean: float, sd: float, rho2: float) -> float:
    """log Lambda_t: the normal-mixture likelihood ratio of 'mean 0' after t observations (sd > 0)."""
    v = t * rho2 + 1.0
    s = t * mean / sd
    return rho2 * s * s / (2.0 * v) - 0.5 * math.log(v)


def _check_days(daily: list[tuple[str, np.ndarray]]) -> None:
    days = [date.fromisoformat(day) for day, _ in daily]
    for before, after in zip(days, days[1:], strict=False):
        if after <= before:
            raise ValueError(f"looks must be on increasing days: {after.isoformat()} after {before.isoformat()}")


def looks(daily: list[tuple[str, np.ndarray]], config: SequentialConfig) -> list[Look]:
    """One look per (ISO day, that day's differences), each on every difference up to that day; see the
    module's decision rule."""
    _check_days(daily)
    alpha, rho2 = config.alpha, mixture_rho2(config.alpha, config.planned_periods)
    seen: list[np.ndarray] = []
    ignored = 0
    p_running = 1.0
    stopped: Look | None = None
    out: list[Look] = []
    for number, (day, values) in enumerate(daily, start=1):
        values = np.asarray(values, dtype=np.float64).ravel()
        finite = np.isfinite(values)
        ignored += int((~finite).sum())
        seen.append(values[finite])
        x = np.concatenate(seen)
        t = len(x)
        mean = float(x.mean()) if t else 0.0
        constant = t < 2 or float(np.ptp(x)) == 0.0
        sd = 0.0 if constant else float(x.std(ddof=1))
        if constant:
            lower, upper, p_now = -math.inf, math.inf, 1.0
        else:
            r = radius(t, sd, alpha, rho2)
            lower, upper = mean - r, mean + r
            p_now = min(1.0, math.exp(-log_mixture_ratio(t, mean, sd, rho2)))
        eligible = t >= config.min_periods
        if eligible:
            p_running = min(p_running, p_now)
        numbers = dict(day=day, periods=t, mean=mean, sd=sd, lower=lower, upper=upper, p_value=p_running)
        if stopped is not None:
            why = (
                f"Stopped on {stopped.day}: {stopped.why} Now, with {t} periods: "
                f"mean {mean:+.4g}, sequence {_interval(lower, upper)}."
            )
            out.append(Look(**numbers, decision=stopped.decision, why=why))
            continue
        decision, why = _decide(number, t, mean, lower, upper, p_running, constant, eligible, config)
        if ignored:
            why += f" ({ignored} non-finite difference(s) ignored.)"
        look = Look(**numbers, decision=decision, why=why)
        if decision != "continue":
            stopped = look
        out.append(look)
    return out


def _interval(lower: float, upper: float) -> str:
    return f"[{lower:+.4g}, {upper:+.4g}]" if math.isfinite(lower) else "unbounded"


def _decide(number, t, mean, lower, upper, p, constant, eligible, config) -> tuple[str, str]:
    level, span = f"{1 - config.alpha:.0%}", f"{t} periods over {number} day(s)"
    sequence = _interval(lower, upper)
    stats = f"mean difference {mean:+.4g} per period, {level} confidence sequence {sequence}, always-valid p = {p:.3g}"
    if eligible and lower > 0:
        return "promote", f"Promote the challenger: it earned more than the champion per period, {stats} (above 0), {span}."
    if eligible and upper < 0:
        return "keep", f"Keep the champion: the challenger earned less per period, {stats} (below 0), {span}."
    if number >= config.max_days:
        return "keep", f"Keep the champion: no difference shown after {number} days ({t} periods); {stats}."
    if not eligible:
        return "continue", f"Too early: {t} paired periods, fewer than the {config.min_periods} needed to decide; {stats}."
    if constant:
        return "continue", f"No difference to measure: the two variants' P&L were equal in each of the {t} periods so far."
    return "continue", f"No difference shown yet: {stats} (contains 0), {span}."


def plot_looks(looks: list[Look], title: str, alpha: float = SequentialConfig().alpha) -> bytes:
    """PNG: the running mean difference with its confidence sequence and the decision; below, the
    always-valid p-value against `alpha` (the config's; a look does not carry it), on a log scale."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    fig.suptitle(title)
    if not looks:
        top.text(0.5, 0.5, "no looks yet", ha="center", va="center", transform=top.transAxes)
        return figure_png(fig)
    days = pd.to_datetime([look.day for look in looks])
    mean = np.array([look.mean for look in looks])
    lower = np.array([look.lower for look in looks])
    upper = np.array([look.upper for look in looks])
    finite = np.isfinite(lower) & np.isfinite(upper)
    band = np.where(finite, lower, np.nan), np.where(finite, upper, np.nan)
    top.fill_between(days, *band, alpha=0.25, label="confidence sequence")
    top.plot(days, mean, marker="o", markersize=3, label="mean difference (challenger - champion)")
    top.axhline(0.0, color="black", linewidth=0.8)
    top.set_ylabel("P&L difference per period")
    p = np.array([max(look.p_value, 1e-300) for look in looks])
    bottom.plot(days, p, marker="o", markersize=3, label="always-valid p-value")
    bottom.axhline(alpha, color="tab:red", linestyle="--", linewidth=1, label=f"alpha = {alpha:g}")
    first = next((i for i, look in enumerate(looks) if look.decision != "continue"), None)
    bottom.set_yscale("log")
    bottom.set_ylabel("p-value")
    if first is not None:
        decided = looks[first]
        colour = "tab:green" if decided.decision == "promote" else "tab:gray"
        for axis in (top, bottom):
            axis.axvline(days[first], color=colour, linestyle=":", linewidth=1.5)
        late = first > (len(looks) - 1) / 2  # the label goes left of a late decision, inside the axes
        shown = decided.lower > 0 or decided.upper < 0
        top.annotate(
            f"{decided.decision} on {decided.day}" + ("" if shown else " (no difference shown)"),
            (days[first], mean[first]),
            textcoords="offset points",
            xytext=(-6 if late else 6, 12),
            ha="right" if late else "left",
            color=colour,
            fontweight="bold",
        )
    top.legend(loc="best", fontsize=8)
    bottom.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    return figure_png(fig)
