"""The run queue's concurrency from the deployment's settings.

A backfill launches one run per (day, symbol) partition and the run queue starts them; how many run
side by side is `max_concurrent_runs`. `dagster.yaml` cannot give an unset variable a default, so it
names this coordinator: Dagster's queued run coordinator, its `max_concurrent_runs` taken from
`Settings().max_concurrent` (SCALPING_MAX_CONCURRENT, default: the CPU cores) unless the YAML sets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._serdes import ConfigurableClassData

from scalping_assets.settings import Settings


class SettingsRunCoordinator(QueuedRunCoordinator):
    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> SettingsRunCoordinator:
        limit = config_value.get("max_concurrent_runs") or Settings().max_concurrent
        return super().from_config_value(inst_data, {**config_value, "max_concurrent_runs": limit})
