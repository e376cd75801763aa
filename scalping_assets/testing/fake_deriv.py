"""A local server that speaks the Deriv API v3 over WebSocket, with ticks from the simulator.

    python -m scalping_assets.testing.fake_deriv --port 8765 --seed 7 --time-scale 60

It answers `ticks` (live streams), `ticks_history` (ticks and candles), `forget`, `forget_all`,
`ping`, `time` and `active_symbols` with `echo_req`, `req_id` and `subscription` as the official
schemas say. Its clock can run faster than real time (and wait for the first subscription), a
symbol's volatility can change at a chosen time, and it injects faults on demand: abrupt
disconnects (close code 1006), stalled streams, repeated, reordered and missed ticks, a feed whose
epochs skip, per-symbol subscription errors, short and slow history pages, `RateLimit` errors.

It also trades the accounts it is given (on the command line, tokens read from the environment:
`--account-env VAR` a virtual account, `--real-account-env VAR` a real-money one): `authorize`,
`balance`, `proposal`, `buy`, `sell`, `contract_update`, `portfolio` and `proposal_open_contract`
(streamed at every tick until the contract is sold); Multipliers and Rise/Fall contracts settle on
the server's own ticks (`fake_contracts`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ..market.deriv_schema import (
    TRADING_CALLS,
    SchemaViolation,
    auth_required,
    call_of,
    redacted,
    response_violations,
    validate_request,
)
from ..market.simulator import DEFAULT_ORIGIN
from ..market.store import parse_epoch
from ..market.symbols import UnknownSymbolError, catalog, get_symbol
from .fake_contracts import Account, APIError, ContractBook, after
from .tick_source import SimulatedTicks, VolatilityChange

FIRST_LOGIN_NUMBER = 9_000_001  # the CLI's accounts: VRTC9000001, CR9000002 ...
HISTORY_MAX_COUNT = 5000
HISTORY_DEFAULT_COUNT = 1000
# An error answers with the msg_type its call's receive schema allows.
ERROR_MSG_TYPE = {"ticks": "tick", "ticks_history": "history"}


@dataclass
class Faults:
    """Faults to inject; times are wall-clock seconds since the server started."""

    drop_every_s: float | None = None  # abruptly close every connection this often
    stall_at_s: float | None = None  # streams go silent at this time ...
    stall_for_s: float = 0.0  # ... for this long; the ticks of that span are never streamed
    repeat_prob: float = 0.0  # a streamed tick is sent twice
    reorder_prob: float = 0.0  # a streamed tick swaps places with the next one
    rate_limit_every: int | None = None  # every Nth rate-limited request is answered RateLimit
    miss_prob: float = 0.0  # a streamed tick is never sent (history still has it): a missed live tick
    skip_prob: float = 0.0  # the feed itself skips an epoch: neither streamed nor in history
    refuse: dict[str, str] = field(default_factory=dict)  # symbol -> error code answered to its `ticks` subscription
    refuse_count: int | None = None  # ... for its first N subscriptions (None: every one)
    history_page_max: int | None = None  # a history page holds at most this many ticks, whatever `count` asks
    history_delay_s: float = 0.0  # each history reply is this much late
    history_rate_limit_every: int | None = None  # every Nth `ticks_history` call is answered RateLimit
    seed: int = 0


# The messages Deriv answers with for the errors a subscription may be refused with.
REFUSAL_MESSAGES = {
    "MarketIsClosed": "This market is presently closed.",
    "InvalidSymbol": "Symbol {symbol} invalid.",
}


def skipped_epochs(epochs: np.ndarray, prob: float, seed: int) -> np.ndarray:
    """Which epochs a feed with `skip_prob` = prob never had: a hash of (epoch, seed), the same in stream and history."""
    if not prob:
        return np.zeros(len(epochs), bool)
    x = (epochs.astype(np.uint64) + np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)) * np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(29)
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53) < prob


class SimClock:
    """Server time: starts at `start_epoch` and runs `time_scale` times faster than the wall clock."""

    def __init__(self, start_epoch: float, time_scale: float = 1.0, held: bool = False):
        if time_scale <= 0:
            raise ValueError(f"time scale must be positive, got {time_scale}")
        self.start_epoch, self.time_scale = start_epoch, time_scale
        self._wall0 = time.monotonic()
        self.held = held  # standing at start_epoch until `release` (a demo that prepares first)

    def release(self) -> None:
        if self.held:
            self.held, self._wall0 = False, time.monotonic()

    def now(self) -> float:
        if self.held:
            return self.start_epoch
        return self.start_epoch + (time.monotonic() - self._wall0) * self.time_scale

    def wall_elapsed(self) -> float:
        return time.monotonic() - self._wall0


@dataclass
class Subscription:
    id: str
    symbol: str
    echo_req: dict
    req_id: int | None
    last_epoch: float  # ticks after this epoch are still to be streamed


@dataclass
class ContractSubscription:
    id: str
    contract_id: int
    echo_req: dict
    req_id: int | None
    last_epoch: float  # the contract's state at the ticks after this epoch is still to be streamed


@dataclass(eq=False)
class Connection:
    ws: ServerConnection
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    contract_subs: dict[str, ContractSubscription] = field(default_factory=dict)
    account: Account | None = None  # the account `authorize` logged this connection in to
    calls: deque = field(default_factory=deque)  # monotonic times of rate-limited calls
    sender: asyncio.Task | None = None
    delayed: set[asyncio.Task] = field(default_factory=set)  # slow history replies still to be sent


class FakeDerivServer:
    def __init__(
        self,
        *,
        seed: int = 7,
        start: float | None = None,
        time_scale: float = 1.0,
        faults: Faults | None = None,
        origin: date = DEFAULT_ORIGIN,
        rate_limit_per_minute: int = 220,
        strict: bool = False,
        changes: tuple[VolatilityChange, ...] = (),
        hold: bool = False,
        accounts: dict[str, Account] | None = None,
    ):
        self.ticks = SimulatedTicks(seed, origin, changes)
        self.accounts = dict(accounts or {})  # token -> the account it authorizes
        self.book = ContractBook(list(self.accounts.values()), self.between)
        # hold: the clock stands at `start` until the first subscription, so history before it can be
        # read (and models trained) first, and the live part starts when someone listens.
        self.clock = SimClock(time.time() if start is None else start, time_scale, held=hold)
        self.faults = faults or Faults()
        self.rate_limit_per_minute = rate_limit_per_minute
        self.strict = strict  # validate every response against the receive schemas
        self.schema_violations: list[str] = []
        self.requests: list[dict] = []  # every request received, for tests and debugging
        self.connections: set[Connection] = set()
        self.drops = 0
        self._rng = random.Random(self.faults.seed)
        self._limited_calls = 0
        self._history_calls = 0
        self._refusals: dict[str, int] = {}

    def between(self, symbol: str, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        """The feed's ticks with lo <= epoch <= hi: the simulator's, less the epochs the feed skips."""
        epochs, quotes = self.ticks.between(symbol, lo, hi)
        keep = ~skipped_epochs(epochs, self.faults.skip_prob, self.faults.seed)
        return epochs[keep], quotes[keep]

    # -- protocol -------------------------------------------------------------------------------

    def _reply(self, request: dict, msg_type: str, **body) -> dict:
        message = {"echo_req": redacted(request), "msg_type": msg_type, **body}
        if "req_id" in request:
            message["req_id"] = request["req_id"]
        if "passthrough" in request:
            message["passthrough"] = request["passthrough"]
        return message

    def _error(self, request: dict, msg_type: str, error: APIError) -> dict:
        body = {"code": error.code, "message": error.message}
        if error.details:
            body["details"] = error.details
        return self._reply(request, msg_type, error=body)

    def _check_rate(self, conn: Connection, call: str) -> None:
        if call == "ping":
            return
        now = time.monotonic()
        while conn.calls and now - conn.calls[0] > 60:
            conn.calls.popleft()
        self._limited_calls += 1
        every = self.faults.rate_limit_every
        if call == "ticks_history":
            self._history_calls += 1
        history_every = self.faults.history_rate_limit_every
        if (
            len(conn.calls) >= self.rate_limit_per_minute
            or (every and self._limited_calls % every == 0)
            or (call == "ticks_history" and history_every and self._history_calls % history_every == 0)
        ):
            raise APIError("RateLimit", f"You have reached the rate limit for {call}.")
        conn.calls.append(now)

    def _refuse(self, symbol: str) -> None:
        """Answer a subscription of `symbol` with its injected error, as often as the faults say."""
        code = self.faults.refuse.get(symbol)
        if code is None:
            return
        refused = self._refusals.get(symbol, 0)
        if self.faults.refuse_count is None or refused < self.faults.refuse_count:
            self._refusals[symbol] = refused + 1
            raise APIError(code, REFUSAL_MESSAGES.get(code, "{symbol} is not available.").format(symbol=symbol))

    @staticmethod
    def _symbol(name: str) -> str:
        try:
            spec = get_symbol(name)
        except UnknownSymbolError:
            raise APIError("InvalidSymbol", f"Symbol {name} invalid.") from None
        if not spec.simulated:
            raise APIError("InvalidSymbol", f"Symbol {name} invalid.", {"reason": "not simulated by this server"})
        return name

    def _subscribe(self, conn: Connection, symbol: str, request: dict) -> Subscription:
        if any(s.symbol == symbol for s in conn.subscriptions.values()):
            raise APIError("AlreadySubscribed", f"You are already subscribed to {symbol}.")
        self.clock.release()
        sub = Subscription(str(uuid.uuid4()), symbol, request, request.get("req_id"), self.clock.now())
        conn.subscriptions[sub.id] = sub
        self._start_sender(conn)
        return sub

    def _start_sender(self, conn: Connection) -> None:
        if conn.sender is None or conn.sender.done():
            conn.sender = asyncio.create_task(self._stream(conn))

    def _history(self, request: dict) -> dict:
        symbol = self._symbol(request["ticks_history"])
        now = self.clock.now()
        end = now if request["end"] == "latest" else min(float(request["end"]), now)
        start = request.get("start", end - 86_400)
        if start >= end:
            raise APIError("InvalidStartEnd", f"Start time {start} must be before end time {request['end']}")
        count = request.get("count", HISTORY_DEFAULT_COUNT)
        count = count if 1 <= count <= HISTORY_MAX_COUNT else HISTORY_MAX_COUNT
        count = min(count, self.faults.history_page_max or count)
        epochs, quotes = self.between(symbol, start, end)
        decimals = get_symbol(symbol).pip_decimals
        if request.get("style", "ticks") == "ticks":
            body = {"history": {"prices": quotes[-count:].tolist(), "times": epochs[-count:].tolist()}}
            msg_type = "history"
        else:
            granularity = request.get("granularity", 60)
            body = {"candles": _candles(epochs, quotes, granularity)[-count:]}
            msg_type = "candles"
        return {"msg_type": msg_type, "pip_size": decimals, **body}

    def _active_symbols(self) -> list[dict]:
        return [
            {
                "display_name": spec.display_name,
                "display_order": order,
                "exchange_is_open": 1,
                "is_trading_suspended": 0,
                "market": "synthetic_index",
                "market_display_name": "Derived",
                "pip": spec.pip_size,
                "subgroup": "synthetics",
                "subgroup_display_name": "Synthetics",
                "submarket": spec.family.value,
                "submarket_display_name": spec.family.value.replace("_", " ").title(),
                "symbol": name,
                "symbol_type": "stockindex",
            }
            for order, (name, spec) in enumerate(catalog().items())
            if spec.simulated and spec.deriv
        ]

    def handle(self, conn: Connection, request: dict) -> dict | None:
        """The reply to one request (None for a successful `ticks` subscription: ticks follow)."""
        call = call_of(request)
        try:
            validate_request(request)
            self._check_rate(conn, call)
            if auth_required(call) and conn.account is None:
                raise APIError("AuthorizationRequired", "Please log in.", {"call": call})
            if call in TRADING_CALLS:
                return self._trade(conn, call, request)
            if call == "ticks":
                names = request["ticks"] if isinstance(request["ticks"], list) else [request["ticks"]]
                names = [self._symbol(n) for n in names]
                for name in names:
                    self._refuse(name)
                for name in names:
                    self._subscribe(conn, name, request)
                return None
            if call == "ticks_history":
                body = self._history(request)
                msg_type = body.pop("msg_type")
                if request.get("subscribe") == 1:
                    if msg_type != "history":
                        raise APIError("InvalidStyle", "This server streams ticks only, not candles.")
                    body["subscription"] = {"id": self._subscribe(conn, request["ticks_history"], request).id}
                return self._reply(request, msg_type, **body)
            if call == "forget":
                sub_id = request["forget"]
                forgotten = conn.subscriptions.pop(sub_id, None) or conn.contract_subs.pop(sub_id, None)
                return self._reply(request, "forget", forget=int(forgotten is not None))
            if call == "forget_all":
                kinds = request["forget_all"] if isinstance(request["forget_all"], list) else [request["forget_all"]]
                ids = []
                for kind, subs in (("ticks", conn.subscriptions), ("proposal_open_contract", conn.contract_subs)):
                    if kind in kinds:
                        ids += list(subs)
                        subs.clear()
                return self._reply(request, "forget_all", forget_all=ids)
            if call == "ping":
                return self._reply(request, "ping", ping="pong")
            if call == "time":
                return self._reply(request, "time", time=int(self.clock.now()))
            if call == "website_status":
                return self._reply(request, "website_status", website_status=self._website_status())
            return self._reply(request, "active_symbols", active_symbols=self._active_symbols())
        except SchemaViolation as exc:
            if call is None:
                return self._error(request, "error", APIError("UnrecognisedRequest", "Unrecognised request."))
            error = APIError("InputValidationFailed", "Input validation failed.", {"error": str(exc)})
            return self._error(request, ERROR_MSG_TYPE.get(call, call), error)
        except APIError as exc:
            return self._error(request, ERROR_MSG_TYPE.get(call, call), exc)

    def _trade(self, conn: Connection, call: str, request: dict) -> dict:
        """The reply to a trading call (`conn` is authorized where the call's schema says it must be)."""
        now, account = self.clock.now(), conn.account
        if request.get("subscribe") == 1 and call != "proposal_open_contract":
            raise APIError("InputValidationFailed", f"This server streams proposal_open_contract only, not {call}.")
        if call == "authorize":
            account = self.accounts.get(request["authorize"])
            if account is None:
                raise APIError("InvalidToken", "The token is invalid.")
            conn.account = account
            self.book.advance(now)  # the balance after every contract settled so far
            return self._reply(request, call, authorize=account.authorization())
        if call == "balance":
            self.book.advance(now)
            body = {"balance": account.balance, "currency": account.currency, "loginid": account.loginid}
            return self._reply(request, call, balance=body)
        if call == "proposal":
            self._symbol(request["symbol"])
            currency = account.currency if account else "USD"  # proposals need no login; this server's accounts are in USD
            return self._reply(request, call, proposal=self.book.propose(request, currency, now))
        if call == "buy":
            if "parameters" in request:
                self._symbol(request["parameters"]["symbol"])
            return self._reply(request, call, buy=self.book.buy(account, request, now))
        if call == "sell":
            return self._reply(request, call, sell=self.book.sell(account, request, now))
        if call == "contract_update":
            return self._reply(request, call, contract_update=self.book.update(account, request, now))
        if call == "portfolio":
            contracts = [self.book.portfolio_entry(c) for c in self.book.open_contracts(account, now)]
            return self._reply(request, call, portfolio={"contracts": contracts})
        if "contract_id" not in request:
            raise APIError("InputValidationFailed", "This server answers proposal_open_contract for one contract_id.")
        c = self.book.contract(account, request["contract_id"], now)
        body = {"proposal_open_contract": self.book.view(c)}
        if request.get("subscribe") == 1 and not c.is_sold:  # a contract sold already has nothing to stream
            self.clock.release()
            sub = ContractSubscription(str(uuid.uuid4()), c.id, request, request.get("req_id"), now)
            conn.contract_subs[sub.id] = sub
            self._start_sender(conn)
            body["proposal_open_contract"]["id"] = sub.id
            body["subscription"] = {"id": sub.id}
        return self._reply(request, call, **body)

    def _website_status(self) -> dict:
        # The limits this server enforces (general calls per minute; an hour is 60 minutes of them),
        # the other fields as Deriv shapes them.
        def limit(applies_to: str) -> dict:
            return {"applies_to": applies_to, "minutely": self.rate_limit_per_minute, "hourly": 60 * self.rate_limit_per_minute}

        return {
            "api_call_limits": {
                "max_proposal_subscription": {"applies_to": "subscribing to proposal concurrently", "max": 5},
                "max_requestes_general": limit("rest of api"),
                "max_requests_outcome": limit("portfolio, statement and proposal open contract"),
                "max_requests_pricing": limit("proposal and proposal open contract"),
            },
            # The virtual account's currency: what a demo-account trader stakes in.
            "currencies_config": {
                "USD": {
                    "fractional_digits": 2,
                    "is_deposit_suspended": 0,
                    "is_suspended": 0,
                    "is_withdrawal_suspended": 0,
                    "name": "US Dollar",
                    "stake_default": 10,
                    "transfer_between_accounts": {"fees": {}, "limits": {"min": 1}},
                    "type": "fiat",
                }
            },
            "site_status": "up",
        }

    # -- streaming ------------------------------------------------------------------------------

    def _stalled(self) -> bool:
        f = self.faults
        return f.stall_at_s is not None and f.stall_at_s <= self.clock.wall_elapsed() < f.stall_at_s + f.stall_for_s

    def _due_messages(self, conn: Connection, now: float) -> list[tuple[int, str]]:
        due = []
        for sub in list(conn.subscriptions.values()):
            epochs, quotes = self.between(sub.symbol, sub.last_epoch + 1e-9, now)
            sub.last_epoch = now
            if self.faults.miss_prob:
                sent = np.array([self._rng.random() >= self.faults.miss_prob for _ in range(len(epochs))], bool)
                epochs, quotes = epochs[sent], quotes[sent]
            if not len(epochs):
                continue
            spec = get_symbol(sub.symbol)
            asks = np.round(quotes + spec.pip_size, spec.pip_decimals).tolist()
            bids = np.round(quotes - spec.pip_size, spec.pip_decimals).tolist()
            # Everything but the tick is the same for every message of a subscription: encode it once.
            head = {"echo_req": sub.echo_req, "msg_type": "tick", "subscription": {"id": sub.id}}
            if sub.req_id is not None:
                head["req_id"] = sub.req_id
            prefix = json.dumps(head)[:-1]
            tail = f', "id": "{sub.id}", "pip_size": {spec.pip_decimals}, "symbol": "{sub.symbol}"}}}}'
            for epoch, quote, ask, bid in zip(epochs.tolist(), quotes.tolist(), asks, bids, strict=True):
                text = f'{prefix}, "tick": {{"ask": {ask!r}, "bid": {bid!r}, "epoch": {epoch}, "quote": {quote!r}{tail}'
                due.append((epoch, text))
            if self.strict:
                for _, text in due[-len(epochs) :]:
                    self._record_violations(json.loads(text))
        due.sort(key=lambda item: item[0])
        return due

    def _with_faults(self, messages: list[str]) -> list[str]:
        f, rng = self.faults, self._rng
        out = []
        for message in messages:
            out.append(message)
            if f.repeat_prob and rng.random() < f.repeat_prob:
                out.append(message)
        if f.reorder_prob:
            for i in range(len(out) - 1):
                if rng.random() < f.reorder_prob:
                    out[i], out[i + 1] = out[i + 1], out[i]
        return out

    def _contract_messages(self, conn: Connection, now: float) -> list[str]:
        """The followed contracts' state at each of their ticks up to `now`; a contract sold: its final
        state (at its exit tick), after which its stream stops."""
        if not conn.contract_subs:
            return []
        self.book.advance(now)
        out = []
        for sub in list(conn.contract_subs.values()):
            c = self.book.contracts[sub.contract_id]
            upto = c.exit[0] - 1 if c.is_sold else now  # the exit tick's state is the final message
            epochs, quotes = self.between(c.spec.symbol, after(sub.last_epoch), upto)
            sub.last_epoch = max(sub.last_epoch, upto)
            views = [self.book.view(c, tick) for tick in zip(epochs.tolist(), quotes.tolist(), strict=True)]
            if c.is_sold:
                views.append(self.book.view(c))
                del conn.contract_subs[sub.id]
            for view in views:
                message = self._reply(
                    sub.echo_req,
                    "proposal_open_contract",
                    proposal_open_contract={**view, "id": sub.id},
                    subscription={"id": sub.id},
                )
                if self.strict:
                    self._record_violations(message)
                out.append(json.dumps(message))
        return out

    async def _stream(self, conn: Connection) -> None:
        # Wake often enough for the fastest symbol at this time scale, never busier than 200 Hz.
        period = min(0.25, max(0.005, 0.5 / self.clock.time_scale))
        try:
            while conn.subscriptions or conn.contract_subs:
                now = self.clock.now()
                messages = []
                if self._stalled():  # the faults silence tick streams only
                    for sub in conn.subscriptions.values():
                        sub.last_epoch = now
                else:
                    messages = self._with_faults([m for _, m in self._due_messages(conn, now)])
                for message in messages + self._contract_messages(conn, now):
                    await conn.ws.send(message)
                await asyncio.sleep(period)
        except ConnectionClosed:
            pass

    # -- connections ----------------------------------------------------------------------------

    def _record_violations(self, message: dict) -> None:
        for problem in response_violations(message):
            self.schema_violations.append(f"{message.get('msg_type')}: {problem}")

    async def _serve_connection(self, ws: ServerConnection) -> None:
        conn = Connection(ws)
        self.connections.add(conn)
        try:
            async for raw in ws:
                try:
                    request = json.loads(raw)
                    if not isinstance(request, dict):
                        raise ValueError("not a JSON object")
                except ValueError:
                    await ws.send(json.dumps(self._error({}, "error", APIError("InputValidationFailed", "Malformed JSON."))))
                    continue
                self.requests.append(request)
                reply = self.handle(conn, request)
                if reply is None:
                    continue
                if self.strict and "echo_req" in reply and call_of(reply["echo_req"]):
                    self._record_violations(reply)
                if self.faults.history_delay_s and reply.get("msg_type") in ("history", "candles"):
                    # A slow reply must not hold up the connection's other requests.
                    late = asyncio.create_task(self._send_later(ws, reply, self.faults.history_delay_s))
                    conn.delayed.add(late)
                    late.add_done_callback(conn.delayed.discard)
                else:
                    await ws.send(json.dumps(reply))
        except ConnectionClosed:
            pass
        finally:
            self.connections.discard(conn)
            for task in [conn.sender, *conn.delayed]:
                if task is not None:
                    task.cancel()

    @staticmethod
    async def _send_later(ws: ServerConnection, reply: dict, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        try:
            await ws.send(json.dumps(reply))
        except ConnectionClosed:
            pass

    def drop_connections(self) -> int:
        """Abort every connection without a close frame, as a network failure would (code 1006)."""
        dropped = 0
        for conn in list(self.connections):
            conn.ws.transport.abort()
            dropped += 1
        self.drops += dropped
        return dropped

    async def _drop_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.faults.drop_every_s)
            self.drop_connections()

    async def serve(self, host: str = "127.0.0.1", port: int = 8765, ready: threading.Event | None = None) -> None:
        # Deriv closes connections after 2 minutes without a client message: keep protocol pings off.
        async with serve(self._serve_connection, host, port, ping_interval=None, max_size=2**20) as server:
            self.port = server.sockets[0].getsockname()[1]
            dropper = asyncio.create_task(self._drop_periodically()) if self.faults.drop_every_s else None
            if ready is not None:
                ready.set()
            try:
                await asyncio.Future()
            finally:
                if dropper:
                    dropper.cancel()


def _candles(epochs: np.ndarray, quotes: np.ndarray, granularity: int) -> list[dict]:
    if not len(epochs):
        return []
    buckets = epochs // granularity * granularity
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], len(epochs)]
    return [
        {
            "close": float(quotes[e - 1]),
            "epoch": int(buckets[s]),
            "high": float(quotes[s:e].max()),
            "low": float(quotes[s:e].min()),
            "open": float(quotes[s]),
        }
        for s, e in zip(starts, ends, strict=True)
    ]


