"""The local Deriv server's trading desk: accounts, and contracts settled on the server's own ticks.

`fake_deriv` answers the trading calls with a `ContractBook`. It prices a contract from the symbol
catalog (`backtest.instruments.instrument_terms`: a multiplier's commission and the venue's stop-out,
a Rise/Fall payout ratio) and follows each one bought through the feed's ticks by Deriv's rules (the
project's reference notes on costs, deriv-costs.md):

- Multipliers (MULTUP long, MULTDOWN short; basis stake): the entry spot is the first tick after the
  purchase second. At each later tick the profit is `stake x multiplier x side x (quote - entry) /
  entry - commission`; the contract closes at the first tick where it reaches the take-profit amount
  (`tp`), falls to minus the stop-loss amount (`sl`), or loses the catalog's stop-out share of the
  stake (`stop_out`; the nearer of stop-loss and stop-out names the close, as in the backtest).
  `sell` closes it at the latest tick; its value is `bid_price = max(0, stake + profit)`.
- Rise/Fall on ticks (CALL, PUT): settles at the duration-th tick after the entry tick, paying the
  proposal's payout iff `side x (exit - entry) > 0` (an equal quote loses); it cannot be sold.

Money is in cents, as Deriv's USD: a stake or a limit amount with more decimals is refused; prices,
profits and balances are rounded to cents, the limits checked on the exact profit. Settlement is lazy
and deterministic: `advance(now)` walks every open contract through the ticks up to `now` in tick
order, whenever a call or a stream step asks. Why a contract closed is the `name` of its exit tick in
`proposal_open_contract.audit_details.contract_end` (`EXIT_NAMES`, read back by the Deriv broker).
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..backtest.engine import ExecutionConfig
from ..backtest.instruments import UnknownCostError, instrument_terms
from ..market.symbols import get_symbol
from ..trading.deriv_broker import CLOSED_BY, CONTRACT_TYPES, SIDES

Ticks = Callable[[str, float, float], tuple[np.ndarray, np.ndarray]]  # (symbol, lo, hi) -> epochs, quotes
MULTIPLIERS = tuple(CONTRACT_TYPES["multiplier"].values())
# The tick durations DTrader offers for Rise/Fall (the live range per symbol is contracts_for's
# min/max_contract_duration, not in the catalog).
RISE_FALL_TICKS = (1, 10)
CENTS = 2  # USD's fractional digits (website_status.currencies_config)
DEMO_BALANCE = 10_000.0  # what a new virtual account holds
SPOT_LOOKBACK_S = 60  # the latest tick is at most this old (every simulated symbol ticks every 1 or 2 s)
FIRST_CONTRACT_ID, FIRST_TRANSACTION_ID = 250_000_000_001, 500_000_000_001  # Deriv-sized ids, deterministic
Close = Literal["tp", "sl", "stop_out", "expiry", "sold"]
EXIT_NAMES: dict[str, str] = {why: name for name, why in CLOSED_BY.items()} | {"expiry": "Exit Spot", "sold": "Sell Spot"}


class APIError(Exception):
    """An error the server answers a request with (Deriv's code, message and details)."""

    def __init__(self, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details


def after(epoch: float) -> int:
    """The first second a tick strictly after `epoch` can have (epochs are whole seconds; `epoch + 1e-9`
    is `epoch` itself at today's epochs in floating point)."""
    return math.floor(epoch) + 1


def money(amount: float) -> float:
    """`amount` in cents."""
    return round(float(amount), CENTS)


def _cents(field: str, amount: float) -> float:
    if amount <= 0 or money(amount) != amount:
        raise APIError(
            "ContractBuyValidationError",
            f"{field} must be a positive amount with at most {CENTS} decimal places, got {amount!r}.",
            {"field": field},
        )
    return float(amount)


class Account(BaseModel):
    """An account a token authorizes: virtual (login id VRTC...) or real money (CR...)."""

    model_config = ConfigDict(validate_assignment=True)

    loginid: str = Field(pattern=r"^(VRTC|CR)[0-9]{1,10}$")
    currency: str = "USD"
    balance: float = Field(ge=0)
    is_virtual: bool

    @model_validator(mode="after")
    def _loginid_names_the_kind(self) -> Account:
        if self.loginid.startswith("VRTC") != self.is_virtual:
            raise ValueError(f"loginid {self.loginid}: VRTC... is a virtual account's, CR... a real one's")
        return self

    @classmethod
    def numbered(cls, number: int, *, is_virtual: bool = True, balance: float = DEMO_BALANCE) -> Account:
        return cls(loginid=f"{'VRTC' if is_virtual else 'CR'}{number}", balance=balance, is_virtual=is_virtual)

    def authorization(self) -> dict:
        """The `authorize` body: this account alone, a user of its own."""
        company, company_name = ("virtual", "Deriv Limited") if self.is_virtual else ("svg", "Deriv (SVG) LLC")
        broker = "VRTC" if self.is_virtual else "CR"
        return {
            "account_list": [
                {
                    "account_category": "trading",
                    "account_type": "binary",
                    "broker": broker,
                    "currency": self.currency,
                    "currency_type": "fiat",
                    "is_disabled": 0,
                    "is_virtual": int(self.is_virtual),
                    "landing_company_name": company,
                    "linked_to": [],
                    "loginid": self.loginid,
                }
            ],
            "balance": self.balance,
            "country": "",
            "currency": self.currency,
            "email": "",
            "fullname": "",
            "is_virtual": int(self.is_virtual),
            "landing_company_fullname": company_name,
            "landing_company_name": company,
            "linked_to": [],
            "local_currencies": {},
            "loginid": self.loginid,
            "preferred_language": "EN",
            "scopes": ["read", "trade", "trading_information"],
            "upgradeable_landing_companies": [],
            "user_id": int(self.loginid.removeprefix(broker)),
        }


class ContractSpec(BaseModel):
    """A priced contract: what a proposal quotes and a buy pays for (account currency)."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    contract_type: str
    side: Literal[1, -1]
    stake: float
    currency: str
    multiplier: int | None = None
    take_profit: float | None = None
    stop_loss: float | None = None
    commission: float = 0.0  # multiplier: charged once, exact (reported in cents)
    stop_out_loss: float = math.inf  # multiplier: the loss at which the venue closes the contract
    duration_ticks: int | None = None  # rise_fall
    payout: float = 0.0  # rise_fall: what a win pays

    @property
    def is_multiplier(self) -> bool:
        return self.multiplier is not None


def price_contract(params: dict, currency: str) -> ContractSpec:
    """Price a proposal's (or a one-call buy's) parameters from the catalog; APIError names what it refuses."""
    kind = params["contract_type"]
    if kind not in SIDES:
        raise APIError("OfferingsValidationError", f"Trading is not offered for {kind} here (only {', '.join(SIDES)}).")
    if params.get("basis") != "stake":
        raise APIError("ContractBuyValidationError", f"{kind}: basis must be 'stake'.", {"field": "basis"})
    if params.get("currency") != currency:
        raise APIError("ContractBuyValidationError", f"currency must be {currency}, got {params.get('currency')}.")
    foreign = {"duration", "duration_unit"} if kind in MULTIPLIERS else {"multiplier", "limit_order"}
    if foreign & set(params):
        raise APIError("ContractBuyValidationError", f"{kind} takes no {', '.join(sorted(foreign & set(params)))}.")
    stake = _cents("amount", params.get("amount", 0))
    symbol = params["symbol"]
    common = {"symbol": symbol, "contract_type": kind, "side": SIDES[kind], "stake": stake, "currency": currency}
    try:
        if kind in MULTIPLIERS:
            multiplier = params.get("multiplier")
            if multiplier is None or multiplier != int(multiplier):
                raise APIError("ContractBuyValidationError", f"{kind} needs a whole multiplier, got {multiplier!r}.")
            limits = params.get("limit_order", {})
            terms = instrument_terms(symbol, ExecutionConfig(instrument="multiplier", multiplier=int(multiplier), stake=stake))
            return ContractSpec(
                **common,
                multiplier=terms.multiplier,
                take_profit=_cents("take_profit", limits["take_profit"]) if "take_profit" in limits else None,
                stop_loss=_cents("stop_loss", limits["stop_loss"]) if "stop_loss" in limits else None,
                commission=terms.commission,
                stop_out_loss=terms.stop_out_loss,
            )
        ticks, unit = params.get("duration"), params.get("duration_unit")
        low, high = RISE_FALL_TICKS
        if unit != "t" or ticks is None or not low <= ticks <= high:
            raise APIError(
                "OfferingsValidationError", f"{kind} on {symbol} is offered for {low} to {high} ticks (duration_unit 't')."
            )
        terms = instrument_terms(symbol, ExecutionConfig(instrument="rise_fall", max_hold_ticks=ticks, stake=stake))
        return ContractSpec(**common, duration_ticks=ticks, payout=money(terms.payout_ratio * stake))
    except UnknownCostError as exc:  # the catalog cannot price it: no venue figure to invent
        raise APIError("OfferingsValidationError", f"{kind} on {symbol} cannot be priced: {exc}") from None
    except ValueError as exc:  # a config the engine refuses, a commission that stops the contract out at entry
        raise APIError("ContractBuyValidationError", f"{kind} on {symbol}: {exc}") from None


@dataclass
class Contract:
    id: int
    loginid: str
    spec: ContractSpec
    start_time: int  # the purchase second: the entry is the first tick after it
    buy_transaction: int
    take_profit: float | None  # the limit orders in force (contract_update changes them)
    stop_loss: float | None
    seen: float  # ticks up to this epoch are settled
    spot: tuple[int, float] | None = None  # the latest tick settled
    entry: tuple[int, float] | None = None
    ticks_after_entry: int = 0
    exit: tuple[int, float] | None = None
    close: Close | None = None
    sell_price: float | None = None
    sell_time: int | None = None
    sell_transaction: int | None = None

    @property
    def is_sold(self) -> bool:
        return self.close is not None

    def profit_at(self, quote: float) -> float:
        """A multiplier's exact profit at `quote` (deriv-costs.md; the commission amount, its floor
        included), before the stake's floor."""
        entry = self.entry[1]
        s = self.spec
        return s.stake * s.multiplier * s.side * (quote - entry) / entry - s.commission

    def value_at(self, quote: float) -> float:
        """A multiplier's bid price at `quote`: never below zero, the loss never exceeds the stake."""
        return money(max(0.0, self.spec.stake + self.profit_at(quote)))

    @property
    def entry_quote(self) -> float | None:
        return None if self.entry is None else self.entry[1]


