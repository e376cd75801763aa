"""Dagster resources: thin configurable handles on the domain objects."""

from datetime import date

import dagster as dg
import pandas as pd

from scalping_assets.market.simulator import DEFAULT_ORIGIN, simulator
from scalping_assets.market.store import TickStore


class TickStoreResource(dg.ConfigurableResource):
    """Parquet tick store, one file per (symbol, UTC day) under `root`."""

    root: str = "data/ticks"

    def store(self) -> TickStore:
        return TickStore(self.root)


class SimulatorResource(dg.ConfigurableResource):
    """Seeded simulator of the synthetic indices; the same seed gives the same ticks."""

    seed: int = 7
    origin: str = DEFAULT_ORIGIN.isoformat()

    def day(self, symbol: str, day: date) -> pd.DataFrame:
        return simulator(symbol, self.seed, date.fromisoformat(self.origin)).day(day)
