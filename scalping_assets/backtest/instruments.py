"""Deriv's products as cost models: what one trade pays and how the venue closes it, from data.

`ExecutionConfig.instrument` picks one; `instrument_terms` resolves it for one symbol into plain
numbers (`Terms`) from the symbol catalog (`market/symbols.yml`: per-symbol `costs`, venue-wide
`venue`), which the engine and the naive reference loop both execute.

- `multiplier` (MULTUP/MULTDOWN, the default): `stake` is the money at risk, the position is
  `stake x multiplier`. The commission `rate x stake x multiplier` (floored at the venue's minimum)
  is charged once; the profit at a tick is `stake x multiplier x side x (quote - entry) / entry -
  commission`; the venue stops the contract out when the loss reaches the stake, and the loss never
  exceeds the stake even when a crash gaps through (`bid_price = max(0, stake + profit)`). No spread:
  Deriv prices the contract on the spot quote. Take-profit and stop-loss are Deriv limit orders, money
  amounts: with `unit="money"` they are given as such; with pips or sigma (the labels' barriers) each
  trade's barrier is converted to the amounts that close it there (trade columns
  `take_profit_amount`, `stop_loss_amount`), a take-profit inside the commission giving a negative
  amount: that exit still loses money. Rates are known per (symbol, multiplier) only.
- `rise_fall` (CALL/PUT on ticks): `stake` is staked for `max_hold_ticks` ticks; the contract wins if
  the quote then is above (a buy: Rise) or below (a sell: Fall) the entry spot, paying `payout_ratio
  x stake` (below 2: the house's margin); an equal quote loses. No take-profit, stop-loss or early sale.
- `cfd` (Deriv MT5): `stake` is the notional; each fill pays half the symbol's spread (price units in
  the catalog, with its date) plus the configured slippage; no commission; swap is left out.
- `spread`: the former placeholder model, kept as is: a configured spread in pips (1 by default),
  slippage and a flat commission per trade on a notional `stake`.

Deriv fills a contract at the spot of the tick after the purchase: `latency_ticks` >= 1 for the API
products. The venue caps API calls (`website_status.api_call_limits`; the catalog holds the documented
defaults): a product spending c calls per trade may enter floor(limit / c) trades per rolling minute
and hour, counted at the entry (conservative: a multiplier's sell comes later, or never when a limit
order closes it). `max_trades_per_minute` / `max_trades_per_hour` override the venue's figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ..market.symbols import CallLimits, SymbolCosts, get_symbol, venue

if TYPE_CHECKING:
    from .engine import ExecutionConfig

Instrument = Literal["spread", "multiplier", "rise_fall", "cfd"]
INSTRUMENTS: tuple[str, ...] = ("spread", "multiplier", "rise_fall", "cfd")
DERIV_API = ("multiplier", "rise_fall")  # bought through Deriv's API: next-tick entry, call limits
LEGACY_SPREAD_PIPS = 1.0  # the placeholder spread of the `spread` model


class UnknownCostError(ValueError):
    """A cost figure the backtest needs is unknown (null in the catalog); the message names the symbol and the field."""


@dataclass(frozen=True)
class Terms:
    """One symbol's costs and venue rules under one instrument and execution config, as plain numbers."""

    instrument: str
    symbol: str
    stake: float
    multiplier: int = 1
    commission_rate: float = 0.0  # multiplier: the catalog's rate
    commission: float = 0.0  # per trade, account currency
    payout_ratio: float = math.nan  # rise_fall: payout / stake of a win
    spread_pips: float = 0.0  # full spread; each fill pays half
    slippage_pips: float = 0.0
    slippage_sigma: float = 0.0
    stop_out_loss: float = math.inf  # multiplier: the venue closes the contract when its loss reaches this
    max_per_minute: int = 0  # entries per rolling minute; 0: no cap
    max_per_hour: int = 0
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def notional(self) -> float:
        return self.stake * self.multiplier

    @property
    def stop_out_move(self) -> float:
        """Adverse relative move (side x (quote - entry) / entry) at which the venue stops the position out."""
        if not math.isfinite(self.stop_out_loss):
            return math.inf
        return (self.stop_out_loss - self.commission) / self.notional


def _known(symbol: str, field_path: str, value: float | None, source: str) -> float:
    if value is None:
        raise UnknownCostError(
            f"{symbol}: {field_path} is unknown in the symbol catalog (symbols.yml: {source}); record the figure "
            "with its source, or backtest another instrument"
        )
    return float(value)