class ServerThread:
    """Runs a FakeDerivServer on its own event loop in a background thread (tests, demos)."""

    def __init__(self, server: FakeDerivServer, host: str = "127.0.0.1", port: int = 0):
        self.server, self.host = server, host
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._task: asyncio.Task | None = None

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._task = self._loop.create_task(server.serve(host, port, self._ready))
            try:
                self._loop.run_until_complete(self._task)
            except asyncio.CancelledError:
                pass

        self._thread = threading.Thread(target=run, name="fake-deriv", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.server.port}"

    def drop_connections(self) -> int:
        """Drop every connection now, from any thread (the server's own loop does the aborting)."""
        return asyncio.run_coroutine_threadsafe(self._drop(), self._loop).result(10)

    async def _drop(self) -> int:
        return self.server.drop_connections()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the local Deriv server did not start within 10 s")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scalping_assets.testing.fake_deriv",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (default %(default)s)")
    parser.add_argument("--start", help="server time at start: epoch or ISO time, UTC (default: now)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="server seconds per wall second (default 1)")
    parser.add_argument("--hold", action="store_true", help="the clock stands at --start until the first subscription")
    parser.add_argument(
        "--volatility-change",
        action="append",
        default=[],
        metavar="SYMBOL=FACTOR@TIME",
        help="from TIME on, SYMBOL moves FACTOR times as far, e.g. SIG_AR1=3@2026-01-04 (repeatable)",
    )
    parser.add_argument("--rate-limit", type=int, default=220, help="calls per minute per connection (default 220)")
    parser.add_argument("--drop-every", type=float, help="abort every connection each N wall seconds")
    parser.add_argument("--stall-at", type=float, help="silence the streams N wall seconds after start ...")
    parser.add_argument("--stall-for", type=float, default=0.0, help="... for this many wall seconds")
    parser.add_argument("--repeat-prob", type=float, default=0.0, help="probability a streamed tick is sent twice")
    parser.add_argument("--reorder-prob", type=float, default=0.0, help="probability a streamed tick swaps with the next")
    parser.add_argument("--rate-limit-every", type=int, help="answer RateLimit to every Nth call")
    parser.add_argument("--miss-prob", type=float, default=0.0, help="probability a streamed tick is never sent")
    parser.add_argument("--skip-prob", type=float, default=0.0, help="probability the feed has no tick at an epoch")
    parser.add_argument(
        "--refuse",
        action="append",
        default=[],
        metavar="SYMBOL=CODE",
        help="answer subscriptions of SYMBOL with error CODE, e.g. R_100=MarketIsClosed (repeatable)",
    )
    parser.add_argument("--refuse-count", type=int, help="refuse only the first N subscriptions of each (default: all)")
    parser.add_argument("--history-page-max", type=int, help="at most N ticks per history page, whatever count asks")
    parser.add_argument("--history-delay", type=float, default=0.0, help="seconds each history reply is late")
    parser.add_argument("--history-rate-limit-every", type=int, help="answer RateLimit to every Nth ticks_history")
    parser.add_argument(
        "--account-env",
        action="append",
        default=[],
        metavar="VAR",
        help="a virtual account (balance 10000) authorized by the token in environment variable VAR (repeatable)",
    )
    parser.add_argument(
        "--real-account-env",
        action="append",
        default=[],
        metavar="VAR",
        help="a real-money account authorized by the token in VAR, to test a client's refusal (repeatable)",
    )
    args = parser.parse_args(argv)
    accounts: dict[str, Account] = {}
    for flag, names, is_virtual in (
        ("--account-env", args.account_env, True),
        ("--real-account-env", args.real_account_env, False),
    ):
        for name in names:
            token = os.environ.get(name)
            if not token:
                parser.error(f"{flag} {name}: that environment variable holds no token")
            if token in accounts:
                parser.error(f"{flag} {name}: the same token as another account")
            accounts[token] = Account.numbered(FIRST_LOGIN_NUMBER + len(accounts), is_virtual=is_virtual)
    try:
        changes = tuple(VolatilityChange.parse(text) for text in args.volatility_change)
    except (ValueError, UnknownSymbolError) as exc:
        parser.error(str(exc))
    refuse = {}
    for item in args.refuse:
        symbol, sep, code = item.partition("=")
        if not sep or not symbol or not code:
            parser.error(f"--refuse takes SYMBOL=CODE, got {item!r}")
        refuse[symbol] = code
    faults = Faults(
        drop_every_s=args.drop_every,
        stall_at_s=args.stall_at,
        stall_for_s=args.stall_for,
        repeat_prob=args.repeat_prob,
        reorder_prob=args.reorder_prob,
        rate_limit_every=args.rate_limit_every,
        miss_prob=args.miss_prob,
        skip_prob=args.skip_prob,
        refuse=refuse,
        refuse_count=args.refuse_count,
        history_page_max=args.history_page_max,
        history_delay_s=args.history_delay,
        history_rate_limit_every=args.history_rate_limit_every,
        seed=args.seed,
    )
    server = FakeDerivServer(
        seed=args.seed,
        start=parse_epoch(args.start),
        time_scale=args.time_scale,
        faults=faults,
        rate_limit_per_minute=args.rate_limit,
        changes=changes,
        hold=args.hold,
        accounts=accounts,
    )
    logins = ", ".join(a.loginid for a in accounts.values()) or "none"
    print(
        f"local Deriv API v3 on ws://{args.host}:{args.port} (seed {args.seed}, time x{args.time_scale}; accounts: {logins})",
        flush=True,
    )
    try:
        asyncio.run(server.serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
