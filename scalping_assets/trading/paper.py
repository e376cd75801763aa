"""`scalping paper`: the champion trades the live tick stream on paper, with the backtest's own rules.

Per symbol the champion is cleared for, every tick goes: streaming features (`FeatureState`, equal
to the training's batch features) -> the bundle's ONNX graphs in process -> the incremental engine
(`backtest.incremental`, equal to the batch engine bit for bit) -> the brokers (the paper broker
always; a Deriv virtual account when asked) -> the journal, in one transaction with the symbol's
checkpoint. Predictions are made **in process** from the bundle by default, not through the service's
WebSocket: one process then owns a tick from its arrival to its decision (no second queue whose
backlog would delay decisions unseen), the latency measured is the trader's own, and the paper
trader keeps trading while the service restarts or rolls out a new version.

Champion and challenger trade side by side (`PaperDesk`): each is a book (`PaperTrader`) with its own
features, engines and journal rows, fed the same ticks from one connection, so their P&L is paired
tick for tick (synthetic prices do not react to orders: both can trade every opportunity). Venue
orders are split between the books by the canary's share (`serving.models.bucket` of the order id,
the service's own sticky split): the challenger's for the share, the champion's for the rest.

Ticks come from one connection for all symbols. On every (re)connection each symbol subscribes
first, then reads Deriv's history from its checkpoint (or, on a first start, the feature warm-up
before its first live tick) and plays it before the live ticks that queued meanwhile: the same ticks
in the same order whatever the connection did, each once (epochs increase strictly). Ticks replayed
from history, and live ticks with a newer one already queued, trade on paper (the engine must see
them to stay equal to the batch replay), but send no order to a venue: their moment has passed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from serving.bundle import OnnxPredictor
from serving.models import bucket

from ..backtest.engine import ExecutionConfig
from ..backtest.incremental import IncrementalEngine, Step
from ..features import registry as R
from ..market.deriv_client import ConnectionLost, DerivAPIError, DerivClient
from ..market.symbols import get_symbol
from .broker import Broker, BrokerError, Fill, Order, PaperBroker
from .journal import CHALLENGER_BOOK, Journal

log = logging.getLogger(__name__)
DECISIONS_KEPT = 100_000  # tick-to-decision latencies kept for the progress line's p99 (and bench_paper)


class PaperMetrics:
    """Prometheus metrics of one trader (their own registry: a test may run several traders)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.ticks = Counter("scalping_paper_ticks", "ticks processed", ["book", "symbol"], registry=r)
        self.signals = Counter("scalping_paper_signals", "ticks with an entry signal", ["book", "symbol"], registry=r)
        self.trades = Counter("scalping_paper_trades", "positions closed", ["book", "broker"], registry=r)
        self.open_positions = Gauge("scalping_paper_open_positions", "open positions", ["book", "symbol"], registry=r)
        self.pnl = Gauge(
            "scalping_paper_pnl", "net P&L since the journal began, account currency", ["book", "broker"], registry=r
        )
        self.decision_seconds = Histogram(
            "scalping_paper_tick_to_decision_seconds",
            "from a tick's arrival to the engine's decision (features, model, engine)",
            ["book"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1),
            registry=r,
        )
        self.venue_share = Gauge(
            "scalping_paper_challenger_share", "share of venue orders the challenger's book places", registry=r
        )


@dataclass
class SymbolTrader:
    """One symbol's features, model window and engine, and where its ticks stand."""

    symbol: str
    engine: IncrementalEngine
    features: object  # FeatureState
    rows: deque
    first_epoch: int | None  # the first tick traded on (None: not started yet)
    last_epoch: int | None  # the last tick traded on (the journal's checkpoint)
    fed_epoch: int | None = None  # the last tick the features saw in this process
    queue: deque = field(default_factory=deque)  # live ticks not processed yet


