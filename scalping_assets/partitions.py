"""Partitions shared by the tick-level assets: UTC day x symbol."""

import dagster as dg

from scalping_assets.market.simulator import DEFAULT_ORIGIN
from scalping_assets.market.symbols import catalog

DAILY = dg.DailyPartitionsDefinition(start_date=DEFAULT_ORIGIN.isoformat(), timezone="UTC")
SYMBOLS = dg.StaticPartitionsDefinition(list(catalog()))
TICK_PARTITIONS = dg.MultiPartitionsDefinition({"date": DAILY, "symbol": SYMBOLS})


def tick_partition(day: str, symbol: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day, "symbol": symbol})
