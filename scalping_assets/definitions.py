"""The Dagster code location: assets, checks, jobs, schedules and resources."""

import os

import dagster as dg

from scalping_assets.assets.ticks import ticks
from scalping_assets.checks import tick_checks
from scalping_assets.resources import DerivResource, SimulatorResource, TickStoreResource
from scalping_assets.schedules import daily_ticks_schedule, ticks_job


def build_resources(
    data_dir: str | None = None, seed: int | None = None, deriv_url: str | None = None
) -> dict[str, dg.ConfigurableResource]:
    """Resources of the embedded default deployment: local files, seeded simulator, Deriv from the environment."""
    data_dir = data_dir or os.environ.get("SCALPING_DATA_DIR", "data")
    seed = int(os.environ.get("SCALPING_SEED", "7")) if seed is None else seed
    return {
        "tick_store": TickStoreResource(root=os.path.join(data_dir, "ticks")),
        "simulator": SimulatorResource(seed=seed),
        "deriv": DerivResource(url=deriv_url or ""),
    }


defs = dg.Definitions(
    assets=[ticks],
    asset_checks=[tick_checks],
    jobs=[ticks_job],
    schedules=[daily_ticks_schedule],
    resources=build_resources(),
)
