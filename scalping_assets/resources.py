"""Dagster resources: thin configurable handles on the domain objects."""

import asyncio
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import BaseModel

from scalping_assets.features.daily import FrameStore
from scalping_assets.market.deriv_client import DerivClient, deriv_url
from scalping_assets.market.simulator import DEFAULT_ORIGIN, day_start_epoch, simulator
from scalping_assets.market.store import TickStore
from scalping_assets.market.symbols import get_symbol
from scalping_assets.models.tracking import Tracker
from scalping_assets.records import RecordError, RecordStore
from scalping_assets.settings import DEFAULT_MLFLOW_UI_URL


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


class DerivResource(dg.ConfigurableResource):
    """Deriv API v3 endpoint. Empty `url`: DERIV_WS_URL or Deriv's own, with DERIV_APP_ID as app_id."""

    url: str = ""

    def day(self, symbol: str, day: date) -> pd.DataFrame:
        """Every tick of the UTC day (up to now for today), backfilled page by page from ticks_history."""
        start = day_start_epoch(day)
        end = day_start_epoch(day + timedelta(days=1)) - 1

        async def fetch() -> pd.DataFrame:
            async with DerivClient(deriv_url(self.url or None)) as client:
                return await client.ticks_history(symbol, start, end, spacing=get_symbol(symbol).tick_interval_s or 1)

        return asyncio.run(fetch())


class FrameStoreResource(dg.ConfigurableResource):
    """Derived per-(symbol, day) frames (features or labels) under `root`."""

    root: str

    def store(self) -> FrameStore:
        return FrameStore(self.root)


class FolderResource(dg.ConfigurableResource):
    """Named folders under `root`: training datasets, backtest reports."""

    root: str = "data/datasets"

    def folder(self, name: str) -> Path:
        return Path(self.root) / name


class RecordIOManager(dg.ConfigurableIOManager):
    """Stage outputs as typed records (`scalping_assets.records`), one JSON file per asset and partition
    (`<root>/<asset>/<partition>.json`; `<root>/<asset>.json` unpartitioned).

    An input declared with metadata `{"optional": True}` is None while its asset has no record yet.
    """

    root: str = "data/records"

    def store(self) -> RecordStore:
        return RecordStore(self.root)

    @staticmethod
    def key(asset_key: dg.AssetKey, partition: str | None) -> list[str]:
        return [*asset_key.path, partition] if partition else list(asset_key.path)

    def handle_output(self, context: dg.OutputContext, obj: BaseModel) -> None:
        if not isinstance(obj, BaseModel):
            raise TypeError(f"{context.asset_key.to_user_string()} returned a {type(obj).__name__}, not a record")
        partition = context.asset_partition_key if context.has_asset_partitions else None
        self.store().save(self.key(context.asset_key, partition), obj)

    def load_input(self, context: dg.InputContext) -> BaseModel | None:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        key = self.key(context.asset_key, partition)
        if context.definition_metadata.get("optional") and not self.store().exists(key):
            return None
        try:
            return self.store().load(key)
        except RecordError as exc:
            raise dg.Failure(str(exc)) from exc


class MLflowResource(dg.ConfigurableResource):
    """MLflow tracking server or store (default: SQLite and local artifacts under the data folder)."""

    tracking_uri: str = "sqlite:///data/mlflow.db"
    artifact_root: str = "data/mlartifacts"
    experiment: str = "scalping"
    ui_url: str = DEFAULT_MLFLOW_UI_URL  # where the links in the UI point (a server tracking URI is its own UI)

    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri, self.experiment, str(Path(self.artifact_root).resolve()), self.ui_url)
