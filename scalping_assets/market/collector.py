"""Live tick collection that loses nothing and duplicates nothing, through drops, stalls, refusals and restarts.

Per symbol the collector tracks `complete`: the epoch through which it holds every tick (in memory or
on disk). Live ticks beyond a hole wait in memory; a hole (what was missed before start-up or during a
reconnect, a stalled stream, a missed tick) is filled from `ticks_history` beside the live stream, one
window of at most a page at a time: each window's ticks are stored and `complete` moves past it before
the next is asked for, so a backfill longer than a connection lasts resumes where it stopped. Only ticks
up to `complete` are flushed to the store, so the last stored epoch is always a safe point to resume
from: a killed collector restarts there and backfills what it missed. Ticks are keyed by epoch, so
repeats and reorders collapse.

Ticks of a symbol are never closer together than its cadence (1 s or 2 s), though they may be further
apart (a feed skips an epoch now and then). So a held tick within one cadence after `complete` is the
next tick, whatever epoch `complete` stands on, and a history page that reaches back to within one
cadence of its window's start is the window's last.

A symbol whose subscription the server refuses (`MarketIsClosed`, …) is retried with back-off while the
others collect; one it refuses for good (`InvalidSymbol`) is dropped with a message saying so, and the
collector stops only when every symbol is.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from .deriv_client import HISTORY_PAGE, ConnectionLost, DerivAPIError, DerivClient, RateLimiter
from .store import TickStore, epoch_day
from .symbols import SECONDS_PER_DAY, get_symbol

log = logging.getLogger(__name__)

# Refusals that no retry can change: the account may not stream the symbol at all.
PERMANENT_REFUSALS = frozenset({"InvalidSymbol", "InputValidationFailed"})


class SymbolsRefused(RuntimeError):
    """The server refuses every symbol for good: nothing is left to collect. The message says why for each."""

    def __init__(self, refused: dict[str, str]):
        self.refused = refused
        reasons = "; ".join(f"{symbol}: {why}" for symbol, why in refused.items())
        super().__init__(f"the server refuses every symbol, nothing left to collect ({reasons})")


@dataclass
class SymbolState:
    interval: int
    complete: int  # every tick with epoch <= complete is held in `pending` or stored
    stored: int  # every tick with epoch <= stored is on disk
    pending: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # epoch -> quote, bid, ask
    last_tick_at: float = field(default_factory=time.monotonic)
    newest: int = 0  # the latest epoch ever held
    hole_seen_at: float | None = None
    subscribed: bool = False  # this connection's stream carries the symbol
    refused: str | None = None  # why the server refuses the symbol for good
    failures: int = 0  # refusals since the last success, for the back-off
    retry_at: float = 0.0  # no history call before this monotonic time, after a refused one

    def add(self, epoch: int, quote: float, bid: float = np.nan, ask: float = np.nan) -> bool:
        """Keep a tick unless it is already stored; False for one already held."""
        if epoch <= self.stored:
            return False
        fresh = epoch not in self.pending
        if fresh or np.isnan(self.pending[epoch][1]):  # a live tick carries bid/ask, history does not
            self.pending[epoch] = (quote, bid, ask)
        self.newest = max(self.newest, epoch)
        return fresh

    def advance(self) -> None:
        """Move `complete` over the held ticks that follow it with no room for a tick between."""
        step = 1
        while step <= self.interval:
            if self.complete + step in self.pending:
                self.complete += step
                step = 1
            else:
                step += 1

    def has_hole(self) -> bool:
        return self.newest > self.complete

    def hole_end(self) -> int:
        """The last epoch of the hole after `complete`: one before the first tick held beyond it."""
        return min(e for e in self.pending if e > self.complete) - 1


@dataclass
class CollectorStats:
    live: int = 0
    backfilled: int = 0
    duplicates: int = 0
    reconnects: int = 0
    silences: int = 0
    gap_fills: int = 0
    refusals: int = 0
    stored: int = 0


@dataclass
class CollectorOptions:
    flush_interval_s: float = 5.0
    silence_timeout_s: float = 10.0  # no tick of a subscribed symbol for this long: the stream has stalled
    hole_grace_s: float = 1.0  # a reordered tick gets this long to arrive before history fills the hole
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    ping_interval_s: float = 30.0
    request_timeout_s: float = 30.0
    rate_limit_wait_s: float = 60.0
    calls_per_minute: int = 220


class TickCollector:
    def __init__(
        self,
        url: str,
        symbols: list[str],
        store: TickStore,
        *,
        since: int | None = None,
        options: CollectorOptions | None = None,
        seed: int | None = None,
    ):
        self.specs = {s: get_symbol(s) for s in symbols}
        for name, spec in self.specs.items():
            if spec.tick_interval_s is None:
                raise ValueError(f"{name} has no known tick interval; the collector cannot tell a hole from a pause")
        self.url, self.store, self.since = url, store, since
        self.options = options or CollectorOptions()
        self.stats = CollectorStats()
        self.states: dict[str, SymbolState] = {}
        self._limiter = RateLimiter(self.options.calls_per_minute)
        self._rng = random.Random(seed)
        self._client: DerivClient | None = None
        self._attempt = 0
        self._last_flush = time.monotonic()
        self._flushing: asyncio.Task | None = None
        self._days: dict[str, tuple[date, pd.DataFrame]] = {}  # per symbol: the day last written, as written

    @property
    def refused(self) -> dict[str, str]:
        """The symbols the server refuses for good, with its reason."""
        return {symbol: state.refused for symbol, state in self.states.items() if state.refused}

    def backlog(self) -> dict[str, int]:
        """Per symbol still catching up: seconds of ticks between `complete` and the newest held."""
        return {s: st.newest - st.complete for s, st in self.states.items() if st.has_hole() and not st.refused}

    def _backoff(self, attempt: int) -> float:
        opts = self.options
        return self._rng.uniform(0, min(opts.backoff_cap_s, opts.backoff_base_s * 2**attempt))

    def _refused(self, state: SymbolState) -> float:
        """Count a refusal of the symbol's request; the back-off before its next try."""
        self.stats.refusals += 1
        delay = self._backoff(state.failures)
        state.failures += 1
        return delay

    # -- state ----------------------------------------------------------------------------------

    def _init_states(self, server_now: int) -> None:
        for name, spec in self.specs.items():
            if name in self.states:
                continue
            stored = self.store.last_epoch(name)
            if stored is None:
                start = server_now if self.since is None else int(self.since)
                stored = start - 1
            self.states[name] = SymbolState(spec.tick_interval_s, complete=stored, stored=stored)
            log.info("%s: collecting from epoch %d", name, stored + 1)

    def _on_tick(self, tick: dict) -> None:
        state = self.states.get(tick.get("symbol"))
        if state is None or state.refused:
            return
        state.last_tick_at = time.monotonic()
        if state.add(int(tick["epoch"]), float(tick["quote"]), tick.get("bid", np.nan), tick.get("ask", np.nan)):
            self.stats.live += 1
            state.advance()
        else:
            self.stats.duplicates += 1

    async def _subscribe(self, symbol: str) -> None:
        """Subscribe one symbol; a refusal is retried with back-off, or ends the symbol when it is for good."""
        state = self.states[symbol]
        while True:
            try:
                await self._client.subscribe_ticks(symbol)
            except DerivAPIError as exc:
                if exc.code == "RateLimit":
                    raise  # the connection's budget, not the symbol's: reconnect with back-off
                delay = self._refused(state)
                if exc.code in PERMANENT_REFUSALS:
                    state.refused = str(exc)
                    log.error(
                        "%s: refused by the server (%s): not collected. The other symbols go on; Deriv's "
                        "active_symbols lists what the account may stream.",
                        symbol,
                        exc,
                    )
                    return
                log.warning("%s: subscription refused (%s); retrying in %.1f s, the other symbols go on", symbol, exc, delay)
                await asyncio.sleep(delay)
                continue
            state.subscribed, state.failures, state.last_tick_at = True, 0, time.monotonic()
            return

    async def _backfill(self, symbol: str, end: int) -> None:
        """Fill the hole through `end` from history, one window at a time, each stored before the next."""
        state = self.states[symbol]
        window = HISTORY_PAGE * state.interval  # about one page of ticks
        while state.complete < end:
            start, upto = state.complete + 1, min(end, state.complete + window)
            history = await self._client.ticks_history(symbol, start, upto, spacing=state.interval)
            for epoch, quote in zip(history["epoch"].tolist(), history["quote"].tolist(), strict=True):
                if state.add(epoch, quote):
                    self.stats.backfilled += 1
            # History holds every tick of [start, upto], even where the feed skipped an epoch.
            state.complete = max(state.complete, upto)
            state.advance()
            state.failures = 0
            await self._flush()
        state.hole_seen_at = None

    async def _fill(self, symbol: str, end: int) -> None:
        """A backfill whose refusal by the server delays that symbol's next one, and nothing else."""
        state = self.states[symbol]
        try:
            await self._backfill(symbol, end)
        except DerivAPIError as exc:
            if exc.code == "RateLimit":
                raise
            delay = self._refused(state)
            state.retry_at = time.monotonic() + delay
            log.warning("%s: history refused (%s); retrying in %.1f s", symbol, exc, delay)

    # -- storage --------------------------------------------------------------------------------

    def _complete_batches(self) -> list[tuple[str, pd.DataFrame]]:
        """Every complete tick still in memory, as one frame per symbol to write (left in memory until written)."""
        batches = []
        for symbol, state in self.states.items():
            ready = sorted(e for e in state.pending if e <= state.complete)
            if not ready:
                continue
            rows = np.array([state.pending[e] for e in ready])
            frame = pd.DataFrame({"epoch": np.array(ready, np.int64), "quote": rows[:, 0], "bid": rows[:, 1], "ask": rows[:, 2]})
            batches.append((symbol, frame))
        return batches

    def _commit(self, batches: list[tuple[str, pd.DataFrame]]) -> int:
        """Forget the ticks of batches now on disk."""
        for symbol, frame in batches:
            state = self.states[symbol]
            epochs = frame["epoch"].tolist()
            for epoch in epochs:
                state.pending.pop(epoch, None)
            state.stored = max(state.stored, epochs[-1])
        written = sum(len(frame) for _, frame in batches)
        self.stats.stored += written
        return written

    def _write(self, batches: list[tuple[str, pd.DataFrame]]) -> None:
        for symbol, frame in batches:
            for day_number, part in frame.groupby(frame["epoch"] // SECONDS_PER_DAY):
                day = epoch_day(int(day_number) * SECONDS_PER_DAY)
                cached_day, stored = self._days.get(symbol, (None, None))
                if cached_day != day:  # first write of this day by this process: start from the file
                    stored = (
                        self.store.read_day(symbol, day).drop(columns="symbol") if self.store.path(symbol, day).exists() else None
                    )
                # Only ticks after the last stored one are ever flushed, so a day only grows at its end
                # (and writing a batch again, after a failed or abandoned write, gives the same file).
                merged = part if stored is None else pd.concat([stored[stored["epoch"] < part["epoch"].iloc[0]], part])
                self.store.write_day(symbol, day, merged)
                self._days[symbol] = (day, merged)

    def flush(self) -> int:
        """Write every complete tick to the store, merged into its day; returns the ticks written."""
        batches = self._complete_batches()
        self._write(batches)
        return self._commit(batches)

    async def _flush_once(self) -> None:
        batches = self._complete_batches()
        if batches:
            # Parquet encoding and fsync run in a thread, so the socket keeps being read meanwhile.
            await asyncio.to_thread(self._write, batches)
            self._commit(batches)
        self._last_flush = time.monotonic()

    async def _flush(self) -> None:
        """Flush in the background; one write at a time, and none left half-done by a cancelled caller."""
        while self._flushing is not None and not self._flushing.done():
            await asyncio.wait([self._flushing])
        self._flushing = asyncio.create_task(self._flush_once())
        await asyncio.shield(self._flushing)

    # -- connection lifecycle -------------------------------------------------------------------

    async def _session(self) -> None:
        opts = self.options
        async with DerivClient(
            self.url,
            on_tick=self._on_tick,
            limiter=self._limiter,
            ping_interval_s=opts.ping_interval_s,
            request_timeout_s=opts.request_timeout_s,
            rate_limit_wait_s=opts.rate_limit_wait_s,
        ) as client:
            self._client = client
            self._init_states(await client.server_time())
            for state in self.states.values():
                state.subscribed, state.hole_seen_at, state.retry_at = False, None, 0.0
            # One request per symbol, so that one symbol's refusal is that symbol's alone.
            tasks = {f"subscribe {s}": asyncio.create_task(self._subscribe(s)) for s, st in self.states.items() if not st.refused}
            try:
                await self._supervise(client, tasks)
            finally:
                for task in tasks.values():
                    task.cancel()
                await asyncio.gather(*tasks.values(), return_exceptions=True)

    async def _supervise(self, client: DerivClient, tasks: dict[str, asyncio.Task]) -> None:
        """Watch the connection and every symbol; start history fills; flush. Returns only by raising."""
        opts = self.options
        while True:
            if await client.closes_within(0.1):
                raise ConnectionLost("connection closed")
            for name in [n for n, t in tasks.items() if t.done()]:
                tasks.pop(name).result()  # a failed subscription or fill means a broken connection: reconnect
            if all(state.subscribed or state.refused for state in self.states.values()):
                self._attempt = 0  # a healthy session: the next reconnect starts from a short delay
            if self.states and all(state.refused for state in self.states.values()):
                raise SymbolsRefused(self.refused)
            now = time.monotonic()
            for symbol, state in self.states.items():
                if state.refused:
                    continue
                if state.subscribed and now - state.last_tick_at > opts.silence_timeout_s:
                    self.stats.silences += 1
                    raise ConnectionLost(f"{symbol}: no tick for {opts.silence_timeout_s:.1f} s")
                if f"fill {symbol}" in tasks or now < state.retry_at:
                    continue
                if not state.has_hole():
                    state.hole_seen_at = None
                elif state.hole_seen_at is None:
                    state.hole_seen_at = now
                elif now - state.hole_seen_at > opts.hole_grace_s:
                    self.stats.gap_fills += 1
                    tasks[f"fill {symbol}"] = asyncio.create_task(self._fill(symbol, state.hole_end()))
            if now - self._last_flush >= opts.flush_interval_s:
                await self._flush()

    async def run(self, stop: asyncio.Event | None = None) -> CollectorStats:
        """Collect until `stop` is set, at once even mid-backfill; reconnects with exponential back-off and jitter.

        Raises SymbolsRefused when the server refuses every symbol for good.
        """
        stop = stop or asyncio.Event()
        stopping = asyncio.create_task(stop.wait())
        self._attempt = 0
        try:
            while not stop.is_set():
                session = asyncio.create_task(self._session())
                await asyncio.wait({session, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not session.done():
                    session.cancel()
                    await asyncio.gather(session, return_exceptions=True)
                    break
                try:
                    session.result()
                except (ConnectionLost, TimeoutError, OSError, DerivAPIError) as exc:
                    if isinstance(exc, DerivAPIError) and exc.code != "RateLimit":
                        raise
                    self.stats.reconnects += 1
                    delay = self._backoff(self._attempt)
                    self._attempt += 1
                    log.warning("%s; reconnecting in %.2f s", exc, delay)
                    await asyncio.wait({stopping}, timeout=delay)
        finally:
            stopping.cancel()
            if self._flushing is not None:
                await asyncio.wait([self._flushing])  # a write a cancelled session left running
            if self.states:
                self.flush()
        return self.stats
