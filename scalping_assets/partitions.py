"""Partitions: UTC day x symbol for the tick-level assets, the dataset for everything trained on one."""

import warnings

import dagster as dg

from scalping_assets.market.simulator import DEFAULT_ORIGIN
from scalping_assets.market.symbols import catalog

DAILY = dg.DailyPartitionsDefinition(start_date=DEFAULT_ORIGIN.isoformat(), timezone="UTC")
SYMBOLS = dg.StaticPartitionsDefinition(list(catalog()))
TICK_PARTITIONS = dg.MultiPartitionsDefinition({"date": DAILY, "symbol": SYMBOLS})


# A dataset is named when it is added (UI: "Add partition"; `scalping demo`: `default`). The dataset and
# every model, backtest, gate decision and bundle made from it share its partition key, so a model is
# always read with its own dataset.
DATASETS = dg.DynamicPartitionsDefinition(name="dataset")


def tick_partition(day: str, symbol: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day, "symbol": symbol})


# Partitioned checks (preview) let a check tell which (day, symbol) file it judges; a multi-partition
# mapping (beta) lets features depend on the previous day's ticks and labels on the next day's.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", message="Class `MultiPartitionMapping` is currently in beta", category=dg.BetaWarning)
