"""Tick-by-tick execution of class-probability signals, with the costs of a Deriv product.

A signal at tick i (predicted class UP or DOWN with probability >= `min_confidence`) fills at tick
i + `latency_ticks`, if a position slot is free there and fewer than the instrument's per-minute and
per-hour caps of entries were filled in the minute and the hour up to that tick. The position exits
at the first later tick whose quote reaches the take-profit or the stop-loss (in pips, in multiples
of the RMS tick move of the 100 ticks up to the fill, exactly as the triple-barrier labels, or in
money for a multiplier), the venue's stop-out (a multiplier whose loss reaches its stake), or at the
timeout (`max_hold_ticks`, or `max_hold_seconds` when set; a Rise/Fall contract's duration),
whichever comes first on the tick path; it exits at that tick's quote, so a stop-loss gapped through
by a crash costs the whole gap (a multiplier's loss stops at its stake). A slot frees at the exit tick.

What a trade pays depends on `instrument` (`instruments.py`): a multiplier's commission, a Rise/Fall
payout below twice the stake, a CFD's or the legacy model's spread and slippage. P&L is in account
currency for a fixed `stake` per trade.

The loop is compiled with numba: it visits signal ticks only and walks each position's path once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, model_validator

from ..features.batch import pips
from ..features.labels import DOWN, UP, Barriers, barrier_distances, entry_sigma_pips
from ..market.symbols import SymbolCosts
from .instruments import DERIV_API, Instrument, Terms, instrument_terms

TAKE_PROFIT, STOP_LOSS, TIMEOUT, STOP_OUT = 0, 1, 2, 3
REASONS = ("tp", "sl", "timeout", "stop_out")
HOUR = 3600
MINUTE = 60
# A barrier counts as reached within a billionth of its distance: a money limit converted to pips
# (or to a relative move) is a float, and a quote exactly at it must not depend on rounding.
REACH = 1 - 1e-9
# Set without an `instrument`, these select the legacy `spread` model: its configs keep their meaning.
LEGACY_FIELDS = ("spread_pips", "slippage_pips", "slippage_sigma", "commission")


class ExecutionConfig(BaseModel):
    instrument: Instrument = Field(
        default="multiplier",
        description="Deriv product whose costs and rules apply (multiplier, rise_fall, cfd), or the legacy spread model",
    )
    multiplier: int | None = Field(
        default=None, ge=1, description="multiplier contracts; empty: the one the catalog knows the symbol's commission at"
    )
    min_confidence: float = Field(default=0.55, ge=0, le=1, description="probability of the predicted class needed to enter")
    take_profit: float = Field(default=1.0, gt=0)
    stop_loss: float = Field(default=2.0, gt=0)
    unit: Literal["pips", "sigma", "money"] = Field(
        default="sigma", description="of take_profit, stop_loss; money (account currency, Deriv's limit orders): multiplier only"
    )
    max_hold_ticks: int = Field(default=10, ge=1, description="timeout in ticks; a Rise/Fall contract's duration")
    max_hold_seconds: float | None = Field(default=None, gt=0, description="timeout in seconds instead of ticks")
    max_positions: int = Field(default=1, ge=1)
    max_trades_per_minute: int | None = Field(
        default=None, ge=1, description="entries per rolling minute; empty: the venue's API call limit for the instrument"
    )
    max_trades_per_hour: int | None = Field(
        default=None, ge=1, description="entries per rolling hour; empty: the venue's API call limit for the instrument"
    )
    latency_ticks: int = Field(
        default=1, ge=0, description="the fill comes this many ticks after the signal (Deriv's entry spot is the next tick: >= 1)"
    )
    spread_pips: float | None = Field(
        default=None, ge=0, description="full spread, each fill pays half: spread (empty: 1 pip) and cfd (empty: the catalog's)"
    )
    slippage_pips: float = Field(default=0.0, ge=0, description="adverse slippage per fill: spread and cfd")
    slippage_sigma: float = Field(default=0.0, ge=0, description="adverse slippage per fill, in RMS tick moves: spread and cfd")
    commission: float = Field(default=0.0, ge=0, description="per trade, account currency: spread only")
    stake: float = Field(
        default=1_000.0, gt=0, description="per trade, account currency: staked (multiplier, rise_fall) or notional (cfd, spread)"
    )
    capital: float = Field(default=10_000.0, gt=0, description="starting equity")

    @model_validator(mode="before")
    @classmethod
    def _legacy_instrument(cls, data):
        # A config written for the placeholder costs (a spread, slippage, a flat commission) and no
        # instrument still means those costs.
        if isinstance(data, dict) and "instrument" not in data and any(data.get(f) is not None for f in LEGACY_FIELDS):
            return {**data, "instrument": "spread"}
        return data

    @model_validator(mode="after")
    def _fits_the_instrument(self) -> ExecutionConfig:
        instrument, refused = self.instrument, []
        if instrument != "multiplier":
            refused += [("multiplier", self.multiplier is not None), ("unit money", self.unit == "money")]
        if instrument != "spread":
            refused.append(("commission", self.commission != 0))
        if instrument in DERIV_API:
            refused += [
                ("spread_pips", self.spread_pips is not None),
                ("slippage_pips", self.slippage_pips != 0),
                ("slippage_sigma", self.slippage_sigma != 0),
            ]
            if self.latency_ticks < 1:
                raise ValueError(f"latency_ticks: a {instrument} contract's entry spot is the tick after the purchase (>= 1)")
        if instrument == "rise_fall":
            refused.append(("max_hold_seconds (the contract lasts max_hold_ticks ticks)", self.max_hold_seconds is not None))
            defaults = type(self).model_fields
            refused += [(f, getattr(self, f) != defaults[f].default) for f in ("take_profit", "stop_loss", "unit")]
        named = [name for name, bad in refused if bad]
        if named:
            raise ValueError(f"{', '.join(named)}: not part of the {instrument} instrument")
        return self

    def barriers(self) -> Barriers:
        if self.unit == "money":
            raise ValueError("money take-profit and stop-loss are per-trade amounts, not label barriers")
        return Barriers(
            take_profit=self.take_profit, stop_loss=self.stop_loss, max_hold_ticks=self.max_hold_ticks, unit=self.unit
        )


def signal_sides(proba: np.ndarray, min_confidence: float) -> np.ndarray:
    """+1 (buy) where UP is the predicted class with enough confidence, -1 for DOWN, else 0; rows
    without a prediction (NaN) never trade. Ties go to the first class, as numpy's argmax."""
    return _sides(np.ascontiguousarray(proba), min_confidence)


