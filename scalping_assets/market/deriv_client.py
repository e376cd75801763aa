"""Asyncio client of the Deriv API v3: requests with req_id, tick streams and other subscriptions, keep-alive, paged history."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import pandas as pd
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .deriv_schema import redacted, validate_request
from .symbols import CallLimits

log = logging.getLogger(__name__)

DERIV_URL = "wss://ws.derivws.com/websockets/v3"
HISTORY_PAGE = 5000


class DerivAPIError(RuntimeError):
    """An error answered by the API; names the call, the symbol where there is one, and the code."""

    def __init__(self, call: str, code: str, message: str, symbol: str | None = None, details: dict | None = None):
        self.call, self.code, self.symbol, self.details = call, code, symbol, details
        where = f" for {symbol}" if symbol else ""
        super().__init__(f"Deriv {call}{where} failed with {code}: {message}")


class ConnectionLost(ConnectionError):
    """The connection closed, went silent or stopped answering; the caller reconnects."""


def deriv_url(base: str | None = None, app_id: str | None = None) -> str:
    """The endpoint URL: DERIV_WS_URL (default Deriv's) with DERIV_APP_ID as its app_id."""
    base = base or os.environ.get("DERIV_WS_URL") or DERIV_URL
    app_id = app_id or os.environ.get("DERIV_APP_ID")
    if "app_id=" in base or not base.startswith("wss://ws.derivws.com"):
        return base
    if not app_id:
        raise ValueError("set DERIV_APP_ID (your Deriv application id) to connect to Deriv's API")
    return f"{base}?app_id={app_id}"


class RateLimiter:
    """At most `calls` requests in any sliding window of `period_s` seconds (Deriv: 220 a minute)."""

    def __init__(self, calls: int = 220, period_s: float = 60.0):
        self.calls, self.period_s = calls, period_s
        self._times: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._times and now - self._times[0] >= self.period_s:
                    self._times.popleft()
                if len(self._times) < self.calls:
                    self._times.append(now)
                    return
                await asyncio.sleep(self.period_s - (now - self._times[0]))


class DerivClient:
    """One WebSocket connection. Ticks of subscriptions go to `on_tick(tick)` in arrival order; the
    messages of another subscription (e.g. `proposal_open_contract`) go to the `on_message` its
    request was sent with."""

    def __init__(
        self,
        url: str,
        *,
        on_tick: Callable[[dict], None] | None = None,
        limiter: RateLimiter | None = None,
        ping_interval_s: float = 30.0,
        request_timeout_s: float = 30.0,
        rate_limit_wait_s: float = 60.0,
        rate_limit_retries: int = 5,
    ):
        self.url = url
        self.on_tick = on_tick or (lambda tick: None)
        self.limiter = limiter or RateLimiter()
        self.ping_interval_s, self.request_timeout_s = ping_interval_s, request_timeout_s
        self.rate_limit_wait_s, self.rate_limit_retries = rate_limit_wait_s, rate_limit_retries
        self.sent: list[dict] = []  # every request sent on this connection, as sent (a token masked)
        self._ws: ClientConnection | None = None
        self._req_ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._streams: dict[int, Callable[[dict], None]] = {}  # req_id -> on_message of a subscription
        self._tasks: list[asyncio.Task] = []
        self.closed = asyncio.Event()

    async def __aenter__(self) -> DerivClient:
        try:
            self._ws = await asyncio.wait_for(
                # No permessage-deflate: ticks are small, and inflating each one costs more than it saves.
                connect(self.url, ping_interval=None, max_size=2**24, open_timeout=None, compression=None),
                self.request_timeout_s,
            )
        except (OSError, TimeoutError, ConnectionClosed) as exc:
            raise ConnectionLost(f"cannot connect to {self.url}: {exc}") from exc
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._keep_alive())]
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._ws is not None:
            await self._ws.close()
        self._fail_pending(ConnectionLost("client closed"))
        self.closed.set()

    def _fail_pending(self, exc: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                if message.get("msg_type") == "tick" and "tick" in message:
                    self.on_tick(message["tick"])
                stream = self._streams.get(message.get("req_id"))
                if stream is not None:
                    stream(message)
                future = self._pending.pop(message.get("req_id"), None)
                if future is not None and not future.done():
                    future.set_result(message)
            reason = "server closed the connection"
        except ConnectionClosed as exc:
            reason = f"connection lost ({exc})"
        self._fail_pending(ConnectionLost(reason))
        self.closed.set()

    async def _keep_alive(self) -> None:
        # Deriv closes a connection after 2 minutes without a client message.
        while True:
            await asyncio.sleep(self.ping_interval_s)
            try:
                await self.request({"ping": 1})
            except ConnectionLost:
                return
            except TimeoutError:
                log.warning("no pong within %.0f s: closing the connection", self.request_timeout_s)
                await self._ws.close()
                return

    async def request(self, payload: dict, on_message: Callable[[dict], None] | None = None) -> dict:
        """Send one request and return its reply (for a subscription: its first message).

        `on_message` (a subscription's): called with every message answering the request, the first
        included, in arrival order, until `end_stream(reply["req_id"])`; it must not raise.
        Raises DerivAPIError for an error reply (after waiting out RateLimit errors), ConnectionLost
        when the connection fails, TimeoutError when no reply comes in time.
        """
        call = validate_request(payload)
        for attempt in range(self.rate_limit_retries + 1):
            if call != "ping":  # pings are exempt from Deriv's rate limits
                await self.limiter.acquire()
            if self.closed.is_set():
                raise ConnectionLost("connection closed")
            req_id = next(self._req_ids)
            message = {**payload, "req_id": req_id}
            future = asyncio.get_running_loop().create_future()
            self._pending[req_id] = future
            if on_message is not None:
                self._streams[req_id] = on_message
            self.sent.append(redacted(message))
            try:
                await self._ws.send(json.dumps(message))
                reply = await asyncio.wait_for(future, self.request_timeout_s)
            except ConnectionClosed as exc:
                raise ConnectionLost(f"connection lost ({exc})") from exc
            finally:
                self._pending.pop(req_id, None)
                if future.done() and not future.cancelled():
                    future.exception()  # the reader may have failed it while this request was sent or cancelled
            error = reply.get("error")
            if error is None:
                return reply
            self.end_stream(req_id)
            symbol = payload.get("ticks_history") or payload.get("ticks")
            if error.get("code") == "RateLimit" and attempt < self.rate_limit_retries:
                log.warning("RateLimit on %s: waiting %.1f s", call, self.rate_limit_wait_s)
                if await self.closes_within(self.rate_limit_wait_s):
                    raise ConnectionLost(f"connection lost while waiting out a RateLimit on {call}")
                continue
            raise DerivAPIError(call, error.get("code", "?"), error.get("message", ""), symbol, error.get("details"))
        raise AssertionError("unreachable")

    def end_stream(self, req_id: int) -> None:
        """Stop passing the messages of the subscription requested with `req_id` to its `on_message`."""
        self._streams.pop(req_id, None)

    async def closes_within(self, seconds: float) -> bool:
        """Wait `seconds`, or less when the connection closes meanwhile (then True)."""
        try:
            await asyncio.wait_for(self.closed.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def subscribe_ticks(self, symbols: str | list[str]) -> dict:
        """Subscribe to the live ticks of a symbol or a list of them; returns the first tick message.

        One error answers the whole request: subscribe symbol by symbol to keep one's refusal its own.
        """
        return await self.request({"ticks": symbols if isinstance(symbols, str) else list(symbols), "subscribe": 1})

    async def server_time(self) -> int:
        return (await self.request({"time": 1}))["time"]

    async def api_call_limits(self) -> CallLimits:
        """The general call limits the server states now (`website_status.api_call_limits`): what a
        trading strategy's buys and sells count against (the offline defaults are in symbols.yml)."""
        reply = await self.request({"website_status": 1})
        return CallLimits.from_website_status(reply["website_status"], f"website_status of {self.url}")

    async def ticks_history(self, symbol: str, start: int, end: int | str = "latest", *, spacing: int = 1) -> pd.DataFrame:
        """Every tick with start <= epoch <= end, paging backwards from `end`.

        A page may hold fewer ticks than asked for while more history exists (a server may cap its
        pages), so paging goes on until a page is empty or reaches back to within `spacing` seconds of
        `start`: the symbol's ticks are never closer together than `spacing` (its cadence; the default,
        one second, holds for every symbol).
        """
        times, prices = [np.empty(0, np.int64)], [np.empty(0)]
        upper: int | str = end
        while upper == "latest" or int(start) <= int(upper):
            # The API wants start < end; a one-second window asks from a second earlier (filtered below).
            first = int(start) if upper == "latest" else min(int(start), int(upper) - 1)
            try:
                reply = await self.request(
                    {"ticks_history": symbol, "start": first, "end": str(upper), "count": HISTORY_PAGE, "style": "ticks"}
                )
            except DerivAPIError as exc:
                if exc.code == "InvalidStartEnd" and upper == "latest":
                    break  # a start that the server's clock has not reached yet: no ticks so far
                raise
            page_times = reply["history"]["times"]
            if not page_times:
                break
            times.append(np.asarray(page_times, np.int64))
            prices.append(np.asarray(reply["history"]["prices"], np.float64))
            if page_times[0] - spacing < start:
                break
            upper = page_times[0] - 1
        epochs = np.concatenate(times[::-1])
        quotes = np.concatenate(prices[::-1])
        keep = (epochs >= start) & ((epochs <= int(end)) if end != "latest" else True)
        return pd.DataFrame({"epoch": epochs[keep], "quote": quotes[keep]})
