"""Schedules: materialize the day that just ended for every simulated symbol."""

from datetime import UTC, timedelta

import dagster as dg

from scalping_assets.market.simulator import DEFAULT_ORIGIN
from scalping_assets.market.symbols import simulated_symbols
from scalping_assets.partitions import tick_partition

ticks_job = dg.define_asset_job(
    "ticks_job",
    selection=dg.AssetSelection.assets("ticks"),
    description="Materialize and check one (day, symbol) partition of ticks.",
)

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.assets("features", "labels"),
    description="Features and labels of one (day, symbol) partition, with their checks.",
)
dataset_job = dg.define_asset_job(
    "dataset_job",
    selection=dg.AssetSelection.assets("training_dataset"),
    description="Assemble the training dataset from stored ticks and features.",
)


@dg.schedule(job=ticks_job, cron_schedule="15 0 * * *", execution_timezone="UTC")
def daily_ticks_schedule(context: dg.ScheduleEvaluationContext):
    """Shortly after 00:00 UTC, one run per simulated symbol for the day that just ended."""
    day = context.scheduled_execution_time.astimezone(UTC).date() - timedelta(days=1)
    if day < DEFAULT_ORIGIN:
        return dg.SkipReason(f"no complete day since the partitions start on {DEFAULT_ORIGIN}")
    return [
        dg.RunRequest(run_key=f"ticks:{day}:{symbol}", partition_key=tick_partition(day.isoformat(), symbol))
        for symbol in simulated_symbols()
    ]