@numba.njit(cache=True)
def _sides(proba, min_confidence):
    out = np.zeros(proba.shape[0], np.int8)
    for i in range(proba.shape[0]):
        row = proba[i]
        if np.isnan(row[0]) or np.isnan(row[1]) or np.isnan(row[2]):
            continue
        best = 0
        if row[1] > row[best]:
            best = 1
        if row[2] > row[best]:
            best = 2
        if row[best] >= min_confidence:
            out[i] = 1 if best == UP else -1 if best == DOWN else 0
    return out


@numba.njit(cache=True)
def _exit_of(k, epochs, f, side, tp, sl, stop_out, max_hold_ticks, max_hold_seconds):
    """(exit tick, reason) of a position filled at tick f; (-1, -1) if the series ends first. `stop_out`
    is the venue's stop-out as a relative adverse move (inf: none); the nearer of it and the stop-loss
    names the exit when the quote reaches either."""
    entry = k[f]
    out = stop_out * entry
    stop, why_stop = (sl, STOP_LOSS) if sl <= out else (out, STOP_OUT)
    take, stop = tp * REACH, stop * REACH
    for j in range(f + 1, len(k)):
        move = side * (k[j] - entry)
        if move >= take:
            return j, TAKE_PROFIT
        if move <= -stop:
            return j, why_stop
        if j - f >= max_hold_ticks or epochs[j] - epochs[f] >= max_hold_seconds:
            return j, TIMEOUT
    return -1, -1


