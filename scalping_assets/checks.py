"""Partitioned asset checks of the stored ticks (the rules live in market.quality)."""

import dagster as dg

from scalping_assets.assets.ticks import partition_day_symbol, ticks
from scalping_assets.market.quality import TICK_CHECKS
from scalping_assets.market.symbols import get_symbol
from scalping_assets.partitions import TICK_PARTITIONS
from scalping_assets.resources import TickStoreResource

# A missed tick is worth a warning (a live feed may drop one); the other failures mean broken data
# and block downstream assets.
WARN_ONLY = {"cadence_gaps"}


def _description(name: str) -> str:
    doc = TICK_CHECKS[name].__doc__
    return doc.strip().splitlines()[0] if doc else name.replace("_", " ")


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            name,
            asset=ticks,
            partitions_def=TICK_PARTITIONS,
            blocking=name not in WARN_ONLY,
            description=_description(name),
        )
        for name in TICK_CHECKS
    ],
    can_subset=True,
)
def tick_checks(context: dg.AssetCheckExecutionContext, tick_store: TickStoreResource):
    day, symbol = partition_day_symbol(context)
    frame = tick_store.store().read_day(symbol, day)
    spec = get_symbol(symbol)
    for key in context.selected_asset_check_keys:
        outcome = TICK_CHECKS[key.name](frame, spec)
        yield dg.AssetCheckResult(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.WARN if key.name in WARN_ONLY else dg.AssetCheckSeverity.ERROR,
            description=outcome.description,
            metadata=outcome.metadata,
        )
