"""`DerivBroker`: the engine's orders as contracts on a Deriv account, virtual unless told otherwise.

- `connect()` authorizes with the token in an environment variable (`DERIV_TOKEN` by default: never
  in a file, never logged); a real-money account is refused (`RealAccountRefused`) unless the broker
  was built with `allow_real=True`.
- `open(order)`: a `multiplier` order is a MULTUP (side 1) or MULTDOWN (side -1) contract, basis
  stake, with its multiplier and its take-profit and stop-loss amounts as limit orders (in cents, as
  the account's currency counts); a `rise_fall` order is a CALL or PUT for `duration_ticks` ticks.
  It is bought in one call (`buy: "1"` with the parameters) rather than a proposal and then a buy:
  one round trip between the signal and the purchase instead of two (the entry spot is the first
  tick after the purchase), one call against the venue's limits, and with basis stake the price is
  the stake, so `price` caps it exactly. The contract is then followed (`proposal_open_contract`,
  subscribed) until it is sold.
- `close(order, trade)`: the venue closes a Rise/Fall contract at its expiry, and a multiplier at its
  take-profit, stop-loss or stop-out when both limit orders were placed; then nothing is sent and the
  fill comes with the settlement. Otherwise (the engine's timeout, a limit the order lacked) the
  contract is sold at the market.
- `fills()`: the contracts sold since the last call, each once, with the venue's entry and exit ticks
  and prices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..market.deriv_client import ConnectionLost, DerivAPIError, DerivClient
from ..market.deriv_schema import SchemaViolation
from .broker import Broker, BrokerError, Fill, Order, Reason

log = logging.getLogger(__name__)

# The contract type of each instrument's side, and the side of each contract type.
CONTRACT_TYPES = {"multiplier": {1: "MULTUP", -1: "MULTDOWN"}, "rise_fall": {1: "CALL", -1: "PUT"}}
SIDES = {kind: side for kinds in CONTRACT_TYPES.values() for side, kind in kinds.items()}
# Why the venue closed a contract by itself: the `name` of the exit tick in proposal_open_contract's
# `audit_details.contract_end`, as the local server (testing.fake_deriv) writes it. Deriv's references
# do not say how the live API tells a limit order's close from a sale; without one of these names a
# fill's reason is `timeout` (an expiry, or a sale after the engine's timeout) or `sold`.
CLOSED_BY: dict[str, Reason] = {"Take profit": "tp", "Stop loss": "sl", "Stop out": "stop_out"}
LIMIT_ORDERS = ("take_profit", "stop_loss")
CENTS = 2  # limit amounts are money in the account currency: Deriv refuses more decimals


class RealAccountRefused(BrokerError):
    """The token authorizes a real-money account, and the broker was not built with `allow_real=True`."""


@dataclass
class _Followed:
    order_id: str
    # Sold by close() at the engine's exit: the engine's reason (timeout, or a barrier the venue did
    # not hold as a limit order), which the sale carried out.
    sold_for: str | None = None


class DerivBroker(Broker):
    """Orders as Deriv contracts through a `DerivClient` connection (see the module's docstring)."""

    name = "deriv"

    def __init__(self, client: DerivClient, *, token_env: str = "DERIV_TOKEN", allow_real: bool = False):
        self.client, self.token_env, self.allow_real = client, token_env, allow_real
        self.loginid: str | None = None  # the authorized account, once connected
        self.currency: str | None = None
        self._owns_client = False
        self._contracts: dict[str, int] = {}  # order id -> contract id
        self._followed: dict[int, _Followed] = {}  # contract id -> what its fill needs
        self._reported: set[int] = set()  # contracts whose fill was made
        self._fills: list[Fill] = []

    @classmethod
    def from_env(cls, url: str, *, token_env: str = "DERIV_TOKEN", allow_real: bool = False) -> DerivBroker:
        """A broker on a connection of its own to `url`, opened by `connect()` and closed by `disconnect()`."""
        broker = cls(DerivClient(url), token_env=token_env, allow_real=allow_real)
        broker._owns_client = True
        return broker

    async def connect(self) -> None:
        """Authorize the connection with the token in `token_env`; refuse a real-money account unless allowed."""
        token = os.environ.get(self.token_env)
        if not token:
            raise BrokerError(f"DerivBroker.connect: the environment variable {self.token_env} holds no Deriv API token")
        if self._owns_client:
            await self.client.__aenter__()
        try:
            account = await self._authorize(token)
        except BaseException:
            await self.disconnect()
            raise
        self.loginid, self.currency = account["loginid"], account["currency"]
        kind = "virtual" if account["is_virtual"] else "REAL-MONEY"
        log.info("deriv: authorized %s (%s account, %s %.2f)", self.loginid, kind, self.currency, account["balance"])

    async def _authorize(self, token: str) -> dict:
        try:
            account = (await self.client.request({"authorize": token}))["authorize"]
        except SchemaViolation:  # its message quotes the token: not to be chained, shown or logged
            raise BrokerError(
                f"DerivBroker.connect: the value of {self.token_env} is not a Deriv API token (1 to 128 letters, digits, _ or -)"
            ) from None
        if not account["is_virtual"] and not self.allow_real:
            raise RealAccountRefused(
                f"DerivBroker.connect: the token in {self.token_env} authorizes {account['loginid']}, a real-money "
                "account; build the broker with allow_real=True to trade it"
            )
        return account

    async def disconnect(self) -> None:
        """Close the connection if the broker opened it (`from_env`)."""
        if self._owns_client:
            await self.client.close()

    # -- the Broker interface -------------------------------------------------------------------

    async def open(self, order: Order) -> str:
        request = {"buy": "1", "price": order.stake, "parameters": self._parameters(order)}
        try:
            contract_id = (await self.client.request(request))["buy"]["contract_id"]
        except DerivAPIError as exc:
            raise BrokerError(f"DerivBroker.open {order.id}: the buy was refused: {exc}") from exc
        except (ConnectionLost, TimeoutError) as exc:
            raise BrokerError(
                f"DerivBroker.open {order.id}: no answer to the buy ({exc}); a contract may have been bought: check the portfolio"
            ) from exc
        try:
            await self._follow(order.id, contract_id)
        except (DerivAPIError, ConnectionLost, TimeoutError) as exc:
            # The contract is bought: its id must reach the journal, whose open orders a restart resumes.
            log.warning("deriv: order %s bought contract %s but cannot follow it (%s)", order.id, contract_id, exc)
        return str(contract_id)

    async def close(self, order: Order, trade: Mapping[str, Any]) -> None:
        contract_id = self._contracts.get(order.id)
        if contract_id is None:
            raise BrokerError(f"DerivBroker.close {order.id}: no contract was opened or resumed for this order")
        if contract_id in self._reported:
            return
        reason = trade["reason"]
        if order.instrument == "rise_fall" or (reason in ("tp", "sl", "stop_out") and len(self._limits(order)) == 2):
            return  # the venue closes it: the settlement brings the fill
        self._followed[contract_id].sold_for = reason
        try:
            await self.client.request({"sell": contract_id, "price": 0})
        except DerivAPIError as exc:
            if not await self._is_sold(contract_id):
                raise BrokerError(f"DerivBroker.close {order.id}: the sell of contract {contract_id} failed: {exc}") from exc

    async def resume(self, order_id: str, contract_id: str) -> None:
        """Follow a contract bought before a restart; one sold meanwhile yields its fill at once."""
        try:
            await self._follow(order_id, int(contract_id))
        except DerivAPIError as exc:
            raise BrokerError(f"DerivBroker.resume {order_id}: contract {contract_id} cannot be followed: {exc}") from exc

    def fills(self) -> list[Fill]:
        out, self._fills = self._fills, []
        return out

    # -- the account ----------------------------------------------------------------------------

    async def balance(self) -> float:
        return float((await self.client.request({"balance": 1}))["balance"]["balance"])

    async def open_contracts(self) -> list[str]:
        """The ids of the account's open contracts (`portfolio`)."""
        reply = await self.client.request({"portfolio": 1})
        return [str(c["contract_id"]) for c in reply["portfolio"]["contracts"]]

    # -- contracts ------------------------------------------------------------------------------

    @staticmethod
    def _limits(order: Order) -> dict[str, float]:
        """The order's limit orders as placed: amounts in cents; one that rounds to nothing is not placed."""
        amounts = {field: getattr(order, field) for field in LIMIT_ORDERS}
        return {field: round(v, CENTS) for field, v in amounts.items() if v is not None and round(v, CENTS) > 0}

    def _parameters(self, order: Order) -> dict:
        kinds = CONTRACT_TYPES.get(order.instrument)
        if kinds is None:
            raise BrokerError(
                f"DerivBroker.open {order.id}: instrument {order.instrument!r} is not traded through Deriv's API "
                f"({', '.join(CONTRACT_TYPES)})"
            )
        common = {"amount": order.stake, "basis": "stake", "contract_type": kinds[order.side]}
        common |= {"currency": order.currency, "symbol": order.symbol}
        if order.instrument == "multiplier":
            if order.multiplier is None:
                raise BrokerError(f"DerivBroker.open {order.id}: a multiplier order needs its multiplier")
            limits = self._limits(order)
            return {**common, "multiplier": order.multiplier, **({"limit_order": limits} if limits else {})}
        if order.duration_ticks is None:
            raise BrokerError(f"DerivBroker.open {order.id}: a rise_fall order needs its duration_ticks")
        return {**common, "duration": order.duration_ticks, "duration_unit": "t"}

    async def _follow(self, order_id: str, contract_id: int) -> None:
        self._contracts[order_id] = contract_id
        self._followed.setdefault(contract_id, _Followed(order_id))
        request = {"proposal_open_contract": 1, "contract_id": contract_id, "subscribe": 1}
        await self.client.request(request, on_message=self._on_contract)

    async def _is_sold(self, contract_id: int) -> bool:
        reply = await self.client.request({"proposal_open_contract": 1, "contract_id": contract_id})
        return bool(reply["proposal_open_contract"].get("is_sold"))

    def _on_contract(self, message: dict) -> None:
        """A message of a followed contract's stream: its fill once it is sold."""
        contract = message.get("proposal_open_contract") or {}
        if not contract.get("is_sold"):
            return
        self.client.end_stream(message["req_id"])
        contract_id = contract["contract_id"]
        followed = self._followed.get(contract_id)
        if followed is None or contract_id in self._reported:
            return
        try:
            fill = self._fill(followed, contract)
        except (KeyError, TypeError, ValueError) as exc:  # the client's reader calls this: it must not raise
            log.error(
                "deriv: contract %s of order %s is sold but its fill cannot be read: %s", contract_id, followed.order_id, exc
            )
            return
        self._reported.add(contract_id)
        self._fills.append(fill)

    def _fill(self, followed: _Followed, contract: dict) -> Fill:
        ends = (contract.get("audit_details") or {}).get("contract_end") or []
        reason = next((CLOSED_BY[e["name"]] for e in ends if e.get("name") in CLOSED_BY), None)
        if reason is None:
            reason = followed.sold_for or ("timeout" if contract.get("is_expired") else "sold")
        buy_price, sell_price = float(contract["buy_price"]), float(contract["sell_price"])
        return Fill(
            order_id=followed.order_id,
            broker=self.name,
            contract_id=str(contract["contract_id"]),
            symbol=contract["underlying"],
            side=SIDES[contract["contract_type"]],
            entry_epoch=int(contract["entry_tick_time"]),
            entry_spot=float(contract["entry_spot"]),
            exit_epoch=int(contract["exit_tick_time"]),
            exit_spot=float(contract["exit_tick"]),
            reason=reason,
            buy_price=buy_price,
            sell_price=sell_price,
            # A Rise/Fall contract states no commission: the house's margin is in its payout.
            commission=float(contract.get("commission") or 0.0),
            pnl=sell_price - buy_price,
        )