@numba.njit(cache=True)
def _simulate(
    k, epochs, sides, tp, sl, stop_out, latency, max_hold_ticks, max_hold_seconds, max_positions, max_per_minute, max_per_hour
):
    n = len(k)
    capacity = 0
    for i in range(n):
        capacity += sides[i] != 0
    signal = np.empty(capacity, np.int64)
    fill = np.empty(capacity, np.int64)
    exit_ = np.empty(capacity, np.int64)
    reason = np.empty(capacity, np.int8)
    entered = np.empty(capacity, np.int64)  # epoch of every entry, still open at the end or not: the caps count it
    slot_free_at = np.full(max_positions, -1, np.int64)  # exit tick of each slot's position
    count, entries, oldest_hour, oldest_minute, unfinished = 0, 0, 0, 0, 0
    for i in range(n):
        side = sides[i]
        if side == 0:
            continue
        f = i + latency
        if f >= n:
            break
        slot = -1
        for p in range(max_positions):
            if slot_free_at[p] <= f:
                slot = p
                break
        if slot < 0 or np.isnan(tp[f]) or np.isnan(sl[f]):  # NaN: no barrier known yet; inf: no barrier
            continue
        if max_per_hour > 0:
            while oldest_hour < entries and entered[oldest_hour] <= epochs[f] - HOUR:
                oldest_hour += 1
            if entries - oldest_hour >= max_per_hour:
                continue
        if max_per_minute > 0:
            while oldest_minute < entries and entered[oldest_minute] <= epochs[f] - MINUTE:
                oldest_minute += 1
            if entries - oldest_minute >= max_per_minute:
                continue
        entered[entries] = epochs[f]
        entries += 1
        x, why = _exit_of(k, epochs, f, side, tp[f], sl[f], stop_out, max_hold_ticks, max_hold_seconds)
        if x < 0:
            slot_free_at[slot] = n  # open at the end of the data: holds its slot, never reported
            unfinished += 1
            continue
        signal[count], fill[count], exit_[count], reason[count] = i, f, x, why
        slot_free_at[slot] = x
        count += 1
    return signal[:count], fill[:count], exit_[:count], reason[:count], unfinished


@numba.njit(cache=True)
def _exits_of(k, epochs, fills, sides, tp, sl, max_hold_ticks, max_hold_seconds, stop_out):
    exit_ = np.empty(len(fills), np.int64)
    reason = np.empty(len(fills), np.int8)
    for t in range(len(fills)):
        f = fills[t]
        exit_[t], reason[t] = _exit_of(k, epochs, f, sides[t], tp[f], sl[f], stop_out, max_hold_ticks, max_hold_seconds)
    return exit_, reason


def exits_of(k, epochs, fills, sides, tp, sl, max_hold_ticks, max_hold_seconds, stop_out: float = np.inf):
    """Exit tick and reason of independent positions (no slot or rate limits): the random baseline.
    `stop_out`: the venue's stop-out as a relative adverse move (`Terms.stop_out_move`; inf: none)."""
    return _exits_of(k, epochs, fills, sides, tp, sl, max_hold_ticks, float(max_hold_seconds), float(stop_out))


def money_barriers(symbol: str, config: ExecutionConfig, terms: Terms) -> tuple[float, float]:
    """Deriv's limit orders (unit money) as barrier distances per pip of the entry quote: the profit
    notional x move / entry - commission reaches +take_profit or -stop_loss, so the take-profit lies
    (take_profit + commission) / notional of the entry away, the stop-loss (stop_loss - commission) /
    notional. Both engines multiply these by the entry in pips, in this order (bit for bit)."""
    if config.stop_loss <= terms.commission:
        raise ValueError(
            f"{symbol}: stop_loss {config.stop_loss:g} is within the commission {terms.commission:g}: "
            "the contract would stop at its entry"
        )
    return (config.take_profit + terms.commission) / terms.notional, (config.stop_loss - terms.commission) / terms.notional