@dataclass
class PaperStats:
    ticks: int = 0
    replayed: int = 0
    signals: int = 0
    fills: dict[str, int] = field(default_factory=dict)
    pnl: dict[str, float] = field(default_factory=dict)
    reconnects: int = 0
    # The latest decisions' latencies, bounded: the trader runs for weeks.
    decision_ms: deque = field(default_factory=lambda: deque(maxlen=DECISIONS_KEPT))


class PaperTrader:
    """One book: a model version trading its cleared symbols on paper (and on venues, for its share
    of the orders), journaled under `journal.book`."""

    def __init__(
        self,
        predictor: OnnxPredictor,
        execution: ExecutionConfig,
        journal: Journal,
        symbols: list[str],
        brokers: list[Broker] = (),
        *,
        metrics: PaperMetrics | None = None,
    ):
        self.predictor, self.execution, self.journal = predictor, execution, journal
        self.book = journal.book
        self.version = predictor.version
        self.model = predictor.registered_model
        self.paper = PaperBroker()
        self.venues = list(brokers)  # brokers besides paper: orders go to them at the signal tick
        self.challenger_share = 0.0  # of venue orders: the challenger's book places those whose bucket is below it
        self.metrics = metrics or PaperMetrics()
        self.stats = PaperStats()
        self.traders: dict[str, SymbolTrader] = {}
        manifest = predictor.manifest
        refused = [s for s in symbols if s not in manifest.symbols or not manifest.cleared(s)]
        if refused:
            raise ValueError(
                f"{', '.join(refused)}: not cleared by the promotion gate for {self.model} v{self.version} "
                f"(cleared: {', '.join(manifest.cleared_symbols or manifest.symbols)})"
            )
        for symbol in symbols:
            spec = get_symbol(symbol)
            saved = journal.checkpoint(symbol)
            state = saved[2] if saved else None
            engine = IncrementalEngine(symbol, spec.pip_size, execution, state=state)
            self.traders[symbol] = SymbolTrader(
                symbol,
                engine,
                predictor.feature_state(symbol),
                deque(maxlen=manifest.window),
                saved[0] if saved else None,
                saved[1] if saved else None,
            )
        names = [self.paper.name, *(b.name for b in self.venues)]
        self.session = journal.start_session(self.model, self.version, symbols, execution.model_dump_json(), names)
        self._venue_orders: dict[str, dict[str, Order]] = {b.name: {} for b in self.venues}

    # -- one tick ---------------------------------------------------------------------------------

    async def process(self, t: SymbolTrader, epoch: int, quote: float, arrived: float, live: bool) -> Step:
        """Features, model and engine at one tick; its venue orders (`live` ticks only, not history
        replayed); its journal transaction with the symbol's checkpoint."""
        t.rows.append(t.features.update(epoch, quote))
        t.fed_epoch = epoch
        trading = t.first_epoch is not None and epoch >= t.first_epoch
        proba = None
        if trading and self.predictor.manifest.window_ready(t.rows):
            proba = self.predictor.predict(np.stack(t.rows)[None], t.symbol)[0]
        # The engine sees every tick, the warm-up included (its sigma window), and trades from the first.
        step = t.engine.on_tick(epoch, quote, proba)
        decided = time.perf_counter()
        if trading:
            self.metrics.decision_seconds.labels(self.book).observe(decided - arrived)
            self.stats.decision_ms.append((decided - arrived) * 1e3)
        placed, rejected = await self._venues(step, live)
        entered = [t.engine.order(p.order_id, p.signal_epoch, p.side) for p in step.entries]
        for order in entered:
            await self.paper.open(order)
        for trade in step.trades:
            await self.paper.close(t.engine.order(trade["order_id"], trade["signal_epoch"], trade["side"]), trade)
        trades = {trade["order_id"]: trade for trade in step.trades}
        counted = []
        with self.journal.transaction() as c:
            if step.side and proba is not None:
                self.journal.signal(c, t.symbol, epoch, self.version, step.side, proba)
            for order in entered:
                status = "late" if order.id in step.late else "filled"
                self.journal.order(c, self.paper.name, order, status, entry_epoch=epoch)
            for broker, sent in placed.items():
                for order, contract_id in sent.values():
                    self.journal.order(c, broker, order, "placed", contract_id)
            for broker, order_id, why in rejected:
                self.journal.order_status(c, broker, order_id, "rejected", why=why)
            for fill in self.paper.fills():
                if self.journal.fill(c, fill, trades[fill.order_id]):
                    counted.append(fill)
            if trading:
                state = t.engine.snapshot()
                self.journal.save_checkpoint(c, t.symbol, self.model, self.version, t.first_epoch, epoch, state)
        t.last_epoch = epoch
        self.stats.ticks += 1
        self.stats.signals += step.side != 0 and proba is not None
        self.metrics.ticks.labels(self.book, t.symbol).inc()
        if step.side and proba is not None:
            self.metrics.signals.labels(self.book, t.symbol).inc()
        self.metrics.open_positions.labels(self.book, t.symbol).set(len(t.engine.open_positions))
        for fill in counted:
            self._add_fill(fill)
        return step

    async def _venues(self, step: Step, live: bool) -> tuple[dict[str, dict[str, tuple[Order, str]]], list[tuple[str, str, str]]]:
        """Send this tick's orders (live ticks only) and closes to the venue brokers: per broker, the
        (order, contract id) of each order placed; and (broker, order id, why) of each venue order the
        engine did not fill at its fill tick."""
        placed: dict[str, dict[str, tuple[Order, str]]] = {}
        rejected = [(b.name, i, why) for b in self.venues for i, why in step.rejected if i in self._venue_orders[b.name]]
        for broker in self.venues:
            mine = self._venue_orders[broker.name]
            sent = placed.setdefault(broker.name, {})
            for order in [o for o in step.orders if self.places(o.id)] if live else []:
                try:
                    sent[order.id] = (order, await broker.open(order))
                    mine[order.id] = order
                except BrokerError as exc:
                    log.warning("%s: %s", broker.name, exc)
            closes = [(mine.pop(t["order_id"], None), t) for t in step.trades]
            # Placed at its signal, not filled by the engine: sold at once.
            closes += [(mine.pop(i, None), {"order_id": i, "reason": "timeout"}) for i, _ in step.rejected]
            for order, trade in closes:
                if order is None:
                    continue
                try:
                    await broker.close(order, trade)
                except BrokerError as exc:  # the venue's own limits or expiry still close it; the parity shows it
                    log.warning("%s: %s", broker.name, exc)
        return placed, rejected

    def places(self, order_id: str) -> bool:
        """Whether this book sends the order to its venues: the challenger's book the orders whose sticky
        bucket is below the canary's share, the champion's book the others (each opportunity once)."""
        below = bucket(order_id) < self.challenger_share
        return below if self.book == CHALLENGER_BOOK else not below

    def _add_fill(self, fill: Fill) -> None:
        self.stats.fills[fill.broker] = self.stats.fills.get(fill.broker, 0) + 1
        self.stats.pnl[fill.broker] = self.stats.pnl.get(fill.broker, 0.0) + fill.pnl
        self.metrics.trades.labels(self.book, fill.broker).inc()
        self.metrics.pnl.labels(self.book, fill.broker).set(self.stats.pnl[fill.broker])

    def collect_venue_fills(self) -> None:
        for broker in self.venues:
            for fill in broker.fills():
                with self.journal.transaction() as c:
                    if self.journal.fill(c, fill):
                        self._add_fill(fill)

    # -- the feed ---------------------------------------------------------------------------------

    def _on_tick(self, tick: dict) -> None:
        t = self.traders.get(tick.get("symbol"))
        if t is not None:
            t.queue.append((int(tick["epoch"]), float(tick["quote"]), time.perf_counter()))

    async def _catch_up(self, client: DerivClient, t: SymbolTrader, timeout_s: float = 60.0) -> None:
        """Play the history from where the symbol stands up to its first queued live tick.

        A first start reads the features' warm-up before that tick and trades from it; a restart
        warms the features on the ticks up to its checkpoint (the engine's state is the journal's)
        and trades every tick after it; a reconnection reads only the ticks it missed."""
        deadline = time.monotonic() + timeout_s
        while not t.queue:
            if time.monotonic() > deadline:
                raise ConnectionLost(f"{t.symbol}: no live tick within {timeout_s:.0f} s of subscribing")
            await asyncio.sleep(0.01)
        first_live = t.queue[0][0]
        if t.first_epoch is None:
            t.first_epoch = first_live
            start = first_live - warmup_seconds(self.predictor, t.symbol)
        elif t.fed_epoch is None:  # a restart
            start = t.last_epoch - warmup_seconds(self.predictor, t.symbol)
        else:
            start = t.fed_epoch + 1
        if start >= first_live:
            return
        history = await client.ticks_history(t.symbol, start, first_live - 1)
        for epoch, quote in zip(history["epoch"].tolist(), history["quote"].tolist(), strict=True):
            if t.fed_epoch is not None and epoch <= t.fed_epoch:
                continue
            if t.last_epoch is not None and epoch <= t.last_epoch:
                t.rows.append(t.features.update(epoch, quote))  # traded before the restart: features only
                t.fed_epoch = epoch
                continue
            await self.process(t, epoch, quote, time.perf_counter(), live=False)
            self.stats.replayed += 1

    async def _drain(self, t: SymbolTrader) -> None:
        while t.queue:
            epoch, quote, arrived = t.queue.popleft()
            if t.fed_epoch is not None and epoch <= t.fed_epoch:
                continue  # history played it
            # Only the newest tick is live for a venue: behind a backlog (a catch-up from history) the
            # next tick has come already, and an order would enter a tick late.
            await self.process(t, epoch, quote, arrived, live=not t.queue)

    async def resume_venues(self) -> None:
        """Follow again the venue positions the journal holds open (placed before a restart)."""
        for broker in self.venues:
            for row in self.journal.open_orders(broker.name).itertuples():
                if row.contract_id:
                    try:
                        await broker.resume(row.order_id, row.contract_id)
                    except BrokerError as exc:
                        log.warning("%s: cannot follow %s again: %s", broker.name, row.order_id, exc)
                        continue
                    self._venue_orders[broker.name][row.order_id] = Order.model_validate_json(row.order)
                else:
                    log.warning("%s: order %s was never confirmed by the venue; check its portfolio", broker.name, row.order_id)

    def progress(self) -> str:
        open_now = sum(len(t.engine.open_positions) for t in self.traders.values())
        p99 = np.percentile(self.stats.decision_ms, 99) if self.stats.decision_ms else math.nan
        pnl = ", ".join(f"{b} {self.stats.fills.get(b, 0)} trades {v:+.2f}" for b, v in sorted(self.stats.pnl.items()))
        return (
            f"paper {self.book} {self.model} v{self.version}: {self.stats.ticks:,} ticks ({self.stats.replayed:,} from history), "
            f"{self.stats.signals:,} signals, {open_now} open, {pnl or 'no trade yet'}; decision p99 {p99:.2f} ms"
        )


