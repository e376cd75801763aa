"""Live tick collection that loses nothing and duplicates nothing, through drops, stalls and restarts.

Per symbol the collector tracks `complete`: the epoch through which it holds every tick (in memory or
on disk). Live ticks beyond a hole wait in memory; a hole (a reconnect, a stalled stream, a missed
tick) is filled from `ticks_history` before `complete` moves past it. Only ticks up to `complete`
are flushed to the store, so the last stored epoch is always a safe point to resume from: a killed
collector restarts there and backfills what it missed. Ticks are keyed by epoch, so repeats and
reorders collapse.
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

from .deriv_client import ConnectionLost, DerivAPIError, DerivClient, RateLimiter
from .store import TickStore, epoch_day
from .symbols import SECONDS_PER_DAY, get_symbol

log = logging.getLogger(__name__)


@dataclass
class SymbolState:
    interval: int
    complete: int  # every tick with epoch <= complete is held in `pending` or stored
    stored: int  # every tick with epoch <= stored is on disk
    pending: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # epoch -> quote, bid, ask
    last_tick_at: float = field(default_factory=time.monotonic)
    newest: int = 0  # the latest epoch ever held
    hole_seen_at: float | None = None
    backfilling: bool = False

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
        while self.complete + self.interval in self.pending:
            self.complete += self.interval

    def has_hole(self) -> bool:
        return self.newest > self.complete


@dataclass
class CollectorStats:
    live: int = 0
    backfilled: int = 0
    duplicates: int = 0
    reconnects: int = 0
    silences: int = 0
    gap_fills: int = 0
    stored: int = 0


@dataclass
class CollectorOptions:
    flush_interval_s: float = 5.0
    silence_timeout_s: float = 10.0  # no tick of a symbol for this long: the stream has stalled
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
        self._last_flush = time.monotonic()
        self._days: dict[str, tuple[date, pd.DataFrame]] = {}  # per symbol: the day last written, as written

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
        if state is None:
            return
        state.last_tick_at = time.monotonic()
        if state.add(int(tick["epoch"]), float(tick["quote"]), tick.get("bid", np.nan), tick.get("ask", np.nan)):
            self.stats.live += 1
            state.advance()
        else:
            self.stats.duplicates += 1

    async def _backfill(self, symbol: str, end: int | str = "latest") -> None:
        state = self.states[symbol]
        state.backfilling = True
        try:
            start = state.complete + 1
            history = await self._client.ticks_history(symbol, start, end)
            epochs = history["epoch"].to_numpy()
            for epoch, quote in zip(epochs.tolist(), history["quote"].tolist(), strict=True):
                if state.add(epoch, quote):
                    self.stats.backfilled += 1
            # History is complete for the span it covered, even where the cadence skipped a tick.
            covered = int(end) if end != "latest" else (int(epochs[-1]) if len(epochs) else state.complete)
            state.complete = max(state.complete, covered)
            state.advance()
            state.hole_seen_at = None
        finally:
            state.backfilling = False

    # -- storage --------------------------------------------------------------------------------

    def _take_complete(self) -> list[tuple[str, pd.DataFrame]]:
        """Remove every complete tick from memory, as one frame per (symbol, day) to write."""
        batches = []
        for symbol, state in self.states.items():
            ready = sorted(e for e in state.pending if e <= state.complete)
            if not ready:
                continue
            rows = np.array([state.pending.pop(e) for e in ready])
            frame = pd.DataFrame({"epoch": np.array(ready, np.int64), "quote": rows[:, 0], "bid": rows[:, 1], "ask": rows[:, 2]})
            batches.append((symbol, frame))
            state.stored = ready[-1]
        return batches

    def _write(self, batches: list[tuple[str, pd.DataFrame]]) -> int:
        for symbol, frame in batches:
            for day_number, part in frame.groupby(frame["epoch"] // SECONDS_PER_DAY):
                day = epoch_day(int(day_number) * SECONDS_PER_DAY)
                cached_day, stored = self._days.get(symbol, (None, None))
                if cached_day != day:  # first write of this day by this process: start from the file
                    stored = (
                        self.store.read_day(symbol, day).drop(columns="symbol") if self.store.path(symbol, day).exists() else None
                    )
                # Only ticks after the last stored one are ever flushed, so a day only grows at its end.
                merged = part if stored is None else pd.concat([stored[stored["epoch"] < part["epoch"].iloc[0]], part])
                self.store.write_day(symbol, day, merged)
                self._days[symbol] = (day, merged)
        return sum(len(frame) for _, frame in batches)

    def flush(self) -> int:
        """Write every complete tick to the store, merged into its day; returns the ticks written."""
        written = self._write(self._take_complete())
        self.stats.stored += written
        return written

    async def _flush_in_background(self) -> None:
        # Parquet encoding and fsync run in a thread, so the socket keeps being read meanwhile.
        self.stats.stored += await asyncio.to_thread(self._write, self._take_complete())
        self._last_flush = time.monotonic()

    # -- connection lifecycle -------------------------------------------------------------------

    async def _session(self, stop: asyncio.Event) -> None:
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
            # Subscribe first, then backfill up to "latest": the two overlap, so nothing falls between.
            await client.subscribe_ticks(list(self.specs))
            now = time.monotonic()
            for state in self.states.values():
                state.last_tick_at = now
            await asyncio.gather(*(self._backfill(s) for s in self.specs))
            self._attempt = 0
            await self._supervise(client, stop)

    async def _supervise(self, client: DerivClient, stop: asyncio.Event) -> None:
        opts = self.options
        fills: set[asyncio.Task] = set()
        try:
            while not stop.is_set():
                if client.closed.is_set():
                    raise ConnectionLost("connection closed")
                now = time.monotonic()
                for symbol, state in self.states.items():
                    if now - state.last_tick_at > opts.silence_timeout_s:
                        self.stats.silences += 1
                        raise ConnectionLost(f"{symbol}: no tick for {opts.silence_timeout_s:.1f} s")
                    if state.has_hole() and not state.backfilling:
                        if state.hole_seen_at is None:
                            state.hole_seen_at = now
                        elif now - state.hole_seen_at > opts.hole_grace_s:
                            self.stats.gap_fills += 1
                            hole_end = min(e for e in state.pending if e > state.complete) - 1
                            fills.add(asyncio.create_task(self._backfill(symbol, hole_end)))
                    elif not state.has_hole():
                        state.hole_seen_at = None
                for task in [t for t in fills if t.done()]:
                    fills.discard(task)
                    task.result()  # a failed gap fill means a broken connection: reconnect
                if now - self._last_flush >= opts.flush_interval_s:
                    await self._flush_in_background()
                try:
                    await asyncio.wait_for(stop.wait(), 0.1)
                except TimeoutError:
                    pass
        finally:
            for task in fills:
                task.cancel()

    async def run(self, stop: asyncio.Event | None = None) -> CollectorStats:
        """Collect until `stop` is set; reconnects with exponential back-off and jitter."""
        stop = stop or asyncio.Event()
        self._attempt = 0
        try:
            while not stop.is_set():
                try:
                    await self._session(stop)
                except (ConnectionLost, TimeoutError, OSError, DerivAPIError) as exc:
                    if isinstance(exc, DerivAPIError) and exc.code != "RateLimit":
                        raise
                    self.stats.reconnects += 1
                    delay = self._rng.uniform(0, min(self.options.backoff_cap_s, self.options.backoff_base_s * 2**self._attempt))
                    self._attempt += 1
                    log.warning("%s; reconnecting in %.2f s", exc, delay)
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                    except TimeoutError:
                        pass
        finally:
            if self.states:
                self.flush()
        return self.stats