@dataclass
class TickPath:
    """One symbol's ticks prepared for execution: pip grid, barrier distances, RMS move per tick, and
    the symbol's cost figures (None: the catalog's, looked up when the instrument needs them)."""

    symbol: str
    epochs: np.ndarray
    quotes: np.ndarray
    pip: float
    k: np.ndarray  # quotes in pips, as float for the compiled loop
    tp: np.ndarray  # take-profit distance in pips of an entry at each tick (NaN: unknown yet; inf: none)
    sl: np.ndarray
    sigma: np.ndarray
    costs: SymbolCosts | None = None

    @classmethod
    def build(
        cls,
        symbol: str,
        epochs: np.ndarray,
        quotes: np.ndarray,
        pip: float,
        config: ExecutionConfig,
        costs: SymbolCosts | None = None,
    ) -> TickPath:
        """Fails early (UnknownCostError) when the instrument needs a cost figure the catalog lacks."""
        terms = instrument_terms(symbol, config, costs, pip)
        k = pips(np.asarray(quotes, np.float64), pip)
        kf = k.astype(np.float64)
        if config.instrument == "rise_fall":  # no take-profit or stop-loss: the contract runs its ticks
            tp, sl = np.full(len(k), np.inf), np.full(len(k), np.inf)
        elif config.unit == "money":
            tp_per_pip, sl_per_pip = money_barriers(symbol, config, terms)
            tp, sl = tp_per_pip * kf, sl_per_pip * kf
        else:
            tp, sl = barrier_distances(k, config.barriers())
        return cls(
            symbol, np.asarray(epochs, np.int64), np.asarray(quotes, np.float64), pip, kf, tp, sl, entry_sigma_pips(k), costs
        )

    def terms(self, config: ExecutionConfig) -> Terms:
        return instrument_terms(self.symbol, config, self.costs, self.pip)

    def hold_limits(self, config: ExecutionConfig) -> tuple[int, float]:
        if config.max_hold_seconds is None:
            return config.max_hold_ticks, np.inf
        return len(self.k), float(config.max_hold_seconds)


def trade_frame(
    path: TickPath,
    config: ExecutionConfig,
    signal: np.ndarray,
    fill: np.ndarray,
    exit_: np.ndarray,
    reason: np.ndarray,
    sides: np.ndarray,
) -> pd.DataFrame:
    """One row per trade: times, fills, reason, gross/net P&L and what each cost took (`trade_columns`)."""
    columns = trade_columns(
        path.terms(config),
        path.pip,
        sides,
        entry_quote=path.quotes[fill],
        exit_quote=path.quotes[exit_],
        k_entry=path.k[fill],
        k_exit=path.k[exit_],
        sigma_entry=path.sigma[fill],
        tp_entry=path.tp[fill],
        sl_entry=path.sl[fill],
    )
    amounts = {name: columns.pop(name) for name in ("take_profit_amount", "stop_loss_amount") if name in columns}
    entry_price, exit_price = columns.pop("entry_price"), columns.pop("exit_price")
    return pd.DataFrame(
        {
            "symbol": path.symbol,
            "signal_epoch": path.epochs[signal],
            "entry_epoch": path.epochs[fill],
            "exit_epoch": path.epochs[exit_],
            "entry_tick": fill,
            "exit_tick": exit_,
            "side": sides.astype(np.int8),
            "entry_price": entry_price,
            "exit_price": exit_price,
            "reason": pd.Categorical.from_codes(reason, REASONS),
            **columns,
            "hold_ticks": exit_ - fill,
            "hold_seconds": path.epochs[exit_] - path.epochs[fill],
            **amounts,
        }
    )


