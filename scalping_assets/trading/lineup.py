"""What the paper trader trades, as the registry names it now: the champion's book and, beside it,
the challenger's, with the canary's share of venue orders.

`PaperDesk` asks again every `follow_interval_s`: when a canary completes (the challenger crowned),
rolls back (the challenger removed) or the gate names a new challenger, the desk rebuilds its books
with the new versions and plays each from its journal book's checkpoint, as a restart would: nothing
to restart, no tick lost.
"""

from __future__ import annotations

from collections.abc import Callable

from serving.bundle import OnnxPredictor
from serving.registry import BundleRegistry

from ..backtest.engine import ExecutionConfig
from ..models.tracking import CHALLENGER, CHAMPION
from ..monitoring.live import load_served_version
from ..settings import Settings
from .broker import Broker
from .canary_state import read_canary, routed_share
from .journal import CHALLENGER_BOOK, CHAMPION_BOOK, Journal
from .paper import PaperMetrics, PaperTrader


class Lineup:
    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        *,
        model: str | None = None,
        symbols: list[str] | None = None,
        challenger: bool = True,
        brokers: Callable[[str], list[Broker]] = lambda book: [],
        metrics: PaperMetrics | None = None,
        execution: Callable[[str, str], ExecutionConfig] | None = None,
    ):
        self.registry = BundleRegistry(settings.mlflow_uri(), settings.bundle_cache_dir())
        self.model = model or settings.model or self.registry.default_model_name()
        self.tracked = settings.symbols
        self.symbols = symbols  # None: the champion's cleared symbols among the tracked ones
        self.with_challenger = challenger
        self.journal, self.metrics = journal, metrics or PaperMetrics()
        # Venue brokers per book, made once and connected before trading: they outlive a change of versions.
        names = [CHAMPION_BOOK, CHALLENGER_BOOK] if challenger else [CHAMPION_BOOK]
        self._brokers = {book: brokers(book) for book in names}
        # The execution a version trades with: its backtest's (from MLflow) unless given.
        self.execution = execution or (lambda name, version: load_served_version(self.registry.tracker, name, version).execution)

    def versions(self) -> dict[str, str]:
        """book -> the version the registry's alias names now (no challenger book without a challenger)."""
        champion = self.registry.resolve(self.model, CHAMPION)
        if champion is None:
            raise LookupError(f"{self.model} has no champion: run the promotion gate (the champion asset) first")
        out = {CHAMPION_BOOK: champion}
        challenger = self.registry.resolve(self.model, CHALLENGER) if self.with_challenger else None
        if challenger is not None and challenger != champion:
            out[CHALLENGER_BOOK] = challenger
        return out

    def share(self, versions: dict[str, str]) -> float:
        """The canary's share of venue orders for the challenger's book (0 without a canary of it)."""
        return routed_share(read_canary(self.registry.tracker, self.model), versions.get(CHALLENGER_BOOK), 0.0)

    def books(self) -> list[PaperTrader]:
        """A book per version named now, each from its journal book's checkpoint. The challenger trades
        the champion's symbols it was cleared for too (the pairs the A/B compares)."""
        books = []
        symbols = self.symbols
        for book, version in self.versions().items():
            predictor = OnnxPredictor(self.registry.fetch(self.model, version), registered=(self.model, version))
            manifest = predictor.manifest
            if symbols is None:  # the champion's, read first
                symbols = manifest.traded(self.tracked)
            mine = symbols if book == CHAMPION_BOOK else [s for s in symbols if manifest.cleared(s)]
            if not mine:
                continue
            execution = self.execution(self.model, version)
            journal = self.journal.other_book(book, execution.capital)
            books.append(PaperTrader(predictor, execution, journal, mine, self._brokers[book], metrics=self.metrics))
        return books

    def venues(self) -> list[Broker]:
        """Every venue broker of every book (to connect and disconnect)."""
        return [b for brokers in self._brokers.values() for b in brokers]
