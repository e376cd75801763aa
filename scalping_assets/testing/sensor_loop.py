"""The code location's sensors evaluated in this process, tick after tick, as `dagster-daemon` does.

Each tick evaluates every named sensor with the cursor its previous tick left, applies the dynamic
partitions it asks for, and launches each run request whose run key this sensor has not launched
before (the daemon's rule), tagged as the daemon tags a sensor's runs (`dagster/sensor_name`,
`dagster/run_key`), so the UI shows which sensor launched what. Runs are executed one after another
through the code location (`demo.Pipeline`), where the daemon would hand them to the run launcher.

`make live-demo` uses it to close the loop in minutes without a daemon's minimum intervals; a
deployment runs `dagster-daemon`, which evaluates the same sensors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from scalping_assets.demo import Outcome, Pipeline

SENSOR_TAG, RUN_KEY_TAG = "dagster/sensor_name", "dagster/run_key"


@dataclass
class Launched:
    sensor: str
    job: str
    partition: str
    outcome: Outcome


@dataclass
class SensorLoop:
    pipeline: Pipeline
    definitions: dg.Definitions
    sensors: list[str]
    cursors: dict[str, str | None] = field(default_factory=dict)
    launched: list[Launched] = field(default_factory=list)
    log_level: int = logging.INFO
    errors: dict[str, str] = field(default_factory=dict)  # sensor -> why its last failed tick failed

    def _launched_before(self, sensor: str, run_key: str) -> bool:
        tags = {SENSOR_TAG: sensor, RUN_KEY_TAG: run_key}
        return bool(self.pipeline.instance.get_run_records(dg.RunsFilter(tags=tags), limit=1))

    def tick(self, on_launch: Callable[[Launched], None] = lambda launched: None) -> list[Launched]:
        """One evaluation of every sensor, and the runs they requested, executed: what was launched."""
        now = []
        for name in self.sensors:
            sensor = self.definitions.resolve_sensor_def(name)
            context = dg.build_sensor_context(
                instance=self.pipeline.instance,
                # The ref lets the evaluation resolve dynamic partitions, those a sensor adds with its runs included.
                instance_ref=self.pipeline.instance.get_ref(),
                cursor=self.cursors.get(name),
                definitions=self.definitions,
                resources=self.definitions.resources,
                sensor_name=name,
            )
            context.log.setLevel(self.log_level)  # a sensor's lines per tick: the daemon keeps them in its tick logs
            try:
                data = sensor.evaluate_tick(context)
            except Exception as exc:  # the daemon records a failed tick and evaluates again next time
                self.errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            self.cursors[name] = data.cursor if data.cursor is not None else self.cursors.get(name)
            for request in data.dynamic_partitions_requests or []:
                if isinstance(request, dg.AddDynamicPartitionsRequest):
                    self.pipeline.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            for request in data.run_requests or []:
                if request.run_key is not None and self._launched_before(name, request.run_key):
                    continue
                job = request.job_name or sensor.job_name
                tags = {**request.tags, SENSOR_TAG: name, **({RUN_KEY_TAG: request.run_key} if request.run_key else {})}
                ops = (request.run_config or {}).get("ops", {})
                outcome = self.pipeline.execute(job, str(request.partition_key), ops, tags)
                launched = Launched(name, job, str(request.partition_key), outcome)
                self.launched.append(launched)
                now.append(launched)
                on_launch(launched)
        return now