def trade_columns(
    terms: Terms,
    pip: float,
    sides: np.ndarray,
    *,
    entry_quote: np.ndarray,
    exit_quote: np.ndarray,
    k_entry: np.ndarray,
    k_exit: np.ndarray,
    sigma_entry: np.ndarray,
    tp_entry: np.ndarray,
    sl_entry: np.ndarray,
) -> dict[str, np.ndarray]:
    """What trades pay, from their entry and exit (arrays, one entry per trade): the columns of
    `trade_frame` after the times, and what the batch engine and the incremental one both use.

    `pnl_gross` is the trade's P&L before the instrument's costs (a Rise/Fall contract's at a fair
    even-money payout); `commission` is the multiplier's commission, the Rise/Fall house margin (the
    payout short of twice the stake on a win, the stake on an equal quote) or the legacy per-trade fee;
    `loss_beyond_stake` is the loss a multiplier's stop-out spared (a gap through the stake)."""
    side = sides.astype(np.float64)
    zero = np.zeros(len(side))
    extra = {}
    if terms.instrument in ("spread", "cfd"):
        slip = (terms.slippage_pips + terms.slippage_sigma * np.nan_to_num(sigma_entry)) * pip
        half_spread = terms.spread_pips / 2 * pip

        def pnl(entry_cost: np.ndarray | float, exit_cost: np.ndarray | float) -> np.ndarray:
            return terms.stake * side * ((exit_quote - side * exit_cost) / (entry_quote + side * entry_cost) - 1)

        gross = pnl(0.0, 0.0)
        after_spread = pnl(half_spread, half_spread)
        after_slippage = pnl(half_spread + slip, half_spread + slip)
        entry_price, exit_price = entry_quote + side * (half_spread + slip), exit_quote - side * (half_spread + slip)
        spread_cost, slippage_cost = gross - after_spread, after_spread - after_slippage
        commission, net, spared = np.full(len(side), terms.commission), after_slippage - terms.commission, zero
    elif terms.instrument == "multiplier":
        gross = terms.notional * side * (exit_quote - entry_quote) / entry_quote
        commission = np.full(len(side), terms.commission)
        net = np.maximum(gross - commission, -terms.stake)  # bid_price = max(0, stake + profit)
        spared = net - (gross - commission)
        entry_price, exit_price, spread_cost, slippage_cost = entry_quote, exit_quote, zero, zero
        # The limit orders that close the trade at its barriers (the configured amounts with unit money).
        extra = {
            "take_profit_amount": terms.notional * tp_entry / k_entry - terms.commission,
            "stop_loss_amount": terms.notional * sl_entry / k_entry + terms.commission,
        }
    else:  # rise_fall
        move = side * (exit_quote - entry_quote)
        gross = terms.stake * np.sign(move)
        net = np.where(move > 0, (terms.payout_ratio - 1) * terms.stake, -terms.stake)
        commission = gross - net
        entry_price, exit_price, spread_cost, slippage_cost, spared = entry_quote, exit_quote, zero, zero, zero
    return {
        "entry_price": entry_price,
        "exit_price": exit_price,
        "pips_gross": side * (k_exit - k_entry),
        "pnl_gross": gross,
        "spread_cost": spread_cost,
        "slippage_cost": slippage_cost,
        "commission": commission,
        "loss_beyond_stake": spared,
        "pnl_net": net,
        **extra,
    }


@dataclass
class BacktestResult:
    trades: pd.DataFrame
    unfinished: int  # positions still open when the data ended (not in trades)
    signals: int  # ticks with an entry signal


def run_backtest(path: TickPath, proba: np.ndarray, config: ExecutionConfig) -> BacktestResult:
    """Execute the signals of `proba` (n_ticks, 3; NaN rows: no prediction) on one symbol's tick path."""
    if len(proba) != len(path.k):
        raise ValueError(f"{len(proba)} prediction rows for {len(path.k)} ticks of {path.symbol}")
    terms = path.terms(config)
    sides = signal_sides(proba, config.min_confidence)
    hold_ticks, hold_seconds = path.hold_limits(config)
    signal, fill, exit_, reason, unfinished = _simulate(
        path.k,
        path.epochs,
        sides,
        path.tp,
        path.sl,
        terms.stop_out_move,
        config.latency_ticks,
        hold_ticks,
        hold_seconds,
        config.max_positions,
        terms.max_per_minute,
        terms.max_per_hour,
    )
    trades = trade_frame(path, config, signal, fill, exit_, reason, sides[signal])
    return BacktestResult(trades, int(unfinished), int((sides != 0).sum()))