class ContractBook:
    """The accounts' contracts, bought, settled and sold on the feed's ticks (`ticks`)."""

    def __init__(self, accounts: list[Account], ticks: Ticks):
        self.accounts = {a.loginid: a for a in accounts}
        self.ticks = ticks
        self.contracts: dict[int, Contract] = {}
        self._proposals: dict[str, ContractSpec] = {}
        self._contract_ids = itertools.count(FIRST_CONTRACT_ID)
        self._transaction_ids = itertools.count(FIRST_TRANSACTION_ID)

    # -- calls ----------------------------------------------------------------------------------

    def spot(self, symbol: str, now: float) -> tuple[int, float]:
        epochs, quotes = self.ticks(symbol, now - SPOT_LOOKBACK_S, now)
        if not len(epochs):
            raise APIError("MarketIsClosed", f"No tick of {symbol} in the last {SPOT_LOOKBACK_S} s.")
        return int(epochs[-1]), float(quotes[-1])

    def propose(self, params: dict, currency: str, now: float) -> dict:
        """A `proposal` body; its id buys the contract once."""
        spec = price_contract(params, currency)
        epoch, quote = self.spot(spec.symbol, now)
        proposal_id = uuid.uuid4().hex
        self._proposals[proposal_id] = spec
        body = {
            "ask_price": spec.stake,
            "date_start": int(now),
            "display_value": f"{spec.stake:.{CENTS}f}",
            "id": proposal_id,
            "longcode": _longcode(spec),
            "payout": spec.payout,
            "spot": quote,
            "spot_time": epoch,
        }
        if spec.is_multiplier:
            body |= {
                "commission": money(spec.commission),
                "multiplier": spec.multiplier,
                # Barrier values as if the entry were the spot now, as Deriv quotes them.
                "limit_order": _limit_orders(spec, spec.take_profit, spec.stop_loss, int(now), quote),
            }
        return body

    def buy(self, account: Account, request: dict, now: float) -> dict:
        """A `buy` body: by a proposal's id, or in one call with `parameters`."""
        if request["buy"] == "1":
            if "parameters" not in request:
                raise APIError("ContractBuyValidationError", 'buy "1" needs the contract\'s parameters.')
            spec = price_contract(request["parameters"], account.currency)
        elif (spec := self._proposals.pop(request["buy"], None)) is None:
            raise APIError("InvalidContractProposal", "Unknown contract proposal (bought already, or never proposed here).")
        if spec.currency != account.currency:
            raise APIError("ContractBuyValidationError", f"{account.loginid} trades in {account.currency}, not {spec.currency}.")
        if request["price"] < spec.stake:
            raise APIError("PriceMoved", f"The contract costs {spec.stake:.2f}, above the price {request['price']} allowed.")
        if spec.stake > account.balance:
            raise APIError(
                "InsufficientBalance",
                f"Your account balance ({account.currency}{account.balance:.2f}) is insufficient to buy this contract "
                f"({account.currency}{spec.stake:.2f}).",
            )
        account.balance = money(account.balance - spec.stake)
        start = int(now)
        c = Contract(
            id=next(self._contract_ids),
            loginid=account.loginid,
            spec=spec,
            start_time=start,
            buy_transaction=next(self._transaction_ids),
            take_profit=spec.take_profit,
            stop_loss=spec.stop_loss,
            seen=start,
        )
        self.contracts[c.id] = c
        return {
            "balance_after": account.balance,
            "buy_price": spec.stake,
            "contract_id": c.id,
            "longcode": _longcode(spec),
            "payout": spec.payout,
            "purchase_time": start,
            "shortcode": _shortcode(c),
            "start_time": start,
            "transaction_id": c.buy_transaction,
        }

    def contract(self, account: Account, contract_id: int, now: float) -> Contract:
        """The account's contract, settled up to `now`."""
        c = self.contracts.get(contract_id)
        if c is None or c.loginid != account.loginid:
            raise APIError("InvalidContractId", f"Contract {contract_id} is not one of {account.loginid}'s.")
        self.advance(now)
        return c

    def sell(self, account: Account, request: dict, now: float) -> dict:
        """A `sell` body: a multiplier closed at the latest tick (price 0: at market; else at least `price`)."""
        c = self.contract(account, request["sell"], now)
        if c.is_sold:
            raise APIError("InvalidSellContractProposal", "This contract has been sold.")
        if not c.spec.is_multiplier:
            raise APIError("InvalidSellContractProposal", "Resale of this contract is not offered.")
        if c.entry is None:
            raise APIError("InvalidSellContractProposal", "Waiting for entry tick.")
        price = c.value_at(c.spot[1])
        if request["price"] > price:
            raise APIError("PriceMoved", f"The contract's bid price {price:.2f} is below the price {request['price']} asked.")
        self._close(c, c.spot, "sold", price, int(now))
        return {
            "balance_after": self.accounts[c.loginid].balance,
            "contract_id": c.id,
            "reference_id": c.buy_transaction,
            "sold_for": price,
            "transaction_id": c.sell_transaction,
        }

    def update(self, account: Account, request: dict, now: float) -> dict:
        """A `contract_update` body: a multiplier's take-profit and stop-loss from now on (null cancels)."""
        c = self.contract(account, request["contract_id"], now)
        if not c.spec.is_multiplier or c.is_sold:
            why = "it has been sold" if c.is_sold else "only multipliers have limit orders"
            raise APIError("ContractUpdateFailure", f"Contract {c.id} cannot be updated: {why}.")
        limits = request["limit_order"]
        for field in ("take_profit", "stop_loss"):
            if field in limits:
                setattr(c, field, None if limits[field] is None else _cents(field, limits[field]))
        return {
            field: _order(field, getattr(c, field), int(now), c.spec, c.entry_quote) for field in ("take_profit", "stop_loss")
        }

    def open_contracts(self, account: Account, now: float) -> list[Contract]:
        self.advance(now)
        return [c for c in self.contracts.values() if c.loginid == account.loginid and not c.is_sold]

    # -- settlement -----------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Settle every open contract on the ticks up to `now`, in tick order."""
        for c in self.contracts.values():
            if not c.is_sold:
                self._settle(c, now)

    def _settle(self, c: Contract, now: float) -> None:
        epochs, quotes = self.ticks(c.spec.symbol, after(c.seen), now)
        c.seen = max(c.seen, now)
        for tick in zip(epochs.tolist(), quotes.tolist(), strict=True):
            c.spot = tick
            if c.entry is None:
                c.entry = tick
                continue
            if c.spec.is_multiplier:
                why = self._limit_reached(c, c.profit_at(tick[1]))
                if why is not None:
                    self._close(c, tick, why, c.value_at(tick[1]), tick[0])
                    return
            else:
                c.ticks_after_entry += 1
                if c.ticks_after_entry == c.spec.duration_ticks:
                    won = c.spec.side * (tick[1] - c.entry[1]) > 0
                    self._close(c, tick, "expiry", c.spec.payout if won else 0.0, tick[0])
                    return

    @staticmethod
    def _limit_reached(c: Contract, profit: float) -> Close | None:
        if c.take_profit is not None and profit >= c.take_profit:
            return "tp"
        stop_loss = math.inf if c.stop_loss is None else c.stop_loss
        stop, why = (stop_loss, "sl") if stop_loss <= c.spec.stop_out_loss else (c.spec.stop_out_loss, "stop_out")
        return why if profit <= -stop else None

    def _close(self, c: Contract, tick: tuple[int, float], why: Close, price: float, sell_time: int) -> None:
        c.exit, c.close, c.sell_price, c.sell_time = tick, why, price, sell_time
        c.sell_transaction = next(self._transaction_ids)
        account = self.accounts[c.loginid]
        account.balance = money(account.balance + price)

    # -- views ----------------------------------------------------------------------------------

    def view(self, c: Contract, at: tuple[int, float] | None = None) -> dict:
        """A `proposal_open_contract` body of `c` as of tick `at` (default: the latest settled): open
        before its exit tick, sold from it on."""
        s = c.spec
        sold = c.is_sold and (at is None or at[0] >= c.exit[0])
        at = c.exit if sold else at or c.spot
        body = {
            "buy_price": s.stake,
            "contract_id": c.id,
            "contract_type": s.contract_type,
            "currency": s.currency,
            "date_start": c.start_time,
            "display_name": get_symbol(s.symbol).display_name,
            "is_expired": int(sold and c.close == "expiry"),
            "is_sold": int(sold),
            "is_valid_to_sell": int(s.is_multiplier and c.entry is not None and not sold),
            "longcode": _longcode(s),
            "payout": s.payout,
            "purchase_time": c.start_time,
            "shortcode": _shortcode(c),
            "status": _status(c) if sold else "open",
            "transaction_ids": {"buy": c.buy_transaction},
            "underlying": s.symbol,
        }
        if s.is_multiplier:
            body |= {"commission": money(s.commission), "multiplier": s.multiplier}
            if not sold:
                body["limit_order"] = _limit_orders(s, c.take_profit, c.stop_loss, c.start_time, c.entry_quote)
        else:
            body["tick_count"] = s.duration_ticks
        if c.entry is not None:
            epoch, quote = c.entry
            body |= {"entry_spot": quote, "entry_tick": quote, "entry_tick_time": epoch}
        if at is not None:
            body |= {"current_spot": at[1], "current_spot_time": at[0]}
        if sold:
            bid = c.sell_price
        elif s.is_multiplier and c.entry is not None and at is not None:
            bid = c.value_at(at[1])
        else:
            bid = None  # before the entry, and a Rise/Fall contract's until it settles
        if bid is not None:
            body |= {"bid_price": bid, "profit": money(bid - s.stake)}
        if sold:
            epoch, quote = c.exit
            body |= {
                "exit_tick": quote,
                "exit_tick_time": epoch,
                "sell_price": c.sell_price,
                "sell_spot": quote,
                "sell_spot_time": epoch,
                "sell_time": c.sell_time,
                "transaction_ids": {"buy": c.buy_transaction, "sell": c.sell_transaction},
                "audit_details": {
                    "contract_start": [{"epoch": c.entry[0], "tick": c.entry[1], "name": "Entry Spot"}],
                    "contract_end": [{"epoch": epoch, "tick": quote, "name": EXIT_NAMES[c.close], "flag": "highlight_tick"}],
                },
            }
        return body

    @staticmethod
    def portfolio_entry(c: Contract) -> dict:
        return {
            "app_id": None,
            "buy_price": c.spec.stake,
            "contract_id": c.id,
            "contract_type": c.spec.contract_type,
            "currency": c.spec.currency,
            "date_start": c.start_time,
            "longcode": _longcode(c.spec),
            "payout": c.spec.payout,
            "purchase_time": c.start_time,
            "shortcode": _shortcode(c),
            "symbol": c.spec.symbol,
            "transaction_id": c.buy_transaction,
        }


