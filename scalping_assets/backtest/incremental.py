"""The backtest's execution rules one tick at a time: the live twin of `engine.run_backtest`.

`IncrementalEngine.on_tick(epoch, quote, proba)` takes one symbol's ticks in order, each with the
probabilities predicted at it (None: no prediction), and answers what happened at that tick: the
orders its signal places, the entries filled, the positions closed (as `engine.trade_frame` rows).
Fed a series tick by tick it makes exactly the trades `run_backtest` makes on the whole series, bit
for bit (`test_incremental_engine.py` holds the two equal over every instrument, unit and limit):

- the same signal rule (`signal_sides`: argmax with ties to the first class, NaN rows never trade);
- a signal at tick i fills at tick i + `latency_ticks` if a slot is free there (positions that exit
  at that tick free theirs first) and the minute and hour caps allow it, counted at the fill epoch;
- barriers from the entry tick: pips, sigma (the RMS pip move of the 100 ticks up to it, as
  `labels.entry_sigma_pips`), money (Deriv's limit orders, as `TickPath.build`), none for Rise/Fall;
- exits at the first tick where the quote reaches the take-profit, the stop-loss or the venue's
  stop-out, or the timeout, with the same float arithmetic as the compiled loop (`engine._exit_of`);
- what a trade pays from `engine.trade_columns`, the function the batch engine uses.

A signal is also an `Order` for a venue's broker when a slot is sure to be free at its fill tick (a
position's timeout is known in advance, a barrier is not): what a live trader can place before the
fill tick comes. A signal the batch rules fill only because a barrier closed a position exactly at
the fill tick is filled on paper and reported `late` (a venue order placed then would enter a tick
later).

The engine's whole state is `EngineState` (pydantic): the paper trader journals it with every tick's
events, so a restarted process continues exactly where the journal ends.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..features.labels import DOWN, SIGMA_WINDOW, UP
from ..market.symbols import SymbolCosts
from ..trading.broker import Order
from .engine import (
    HOUR,
    MINUTE,
    REACH,
    REASONS,
    STOP_LOSS,
    STOP_OUT,
    TAKE_PROFIT,
    TIMEOUT,
    ExecutionConfig,
    money_barriers,
    trade_columns,
)
from .instruments import instrument_terms


def signal_side(proba: np.ndarray | None, min_confidence: float) -> int:
    """`engine.signal_sides` of one row: +1, -1 or 0."""
    if proba is None:
        return 0
    p = [float(x) for x in proba]
    if math.isnan(p[0]) or math.isnan(p[1]) or math.isnan(p[2]):
        return 0
    best = 0
    if p[1] > p[best]:
        best = 1
    if p[2] > p[best]:
        best = 2
    if p[best] < min_confidence:
        return 0
    return 1 if best == UP else -1 if best == DOWN else 0


class Position(BaseModel):
    # A Rise/Fall position's barriers are infinite, a sigma before its window NaN: kept as such in JSON.
    model_config = ConfigDict(ser_json_inf_nan="constants")

    order_id: str
    side: int
    signal_tick: int
    signal_epoch: int
    fill_tick: int
    fill_epoch: int
    entry_quote: float
    k_entry: float
    sigma_entry: float
    tp: float  # barrier distances in pips from the entry, as TickPath.tp / sl at the fill tick
    sl: float
    take: float  # what the exit test compares: tp x REACH, and the nearer of stop-loss and stop-out x REACH
    stop: float
    why_stop: int


class Pending(BaseModel):
    tick: int  # the signal tick
    epoch: int
    side: int
    order_id: str
    placed: bool  # a slot was free at the signal tick: the order went to the venue's brokers


class EngineState(BaseModel):
    """Everything the engine remembers, in a form a journal stores."""

    ticks: int = 0  # ticks seen: the next tick's index
    last_epoch: int | None = None
    last_k: int = 0
    d2: list[int] = []  # squared pip moves of the last SIGMA_WINDOW ticks (the sigma barrier's window)
    pending: list[Pending] = []
    positions: list[Position] = []
    entries: list[int] = []  # fill epochs of the last hour (the minute and hour caps count them)
    signals: int = 0


@dataclass
class Step:
    """What one tick did."""

    tick: int
    epoch: int
    side: int = 0  # this tick's signal
    orders: list[Order] = field(default_factory=list)  # placed at this tick (a venue's broker sends them)
    entries: list[Position] = field(default_factory=list)  # filled at this tick
    late: list[str] = field(default_factory=list)  # order ids filled without having been placed
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (order id, why) not filled at their fill tick
    trades: list[dict] = field(default_factory=list)  # closed at this tick: trade_frame rows (plus order_id)


class IncrementalEngine:
    """One symbol's execution, one tick at a time (see the module's docstring)."""

    def __init__(
        self,
        symbol: str,
        pip: float,
        config: ExecutionConfig,
        costs: SymbolCosts | None = None,
        state: EngineState | None = None,
    ):
        self.symbol, self.pip, self.config = symbol, pip, config
        self.terms = instrument_terms(symbol, config, costs, pip)
        money = config.unit == "money" and config.instrument == "multiplier"
        self._money = money_barriers(symbol, config, self.terms) if money else None  # per pip of the entry
        self.max_hold_ticks = config.max_hold_ticks if config.max_hold_seconds is None else math.inf
        self.max_hold_seconds = math.inf if config.max_hold_seconds is None else float(config.max_hold_seconds)
        self.stop_out = self.terms.stop_out_move
        self.state = state or EngineState()
        s = self.state
        self._d2 = deque(s.d2, maxlen=SIGMA_WINDOW)
        self._d2_total = sum(self._d2)
        self._pending = deque(s.pending)
        self._positions = list(s.positions)
        self._entries = deque(s.entries)

    def snapshot(self) -> EngineState:
        return self.state.model_copy(
            update={
                "d2": list(self._d2),
                "pending": list(self._pending),
                "positions": list(self._positions),
                "entries": list(self._entries),
            },
            deep=True,
        )

    @property
    def open_positions(self) -> list[Position]:
        return list(self._positions)

    # -- one tick ----------------------------------------------------------------------------------

    def on_tick(self, epoch: int, quote: float, proba: np.ndarray | None = None) -> Step:
        s = self.state
        if s.last_epoch is not None and epoch <= s.last_epoch:
            raise ValueError(f"{self.symbol}: epochs must increase strictly: {epoch} after {s.last_epoch}")
        j = s.ticks
        k = round(quote / self.pip)  # np.rint's rounding (half to even), as engine.pips
        kf = float(k)
        self._push_move(0 if j == 0 else k - s.last_k, j)
        step = Step(j, epoch)
        for position in list(self._positions):
            why = self._exit(position, j, kf, epoch)
            if why is not None:
                self._positions.remove(position)
                step.trades.append(self._trade(position, j, epoch, quote, kf, why))
        step.side = signal_side(proba, self.config.min_confidence)
        if step.side != 0:
            s.signals += 1
            # A slot sure to be free at the fill, so that a venue's order is one the engine fills: the
            # positions whose timeout has not come by the fill tick (a barrier may close them sooner,
            # unknowably) and every signal still to fill before it (a late one may take a freed slot).
            fill = j + self.config.latency_ticks
            held = sum(p.fill_tick + self.max_hold_ticks > fill for p in self._positions)
            placed = held + len(self._pending) < self.config.max_positions
            order_id = Order.id_of(self.symbol, epoch)
            self._pending.append(Pending(tick=j, epoch=epoch, side=step.side, order_id=order_id, placed=placed))
            if placed:
                step.orders.append(self.order(order_id, epoch, step.side))
        if self._pending and self._pending[0].tick + self.config.latency_ticks == j:
            self._fill(self._pending.popleft(), j, epoch, quote, kf, step)
        s.ticks, s.last_epoch, s.last_k = j + 1, epoch, k
        return step

    def _push_move(self, d: int, j: int) -> None:
        if j == 0:
            return  # the first tick has no move (entry_sigma_pips: d[0] = 0, counted from index 1)
        if len(self._d2) == SIGMA_WINDOW:
            self._d2_total -= self._d2[0]
        self._d2.append(d * d)
        self._d2_total += d * d

    def _sigma(self) -> float:
        return math.sqrt(self._d2_total / SIGMA_WINDOW) if len(self._d2) == SIGMA_WINDOW else math.nan

    def _barriers(self, kf: float, sigma: float) -> tuple[float, float]:
        """(take-profit, stop-loss) distances in pips of an entry at this tick, as TickPath.build."""
        c = self.config
        if c.instrument == "rise_fall":
            return math.inf, math.inf
        if self._money is not None:
            return self._money[0] * kf, self._money[1] * kf
        if c.unit == "pips":
            return c.take_profit, c.stop_loss
        scale = math.nan if sigma == 0 else sigma
        return c.take_profit * scale, c.stop_loss * scale

    def order(self, order_id: str, epoch: int, side: int) -> Order:
        """The order of a signal at `epoch`: what a broker places (limit amounts with unit money)."""
        c = self.config
        limits = c.instrument == "multiplier" and c.unit == "money"
        return Order(
            id=order_id,
            symbol=self.symbol,
            side=side,
            signal_epoch=epoch,
            instrument=c.instrument,
            stake=c.stake,
            multiplier=self.terms.multiplier if c.instrument == "multiplier" else None,
            take_profit=c.take_profit if limits else None,
            stop_loss=c.stop_loss if limits else None,
            duration_ticks=c.max_hold_ticks if c.instrument == "rise_fall" else None,
        )

    def _fill(self, pending: Pending, j: int, epoch: int, quote: float, kf: float, step: Step) -> None:
        c, terms = self.config, self.terms
        if len(self._positions) >= c.max_positions:
            step.rejected.append((pending.order_id, "no free position slot"))
            return
        sigma = self._sigma()
        tp, sl = self._barriers(kf, sigma)
        if math.isnan(tp) or math.isnan(sl):
            step.rejected.append((pending.order_id, "barrier unknown at the fill tick (sigma warm-up or a flat window)"))
            return
        while self._entries and self._entries[0] <= epoch - HOUR:
            self._entries.popleft()
        if 0 < terms.max_per_hour <= len(self._entries):
            step.rejected.append((pending.order_id, f"hourly cap of {terms.max_per_hour} entries"))
            return
        if 0 < terms.max_per_minute <= sum(e > epoch - MINUTE for e in self._entries):
            step.rejected.append((pending.order_id, f"minute cap of {terms.max_per_minute} entries"))
            return
        self._entries.append(epoch)
        out = self.stop_out * kf
        stop, why_stop = (sl, STOP_LOSS) if sl <= out else (out, STOP_OUT)
        position = Position(
            order_id=pending.order_id,
            side=pending.side,
            signal_tick=pending.tick,
            signal_epoch=pending.epoch,
            fill_tick=j,
            fill_epoch=epoch,
            entry_quote=quote,
            k_entry=kf,
            sigma_entry=sigma,
            tp=tp,
            sl=sl,
            take=tp * REACH,
            stop=stop * REACH,
            why_stop=why_stop,
        )
        self._positions.append(position)
        step.entries.append(position)
        if not pending.placed:
            step.late.append(pending.order_id)

    def _exit(self, p: Position, j: int, kf: float, epoch: int) -> int | None:
        move = p.side * (kf - p.k_entry)
        if move >= p.take:
            return TAKE_PROFIT
        if move <= -p.stop:
            return p.why_stop
        if j - p.fill_tick >= self.max_hold_ticks or epoch - p.fill_epoch >= self.max_hold_seconds:
            return TIMEOUT
        return None

    def _trade(self, p: Position, j: int, epoch: int, quote: float, kf: float, why: int) -> dict:
        def one(x: float) -> np.ndarray:
            return np.array([x], np.float64)

        columns = trade_columns(
            self.terms,
            self.pip,
            np.array([p.side], np.int8),
            entry_quote=one(p.entry_quote),
            exit_quote=one(quote),
            k_entry=one(p.k_entry),
            k_exit=one(kf),
            sigma_entry=one(p.sigma_entry),
            tp_entry=one(p.tp),
            sl_entry=one(p.sl),
        )
        row = {
            "order_id": p.order_id,
            "symbol": self.symbol,
            "signal_epoch": p.signal_epoch,
            "entry_epoch": p.fill_epoch,
            "exit_epoch": epoch,
            "entry_tick": p.fill_tick,
            "exit_tick": j,
            "side": p.side,
            "entry_price": float(columns.pop("entry_price")[0]),
            "exit_price": float(columns.pop("exit_price")[0]),
            "reason": REASONS[why],
        }
        row |= {name: float(values[0]) for name, values in columns.items()}
        row |= {"hold_ticks": j - p.fill_tick, "hold_seconds": epoch - p.fill_epoch}
        return row
