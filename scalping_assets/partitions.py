"""Partitions shared by the tick-level assets: UTC day x symbol."""

import warnings

import dagster as dg

from scalping_assets.market.simulator import DEFAULT_ORIGIN
from scalping_assets.market.symbols import catalog

DAILY = dg.DailyPartitionsDefinition(start_date=DEFAULT_ORIGIN.isoformat(), timezone="UTC")
SYMBOLS = dg.StaticPartitionsDefinition(list(catalog()))
TICK_PARTITIONS = dg.MultiPartitionsDefinition({"date": DAILY, "symbol": SYMBOLS})


def tick_partition(day: str, symbol: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day, "symbol": symbol})


# Partitioned checks (preview) let a check tell which (day, symbol) file it judges; a multi-partition
# mapping (beta) lets features depend on the previous day's ticks and labels on the next day's.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", message="Class `MultiPartitionMapping` is currently in beta", category=dg.BetaWarning)
