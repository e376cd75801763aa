"""What earlier materializations recorded: downstream assets and checks read their metadata."""

import dagster as dg


def latest_metadata(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, key: dg.AssetKey) -> dict | None:
    """Metadata of the asset's latest materialization (None: it was never materialized)."""
    event = context.instance.get_latest_materialization_event(key)
    return None if event is None or event.asset_materialization is None else event.asset_materialization.metadata
