"""Partitions: UTC day x symbol for the tick-level assets, the dataset for everything trained on one.

The (day, symbol) space is what the deployment tracks, read from `Settings` when the code location
loads: the symbols it collects or simulates (`SCALPING_SYMBOLS`, by default those `scalping demo`
simulates), on every UTC day from its first (`SCALPING_START_DAY`). Not the whole catalogue: the UI
would show thousands of partitions that nothing ever fills.
"""

import warnings

import dagster as dg

from scalping_assets.settings import Settings


def tick_partitions(settings: Settings) -> dg.MultiPartitionsDefinition:
    """The deployment's (UTC day, symbol) partitions: `settings.symbols` on every day from `settings.start_day`."""
    return dg.MultiPartitionsDefinition(
        {
            "date": dg.DailyPartitionsDefinition(start_date=settings.start_day.isoformat(), timezone="UTC"),
            "symbol": dg.StaticPartitionsDefinition(list(settings.symbols)),
        }
    )


TICK_PARTITIONS = tick_partitions(Settings())
DAILY: dg.DailyPartitionsDefinition = TICK_PARTITIONS.get_partitions_def_for_dimension("date")
SYMBOLS: dg.StaticPartitionsDefinition = TICK_PARTITIONS.get_partitions_def_for_dimension("symbol")


# A dataset is named when it is added (UI: "Add partition"; `scalping demo`: `default`). The dataset and
# every model, backtest, gate decision and bundle made from it share its partition key, so a model is
# always read with its own dataset.
DATASETS = dg.DynamicPartitionsDefinition(name="dataset")

# A served model version, "<registered model>@<version>": `prediction_log` adds each version the
# service answered with on a day, and live performance is judged per (day, served version).
SERVED = dg.DynamicPartitionsDefinition(name="served")


def tick_partition(day: str, symbol: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day, "symbol": symbol})


# Partitioned checks (preview) let a check tell which (day, symbol) file it judges; a multi-partition
# mapping (beta) lets features depend on the previous day's ticks and labels on the next day's.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", message="Class `MultiPartitionMapping` is currently in beta", category=dg.BetaWarning)