class LineupChanged(Exception):
    """The registry names other versions than the books trade: the desk rebuilds them."""


class PaperDesk:
    """One tick connection feeding every book (the champion's, and the challenger's beside it): each
    tick reaches each book, and each book catches up from its own checkpoint after a (re)connection.

    With a `lineup` (`trading.lineup`), the desk reads the registry every `follow_interval_s`: the
    canary's share of venue orders, and the versions to trade; when those moved (a canary completed or
    rolled back, a new challenger), it rebuilds the books and goes on from their checkpoints."""

    def __init__(
        self,
        url: str,
        books: list[PaperTrader],
        *,
        progress_interval_s: float = 30.0,
        lineup=None,  # trading.lineup.Lineup (which imports this module)
        follow_interval_s: float = 30.0,
    ):
        self.url, self.lineup = url, lineup
        self._set_books(books)
        self.progress_interval_s = progress_interval_s
        self.follow_interval_s = follow_interval_s

    def _set_books(self, books: list[PaperTrader]) -> None:
        if len({b.book for b in books}) != len(books):
            raise ValueError(f"books: each book trades once ({', '.join(b.book for b in books)})")
        self.books = books
        self.stats = {b.book: b.stats for b in books}

    def _on_tick(self, tick: dict) -> None:
        for book in self.books:
            book._on_tick(tick)

    def _follow(self) -> None:
        """The registry's versions and the canary's share; raises LineupChanged when the versions moved."""
        if self.lineup is None:
            return
        try:
            versions = self.lineup.versions()
            share = float(self.lineup.share(versions))
        except Exception as exc:  # the registry unreachable: the books trade on as they are
            log.warning("paper: the registry is unreadable (%s: %s); trading on as before", type(exc).__name__, exc)
            return
        trading = {b.book: b.version for b in self.books}
        if versions != trading:
            raise LineupChanged(f"{trading} -> {versions}")
        for book in self.books:
            if book.challenger_share != share:
                log.info(
                    "paper %s: challenger share of venue orders %.0f%% -> %.0f%%",
                    book.book,
                    100 * book.challenger_share,
                    100 * share,
                )
            book.challenger_share = share
            book.metrics.venue_share.set(share)

    async def _session(self, stop: asyncio.Event) -> None:
        async with DerivClient(self.url, on_tick=self._on_tick) as client:
            symbols = {s for book in self.books for s in book.traders}
            for book in self.books:
                for t in book.traders.values():
                    t.queue.clear()
            for symbol in sorted(symbols):
                await client.subscribe_ticks(symbol)
            for book in self.books:
                for t in book.traders.values():
                    await book._catch_up(client, t)
            last_progress = last_follow = time.monotonic()
            while not stop.is_set():
                if client.closed.is_set():
                    raise ConnectionLost("connection closed")
                await self._drain()
                now = time.monotonic()
                if now - last_follow >= self.follow_interval_s:
                    self._follow()
                    last_follow = now
                if now - last_progress >= self.progress_interval_s:
                    for book in self.books:
                        log.info(book.progress())
                    last_progress = now
                await asyncio.sleep(0.002)
            await self._drain()

    async def _drain(self) -> None:
        for book in self.books:
            for t in book.traders.values():
                await book._drain(t)
            book.collect_venue_fills()

    async def _start_books(self) -> None:
        for book in self.books:
            await book.resume_venues()

    async def run(self, stop: asyncio.Event, max_reconnects: int = 100) -> dict[str, PaperStats]:
        """Trade until `stop` is set; reconnects (with back-off) when the connection fails, rebuilds the
        books when the registry names other versions."""
        try:
            self._follow()
        except LineupChanged:
            self._set_books(self.lineup.books())
        await self._start_books()
        attempt = 0
        while not stop.is_set():
            try:
                await self._session(stop)
            except LineupChanged as exc:
                # Every tick so far is journaled: the new books play on from their checkpoints, as a
                # restart would (the features warm up from history, the engine state is the journal's).
                log.info("paper: the registry moved (%s); trading the new versions from the books' checkpoints", exc)
                self._set_books(self.lineup.books())
                self._follow()
                await self._start_books()
            except (ConnectionLost, TimeoutError, OSError, DerivAPIError) as exc:
                attempt += 1
                for book in self.books:
                    book.stats.reconnects += 1
                if attempt > max_reconnects:
                    raise
                log.warning("paper: %s; reconnecting (%d)", exc, attempt)
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(attempt, 6)))
        return self.stats


def warmup_seconds(predictor: OnnxPredictor, symbol: str) -> int:
    """History a first start reads before its first live tick (and the parity replay before the
    session): the features' look-back and one model window, with room for skipped epochs."""
    ticks = predictor.manifest.min_ticks + R.WARMUP_TICKS // 10 + 200
    return int(ticks * (get_symbol(symbol).tick_interval_s or 1) * 1.2)
