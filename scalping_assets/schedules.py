"""Jobs, the schedule that keeps the day partitions current for every tracked simulated symbol, and the export sensor."""

from datetime import UTC, timedelta

import dagster as dg

from scalping_assets.market.symbols import get_symbol
from scalping_assets.partitions import DAILY, SYMBOLS, tick_partition
from scalping_assets.records import GateRecord
from scalping_assets.resources import RecordIOManager
from scalping_assets.settings import Settings

ticks_job = dg.define_asset_job(
    "ticks_job",
    selection=dg.AssetSelection.assets("ticks"),
    description="Materialize and check one (day, symbol) partition of ticks.",
)
features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.assets("features"),
    description="Features of one (day, symbol) partition, with their checks.",
)
daily_job = dg.define_asset_job(
    "daily_job",
    selection=dg.AssetSelection.assets("ticks", "features"),
    description="Ticks and features of one (day, symbol) partition: what the daily schedule runs.",
)
dataset_job = dg.define_asset_job(
    "dataset_job",
    selection=dg.AssetSelection.assets("training_dataset"),
    description="Assemble one training dataset (a partition of `dataset`) from stored ticks and features.",
)
models_job = dg.define_asset_job(
    "models_job",
    selection=dg.AssetSelection.groups("models"),
    description="Train every model family on one dataset and compare them.",
)
evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=dg.AssetSelection.groups("evaluation"),
    description="Backtest every candidate of one dataset out of sample, then run the promotion gate.",
)
serving_job = dg.define_asset_job(
    "serving_job",
    selection=dg.AssetSelection.groups("serving"),
    description="Export the champion (and challenger) to ONNX with parity checks; the service picks them up on reload.",
)


def simulated_tracked_symbols() -> list[str]:
    """The partitions' symbols the simulator can generate (a symbol without a published formula is
    only collected live, and a simulator run of it would fail)."""
    return [symbol for symbol in SYMBOLS.get_partition_keys() if get_symbol(symbol).simulated]


def _requests(context: dg.ScheduleEvaluationContext, days_back: int, kind: str):
    day = context.scheduled_execution_time.astimezone(UTC).date() - timedelta(days=days_back)
    first = DAILY.start.date()
    if day < first:
        return dg.SkipReason(f"no complete day since the partitions start on {first} (SCALPING_START_DAY)")
    if Settings().tick_source != "simulator":
        return dg.SkipReason("SCALPING_TICK_SOURCE is deriv: collected_days_sensor turns the collected days into partitions")
    symbols = simulated_tracked_symbols()
    if not symbols:
        return dg.SkipReason(f"none of the tracked symbols ({', '.join(SYMBOLS.get_partition_keys())}) can be simulated")
    return [
        dg.RunRequest(run_key=f"{kind}:{day}:{symbol}", partition_key=tick_partition(day.isoformat(), symbol))
        for symbol in symbols
    ]


@dg.schedule(job=daily_job, cron_schedule=Settings().daily_cron, execution_timezone="UTC")
def daily_ticks_schedule(context: dg.ScheduleEvaluationContext):
    """Shortly after 00:00 UTC (SCALPING_DAILY_CRON): ticks and features of the day that just ended, one run per tracked
    symbol the simulator generates (SCALPING_SYMBOLS)."""
    return _requests(context, 1, "daily")


@dg.asset_sensor(asset_key=dg.AssetKey("champion"), job=serving_job)
def champion_promoted_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry, records: RecordIOManager):
    """Export whenever the gate promotes a new champion."""
    dataset = asset_event.dagster_event.partition
    gate = records.store().load(records.key(asset_event.dagster_event.asset_key, dataset), GateRecord)
    if not gate.promoted:
        return dg.SkipReason(f"the gate kept the champion of {dataset}: {gate.message}")
    return dg.RunRequest(run_key=f"{gate.registered_model}:{gate.champion}", partition_key=dataset)
