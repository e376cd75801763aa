"""The paper A/B's data: the champion's and the challenger's books of the journal, paired.

Both books trade the same ticks (`paper.PaperDesk`), so their P&L in the same hour is a paired
observation. The A/B of a (champion version, challenger version) pair starts when both books trade
those versions, on the symbols both trade, and each UTC day that follows is one look of the sequential
test (`sequential.looks`) with that day's whole periods.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from pydantic import Field

from ..market.simulator import day_start_epoch
from ..market.store import epoch_day
from . import journal as J
from .canary import CanaryConfig
from .journal import Journal
from .sequential import Look, SequentialConfig, looks, period_differences

DAY = 86_400


class NoPairError(LookupError):
    pass


class ABSpec(SequentialConfig):
    """The A/B's test and the canary rollout its promote decision starts."""

    canary: CanaryConfig = Field(default=CanaryConfig(), description="the rollout a promote decision starts")


@dataclass
class ABPair:
    """What the two books traded side by side: the versions, the common symbols, the common span."""

    registered_model: str
    champion: str  # version
    challenger: str
    symbols: list[str]
    start: int  # epoch: both books trade these versions from here
    end: int  # epoch: the last tick both books traded, +1


def versioned_fills(journal: Journal, signals: pd.DataFrame | None = None) -> pd.DataFrame:
    """The book's paper fills with the version whose signal opened each (fills know the order, the
    order its signal epoch, the signal its version); `signals`: the book's, when already read."""
    fills = journal.read(J.fills, broker="paper")
    orders = journal.read(J.orders, broker="paper")[["order_id", "signal_epoch"]]
    signals = journal.read(J.signals) if signals is None else signals
    signals = signals[["symbol", "epoch", "version"]].rename(columns={"epoch": "signal_epoch"})
    return fills.merge(orders, on="order_id", how="left").merge(signals, on=["symbol", "signal_epoch"], how="left")


def pair(books: dict[str, tuple[Journal, pd.DataFrame]], through: date) -> ABPair:
    """The pair the books (champion, challenger: journal and its signals) trade up to the end of
    `through`: each book's latest version, from the first signal of that version in both books."""
    latest = {}
    for name, (journal, signals) in books.items():
        signals = signals[signals["epoch"] < day_start_epoch(through) + DAY]
        if signals.empty:
            raise NoPairError(f"the {name} book ({journal.engine.url.render_as_string()}) has no signal by {through}")
        latest[name] = signals.sort_values("epoch").iloc[-1]["version"], signals
    if latest["champion"][0] == latest["challenger"][0]:
        raise NoPairError(f"both books trade version {latest['champion'][0]}: no challenger to compare")
    starts, symbols = [], None
    for version, signals in latest.values():
        mine = signals[signals["version"] == version]
        starts.append(int(mine["epoch"].min()))
        symbols = set(mine["symbol"]) if symbols is None else symbols & set(mine["symbol"])
    checkpoints = [journal.read(J.checkpoints) for journal, _ in books.values()]
    common = sorted(symbols)
    if not common:
        raise NoPairError("the books trade no symbol in common")
    ends = [int(c[c["symbol"].isin(common)]["last_epoch"].min()) + 1 for c in checkpoints]
    model = checkpoints[0]["registered_model"].iloc[0]
    return ABPair(model, latest["champion"][0], latest["challenger"][0], common, max(starts), min(ends))


def daily_differences(books: dict[str, tuple[Journal, pd.DataFrame]], ab: ABPair, through: date, period_s: int):
    """[(day, that day's paired period differences)] from the pair's first whole period to `through`
    (the last day's whole periods before both books stopped)."""
    fills = []
    for (journal, signals), version in zip(books.values(), (ab.champion, ab.challenger), strict=True):
        f = versioned_fills(journal, signals)
        fills.append(f[(f["version"] == version) & f["symbol"].isin(ab.symbols)])
    first = -(-ab.start // period_s) * period_s  # the first whole period
    daily = []
    day = epoch_day(first)
    while day <= through:
        lo = max(first, day_start_epoch(day))
        hi = min(day_start_epoch(day) + DAY, ab.end)
        if hi - lo >= period_s:
            daily.append((day.isoformat(), period_differences(*fills, lo, hi, period_s).to_numpy()))
        day += timedelta(days=1)
    return daily


def ab_looks(champion: Journal, challenger: Journal, through: date, config: SequentialConfig) -> tuple[ABPair, list[Look], int]:
    """The pair, one look per day through `through`, and the number of paired periods."""
    # Each book's signals read once: they name the pair and the version of every fill.
    books = {name: (journal, journal.read(J.signals)) for name, journal in (("champion", champion), ("challenger", challenger))}
    ab = pair(books, through)
    daily = daily_differences(books, ab, through, config.period_s)
    if not daily:
        raise NoPairError(
            f"v{ab.champion} and v{ab.challenger} have no whole {config.period_s} s period side by side by {through}"
        )
    return ab, looks(daily, config), int(sum(np.size(d) for _, d in daily))