def trade_caps(config: ExecutionConfig, limits: CallLimits | None = None) -> tuple[int, int]:
    """(entries per rolling minute, per rolling hour); 0: no cap. The venue's API call limits (`limits`,
    e.g. read live by `DerivClient.api_call_limits`; by default the catalog's offline figures) divided
    by the calls one trade of the instrument spends, unless the config sets its own."""
    calls = venue().calls_per_trade.get(config.instrument)
    limits = limits or venue().api_call_limits
    per_minute = per_hour = 0
    if calls is not None and calls.calls is not None:
        per_minute = (limits.minutely or 0) // calls.calls
        per_hour = (limits.hourly or 0) // calls.calls
    if config.max_trades_per_minute is not None:
        per_minute = config.max_trades_per_minute
    if config.max_trades_per_hour is not None:
        per_hour = config.max_trades_per_hour
    return per_minute, per_hour


def instrument_terms(symbol: str, config: ExecutionConfig, costs: SymbolCosts | None = None, pip: float | None = None) -> Terms:
    """Resolve `config.instrument` for `symbol` from the catalog, or from `costs` (figures read live, a
    test's); `pip` defaults to the catalog's pip size. Raises UnknownCostError naming the symbol and the
    field when a figure it needs is unknown."""
    instrument = config.instrument
    per_minute, per_hour = trade_caps(config)
    common = {"instrument": instrument, "symbol": symbol, "stake": config.stake}
    common |= {"max_per_minute": per_minute, "max_per_hour": per_hour}
    if instrument == "spread":
        spread = LEGACY_SPREAD_PIPS if config.spread_pips is None else config.spread_pips
        return Terms(
            **common,
            commission=config.commission,
            spread_pips=spread,
            slippage_pips=config.slippage_pips,
            slippage_sigma=config.slippage_sigma,
        )
    costs = costs if costs is not None else get_symbol(symbol).costs
    if instrument == "multiplier":
        table = costs.multiplier.commission
        if not table:
            raise UnknownCostError(
                f"{symbol}: costs.multiplier.commission is unknown in the symbol catalog (symbols.yml: null at every "
                "multiplier); read proposal.commission live and record the rate with its source and multiplier, "
                "or backtest another instrument"
            )
        multiplier = config.multiplier if config.multiplier is not None else min(table)
        if multiplier not in table:
            known = ", ".join(f"x{m}" for m in sorted(table))
            raise UnknownCostError(
                f"{symbol}: costs.multiplier.commission at x{multiplier} is unknown in the symbol catalog (known at {known}; "
                "whether the rate changes with the multiplier is not known)"
            )
        figure = table[multiplier]
        rate = _known(symbol, f"costs.multiplier.commission[{multiplier}]", figure.value, figure.source)
        rules = venue().multiplier
        floor = _known(symbol, "venue.multiplier.min_commission", rules.min_commission.value, rules.min_commission.source)
        share = _known(symbol, "venue.multiplier.stop_out_loss", rules.stop_out_loss.value, rules.stop_out_loss.source)
        # Deriv's floor; a zero rate (the frictionless simulated symbol) charges nothing at all.
        commission = max(rate * config.stake * multiplier, floor) if rate > 0 else 0.0
        if commission >= share * config.stake:
            raise ValueError(f"{symbol}: a commission of {commission:g} on a stake of {config.stake:g} stops out at entry")
        return Terms(
            **common,
            multiplier=multiplier,
            commission_rate=rate,
            commission=commission,
            stop_out_loss=share * config.stake,
            sources={"commission_rate": figure.source, "min_commission": rules.min_commission.source},
        )
    if instrument == "rise_fall":
        figure = costs.rise_fall.payout_ratio
        ratio = _known(symbol, "costs.rise_fall.payout_ratio", figure.value, figure.source)
        return Terms(**common, payout_ratio=ratio, sources={"payout_ratio": figure.source})
    if instrument == "cfd":
        figure = costs.cfd.spread
        if config.spread_pips is not None:  # configured, e.g. a spread read off Deriv's MT5 table today
            spread, source = config.spread_pips, "ExecutionConfig.spread_pips"
        else:
            pip = pip if pip is not None else get_symbol(symbol).pip_size
            spread = _known(symbol, "costs.cfd.spread", figure.value, figure.source) / pip
            source = figure.source
        return Terms(
            **common,
            spread_pips=spread,
            slippage_pips=config.slippage_pips,
            slippage_sigma=config.slippage_sigma,
            sources={"spread": source},
        )
    raise ValueError(f"unknown instrument {instrument!r}; one of {', '.join(INSTRUMENTS)}")
