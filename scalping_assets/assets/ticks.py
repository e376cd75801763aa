"""The `ticks` asset: one Parquet file per (UTC day, symbol)."""

from datetime import date
from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from scalping_assets.market.summary import price_plot_png, tick_summary
from scalping_assets.partitions import TICK_PARTITIONS
from scalping_assets.plotting import markdown_image
from scalping_assets.resources import DerivResource, SimulatorResource, TickStoreResource
from scalping_assets.settings import Settings

SOURCES = {"simulator": "simulator", "deriv": "collected"}  # Settings.tick_source -> the asset's default source


class TicksConfig(dg.Config):
    source: Literal["simulator", "deriv", "collected"] = Field(
        default=SOURCES[Settings().tick_source],  # SCALPING_TICK_SOURCE
        description=(
            "simulator: seeded offline ticks; deriv: backfill the day from ticks_history; collected: the day "
            "`scalping collect` stored (backfilled from ticks_history when it stored nothing)"
        ),
    )


def partition_day_symbol(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> tuple[date, str]:
    keys = context.partition_key.keys_by_dimension
    return date.fromisoformat(keys["date"]), keys["symbol"]


def _metadata(ticks: pd.DataFrame, path: str, title: str) -> dict[str, dg.MetadataValue]:
    summary = tick_summary(ticks)
    preview = pd.concat([ticks.head(5), ticks.tail(5)])
    return {
        "rows": dg.MetadataValue.int(summary["rows"]),
        "first_epoch": dg.MetadataValue.int(summary["first_epoch"]),
        "last_epoch": dg.MetadataValue.int(summary["last_epoch"]),
        "first_time": dg.MetadataValue.text(summary["first_time"]),
        "last_time": dg.MetadataValue.text(summary["last_time"]),
        "quote_range": dg.MetadataValue.text(f"{summary['min_quote']} - {summary['max_quote']}"),
        "path": dg.MetadataValue.path(path),
        "preview": dg.MetadataValue.table(
            records=[dg.TableRecord({"epoch": int(row.epoch), "quote": float(row.quote)}) for row in preview.itertuples()],
            schema=dg.TableSchema(columns=[dg.TableColumn("epoch", "int"), dg.TableColumn("quote", "float")]),
        ),
        "price_plot": dg.MetadataValue.md(markdown_image(price_plot_png(ticks, title), "price")),
    }


@dg.asset(
    partitions_def=TICK_PARTITIONS,
    group_name="market",
    kinds={"parquet"},
    description="Ticks of one symbol for one UTC day (epoch, quote, symbol, bid, ask), atomically written.",
)
def ticks(
    context: dg.AssetExecutionContext,
    config: TicksConfig,
    tick_store: TickStoreResource,
    simulator: SimulatorResource,
    deriv: DerivResource,
) -> dg.MaterializeResult:
    day, symbol = partition_day_symbol(context)
    store, source = tick_store.store(), config.source
    if source == "collected":
        # The collector's day, as stored: a gap in it is for the checks to flag, not to paper over. A day
        # it never stored (it was not running) is what Deriv's history can still fill.
        frame = store.read_day(symbol, day) if store.path(symbol, day).exists() else pd.DataFrame()
        if frame.empty:
            context.log.info(f"{symbol} {day}: nothing collected; backfilling the day from ticks_history")
            source, frame = "deriv", deriv.day(symbol, day)
    else:
        frame = simulator.day(symbol, day) if source == "simulator" else deriv.day(symbol, day)
    if frame.empty:
        raise dg.Failure(f"the {source} returned no ticks for {symbol} on {day}")
    path = store.path(symbol, day) if source == "collected" else store.write_day(symbol, day, frame)
    context.log.info(f"{symbol} {day}: {len(frame)} ticks from the {source} in {path}")
    return dg.MaterializeResult(metadata=_metadata(frame, str(path), f"{symbol} {day} ({source})"))
