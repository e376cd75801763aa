"""A deliberately naive per-tick backtest loop: the reference the compiled engine must equal trade for trade.

It walks every tick in plain Python: first it closes the open positions the tick's quote takes out,
then it fills the signal of `latency_ticks` ago if a slot is free and the minute's and the hour's
entry caps allow. It shares nothing with the engine but the inputs (tick path, sides, configuration
and the instrument's terms as resolved from the catalog) and writes every exit rule, price and P&L
out by hand, per instrument: a multiplier's profit in money against its limit orders and its
stop-out, a Rise/Fall contract's outcome after its ticks, a CFD's or the legacy model's spread.
"""

from __future__ import annotations

import math

import pandas as pd

from .engine import HOUR, MINUTE, REACH, ExecutionConfig, TickPath


def reference_backtest(path: TickPath, sides, config: ExecutionConfig) -> tuple[pd.DataFrame, int]:
    terms = path.terms(config)
    k, epochs, quotes = path.k.tolist(), path.epochs.tolist(), path.quotes.tolist()
    sides = list(sides)
    open_positions: list[dict] = []
    entry_epochs: list[int] = []
    rows = []
    for j in range(len(k)):
        for position in list(open_positions):
            reason = _exit_reason(path, config, terms, position, j, k, epochs, quotes)
            if reason:
                open_positions.remove(position)
                rows.append(_trade(path, terms, position, j, reason))
        i = j - config.latency_ticks
        if i < 0 or sides[i] == 0 or len(open_positions) >= config.max_positions:
            continue
        if math.isnan(path.tp[j]) or math.isnan(path.sl[j]):
            continue
        if terms.max_per_hour and sum(e > epochs[j] - HOUR for e in entry_epochs) >= terms.max_per_hour:
            continue
        if terms.max_per_minute and sum(e > epochs[j] - MINUTE for e in entry_epochs) >= terms.max_per_minute:
            continue
        entry_epochs.append(epochs[j])
        open_positions.append({"signal": i, "fill": j, "side": sides[i], "tp": path.tp[j], "sl": path.sl[j]})
    return pd.DataFrame(rows), len(open_positions)


def _exit_reason(path, config, terms, position, j, k, epochs, quotes) -> str | None:
    f, side = position["fill"], position["side"]
    held_out = (
        j - f >= config.max_hold_ticks if config.max_hold_seconds is None else epochs[j] - epochs[f] >= config.max_hold_seconds
    )
    if terms.instrument == "rise_fall":
        return "timeout" if held_out else None  # the contract's duration: nothing else ends it
    move = side * (k[j] - k[f])
    take, stop = move >= position["tp"] * REACH, move <= -position["sl"] * REACH  # a barrier in pips
    if terms.instrument != "multiplier":
        return "tp" if take else "sl" if stop else "timeout" if held_out else None
    # A multiplier, in money: the profit is `gain - commission`, against the limit orders and the
    # stake (each reached within a billionth of its size, as the engine's barriers).
    gain = terms.stake * terms.multiplier * side * (quotes[j] - quotes[f]) / quotes[f]
    fee = terms.commission
    if config.unit == "money":
        take, stop = gain >= (config.take_profit + fee) * REACH, -gain >= (config.stop_loss - fee) * REACH
        stop_loss_amount = config.stop_loss
    else:
        stop_loss_amount = terms.stake * terms.multiplier * position["sl"] * path.pip / quotes[f] + fee
    stopped_out = -gain >= (terms.stop_out_loss - fee) * REACH
    if take:
        return "tp"
    if stop and stopped_out:  # both at one tick: the order that was nearer the entry
        return "sl" if stop_loss_amount <= terms.stop_out_loss else "stop_out"
    return "sl" if stop else "stop_out" if stopped_out else "timeout" if held_out else None


def _trade(path: TickPath, terms, position: dict, j: int, reason: str) -> dict:
    f, side, pip = position["fill"], position["side"], path.pip
    entry_quote, exit_quote = float(path.quotes[f]), float(path.quotes[j])
    if terms.instrument == "multiplier":
        entry_price, exit_price = entry_quote, exit_quote
        gross = terms.stake * terms.multiplier * side * (exit_quote - entry_quote) / entry_quote
        net = max(gross - terms.commission, -terms.stake)
    elif terms.instrument == "rise_fall":
        entry_price, exit_price = entry_quote, exit_quote
        won, tie = side * (exit_quote - entry_quote) > 0, exit_quote == entry_quote
        gross = terms.stake if won else 0.0 if tie else -terms.stake
        net = terms.stake * (terms.payout_ratio - 1) if won else -terms.stake
    else:  # spread, cfd
        sigma = path.sigma[f] if math.isfinite(path.sigma[f]) else 0.0
        slip = (terms.slippage_pips + terms.slippage_sigma * sigma) * pip
        half = terms.spread_pips / 2 * pip
        entry_price = entry_quote + side * (half + slip)
        exit_price = exit_quote - side * (half + slip)
        gross = terms.stake * side * (exit_quote / entry_quote - 1)
        net = terms.stake * side * (exit_price / entry_price - 1) - terms.commission
    return {
        "symbol": path.symbol,
        "signal_epoch": int(path.epochs[position["signal"]]),
        "entry_epoch": int(path.epochs[f]),
        "exit_epoch": int(path.epochs[j]),
        "entry_tick": f,
        "exit_tick": j,
        "side": side,
        "entry_price": entry_price,
        "exit_price": exit_price,
        "reason": reason,
        "pips_gross": side * (path.k[j] - path.k[f]),
        "pnl_gross": gross,
        "pnl_net": net,
        "hold_ticks": j - f,
        "hold_seconds": int(path.epochs[j] - path.epochs[f]),
    }