_ORDER_NAMES = {"take_profit": "Take profit", "stop_loss": "Stop loss", "stop_out": "Stop out"}


def _level(spec: ContractSpec, entry: float, profit: float) -> str:
    """The quote at which a multiplier entered at `entry` makes `profit`, as Deriv's pip-sized barrier."""
    decimals = get_symbol(spec.symbol).pip_decimals
    return f"{entry * (1 + spec.side * (profit + spec.commission) / (spec.stake * spec.multiplier)):.{decimals}f}"


def _order(kind: str, amount: float | None, date: int, spec: ContractSpec, entry: float | None) -> dict:
    """A limit order as Deriv shows it: a loss's amount negative, `value` the quote that triggers it
    (null until the entry spot is known, or once cancelled)."""
    signed = None if amount is None else (amount if kind == "take_profit" else -amount)
    value = None if signed is None or entry is None else _level(spec, entry, signed)
    return {"display_name": _ORDER_NAMES[kind], "order_amount": signed, "order_date": date, "value": value}


def _limit_orders(spec: ContractSpec, take_profit: float | None, stop_loss: float | None, date: int, entry: float | None) -> dict:
    # The stop-out always applies, but its `value` may not be null: it is shown once an entry is known.
    orders = {"take_profit": take_profit, "stop_loss": stop_loss, "stop_out": spec.stop_out_loss if entry is not None else None}
    return {kind: _order(kind, amount, date, spec, entry) for kind, amount in orders.items() if amount is not None}


def _status(c: Contract) -> str:
    """A sold contract's status: `sold` when sold back, else won or lost by what it paid."""
    if c.close == "sold":
        return "sold"
    return "won" if c.sell_price > c.spec.stake else "lost"


def _longcode(s: ContractSpec) -> str:
    name = get_symbol(s.symbol).display_name
    if s.is_multiplier:
        way = "rise" if s.side == 1 else "fall"
        return f"If you select 'x{s.multiplier}', you win or lose {s.multiplier} times {name}'s {way} on your stake."
    way = "strictly higher" if s.side == 1 else "strictly lower"
    return f"Win payout if {name} after {s.duration_ticks} ticks is {way} than the entry spot."


def _shortcode(c: Contract) -> str:
    s = c.spec
    if s.is_multiplier:
        return f"{s.contract_type}_{s.symbol}_{s.stake:.2f}_{s.multiplier}_{c.start_time}"
    return f"{s.contract_type}_{s.symbol}_{s.payout:.2f}_{c.start_time}_{s.duration_ticks}T_S0P_0"
