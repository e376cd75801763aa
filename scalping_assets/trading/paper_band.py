"""A canary check: the challenger's paper P&L during a canary step stays within its backtest's band.

n trades of a strategy whose backtest had expectancy m and per-trade spread s sum to about n·m with a
spread of s·√n: a total below n·m − z·s·√n (z = 3 by default, about one step in 740 by chance for a
healthy model) means the live model trades worse than it was promoted on. Only the low side breaches:
earning more than the backtest is no reason to roll back. Fewer than `min_trades` trades judge nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..monitoring.live import ServedVersion, backtest_side
from .ab import versioned_fills
from .journal import Journal


@dataclass
class PaperBandCheck:
    journal: Journal  # the book trading the canary's version (the challenger's)
    served: ServedVersion  # its backtest figures
    z: float = 3.0
    min_trades: int = 20
    name: str = "paper_pnl_within_backtest_band"

    def band(self, trades: int, symbols: list[str]) -> tuple[float, float]:
        """(lower, upper) of the total net P&L of `trades` trades on `symbols`, by the backtest."""
        side, _ = backtest_side(self.served, symbols)
        mean, spread = side["expectancy"], side["pnl_std"]
        centre, half = trades * mean, self.z * spread * math.sqrt(trades)
        return centre - half, centre + half

    def breach(self, since: float) -> str | None:
        fills = versioned_fills(self.journal)
        mine = fills[(fills["version"] == self.served.version) & (fills["exit_epoch"] >= since)]
        n = len(mine)
        if n < self.min_trades:
            return None
        lower, upper = self.band(n, sorted(set(mine["symbol"])))
        total = float(mine["pnl"].sum())
        if not math.isfinite(lower):
            return None  # a backtest without per-trade spread gives no band (its run predates the figure)
        if total < lower:
            return (
                f"paper P&L of v{self.served.version} {total:+.2f} over {n} trades is below its backtest band "
                f"[{lower:+.2f}, {upper:+.2f}] (expectancy ± {self.z:g} spreads)"
            )
        return None
