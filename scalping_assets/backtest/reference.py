"""A deliberately naive per-tick backtest loop: the reference the compiled engine must equal trade for trade.

It walks every tick in plain Python: first it closes the open positions the tick's quote takes out,
then it fills the signal of `latency_ticks` ago if a slot is free and the hourly limit allows. It
shares nothing with the engine but the inputs (tick path, sides, configuration) and writes every
price and P&L out by hand.
"""

from __future__ import annotations

import math

import pandas as pd

from .engine import HOUR, ExecutionConfig, TickPath


def reference_backtest(path: TickPath, sides, config: ExecutionConfig) -> tuple[pd.DataFrame, int]:
    k, epochs = path.k.tolist(), path.epochs.tolist()
    sides = list(sides)
    open_positions: list[dict] = []
    entry_epochs: list[int] = []
    rows = []
    for j in range(len(k)):
        for position in list(open_positions):
            f = position["fill"]
            move = position["side"] * (k[j] - k[f])
            held_out = (
                j - f >= config.max_hold_ticks
                if config.max_hold_seconds is None
                else epochs[j] - epochs[f] >= config.max_hold_seconds
            )
            reason = "tp" if move >= position["tp"] else "sl" if move <= -position["sl"] else "timeout" if held_out else None
            if reason:
                open_positions.remove(position)
                rows.append(_trade(path, config, position, j, reason))
        i = j - config.latency_ticks
        if i < 0 or sides[i] == 0 or len(open_positions) >= config.max_positions:
            continue
        if not (math.isfinite(path.tp[j]) and math.isfinite(path.sl[j])):
            continue
        if config.max_trades_per_hour and sum(e > epochs[j] - HOUR for e in entry_epochs) >= config.max_trades_per_hour:
            continue
        entry_epochs.append(epochs[j])
        open_positions.append({"signal": i, "fill": j, "side": sides[i], "tp": path.tp[j], "sl": path.sl[j]})
    return pd.DataFrame(rows), len(open_positions)


def _trade(path: TickPath, config: ExecutionConfig, position: dict, j: int, reason: str) -> dict:
    f, side, pip = position["fill"], position["side"], path.pip
    sigma = path.sigma[f] if math.isfinite(path.sigma[f]) else 0.0
    slip = (config.slippage_pips + config.slippage_sigma * sigma) * pip
    half = config.spread_pips / 2 * pip
    entry_quote, exit_quote = float(path.quotes[f]), float(path.quotes[j])
    entry_price = entry_quote + side * (half + slip)
    exit_price = exit_quote - side * (half + slip)
    gross = config.stake * side * (exit_quote / entry_quote - 1)
    net = config.stake * side * (exit_price / entry_price - 1) - config.commission
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
