"""One broker interface: the engine decides, a broker fills.

The engine (`backtest.incremental.IncrementalEngine`) turns a tick's probabilities into an `Order` at
its signal tick and closes the position at its own exit tick. A broker executes the order and reports
the closed position as a `Fill`:

- `PaperBroker`: the engine's own trade is the fill (the backtest's rules and costs, tick for tick).
- `deriv_broker.DerivBroker`: a contract on a Deriv **virtual** account (Multipliers with their
  take-profit and stop-loss amounts, or Rise/Fall on ticks); the venue's entry spot, exit spot and
  profit are the fill, which the parity asset compares with the paper fill of the same order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Side = Literal[1, -1]
# Why a position closed: the engine's reasons (`backtest.engine.REASONS`), and `sold` for a contract
# the venue reports sold without naming a barrier.
Reason = Literal["tp", "sl", "timeout", "stop_out", "sold"]


class Order(BaseModel):
    """An entry the engine decided at its signal tick. `id` is deterministic (symbol and signal
    epoch): an order journaled before a crash is recognised, not placed twice, after a restart."""

    model_config = ConfigDict(frozen=True)

    id: str
    symbol: str
    side: Side
    signal_epoch: int
    instrument: str  # the execution config's: multiplier, rise_fall (a venue's), cfd, spread (paper only)
    stake: float
    currency: str = "USD"
    multiplier: int | None = None
    # Multiplier limit orders, money amounts in the account currency (Deriv's `limit_order`); None
    # where the engine's barrier is not a positive amount (a take-profit inside the commission).
    take_profit: float | None = None
    stop_loss: float | None = None
    duration_ticks: int | None = None  # rise_fall: the contract's length in ticks

    @staticmethod
    def id_of(symbol: str, signal_epoch: int) -> str:
        return f"{symbol}-{signal_epoch}"


class Fill(BaseModel):
    """A closed position as its broker reports it (account currency)."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    broker: str
    contract_id: str
    symbol: str
    side: Side
    entry_epoch: int
    entry_spot: float
    exit_epoch: int
    exit_spot: float
    reason: Reason
    buy_price: float  # what was paid: the stake (multiplier, rise_fall)
    sell_price: float  # what came back: the bid at the close, the payout, or 0
    commission: float
    pnl: float  # sell_price - buy_price (paper: the engine's net P&L)


class BrokerError(RuntimeError):
    """An order the broker could not place or follow; the message names the order and the call."""


class Broker(ABC):
    """Places the engine's orders and reports their fills."""

    name: str

    @abstractmethod
    async def open(self, order: Order) -> str:
        """Place `order`; returns the broker's id of the position (a Deriv contract id)."""

    @abstractmethod
    async def close(self, order: Order, trade: Mapping[str, Any]) -> None:
        """The engine closed `order`'s position: `trade` is its row of `backtest.engine.trade_frame`
        (epochs, prices, `reason`, `pnl_net` ...). A venue's broker sells at the market unless the venue
        closes the contract on its own (its limit orders at a tp, sl or stop-out; a Rise/Fall expiry)."""

    @abstractmethod
    async def resume(self, order_id: str, contract_id: str) -> None:
        """Follow a position opened before a restart again (its fill still to come)."""

    @abstractmethod
    def fills(self) -> list[Fill]:
        """Positions closed since the last call, each reported once."""


class PaperBroker(Broker):
    """Fills by the engine: an order is filled at the engine's fill tick and closed with its trade,
    at the trade's prices and net P&L (the backtest's costs)."""

    name = "paper"

    def __init__(self) -> None:
        self._fills: list[Fill] = []

    async def open(self, order: Order) -> str:
        return order.id

    async def close(self, order: Order, trade: Mapping[str, Any]) -> None:
        pnl = float(trade["pnl_net"])
        self._fills.append(
            Fill(
                order_id=order.id,
                broker=self.name,
                contract_id=order.id,
                symbol=order.symbol,
                side=order.side,
                entry_epoch=int(trade["entry_epoch"]),
                entry_spot=float(trade["entry_price"]),
                exit_epoch=int(trade["exit_epoch"]),
                exit_spot=float(trade["exit_price"]),
                reason=str(trade["reason"]),
                buy_price=order.stake,
                sell_price=order.stake + pnl,
                commission=float(trade["commission"]),
                pnl=pnl,
            )
        )

    async def resume(self, order_id: str, contract_id: str) -> None:
        """Nothing to follow: the restored engine state holds the open positions."""

    def fills(self) -> list[Fill]:
        out, self._fills = self._fills, []
        return out
