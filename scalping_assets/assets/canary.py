"""`canary_sensor`: every minute, one evaluation of each running canary (`trading.canary`) against the
live checks: the service's error rate and p99 for the challenger (its /metrics), the challenger's paper
P&L within its backtest band (the journal's challenger book), and no monitoring check failed since the
step began. A breach rolls back and sends one alert; a step that held moves on; the last completes.

The canary's state is the registry's; the sensor's cursor keeps only each canary's metrics baseline
(the service's counters at the step's first look), so that a step is judged on its own requests, and
any rollback alert the webhook has not taken yet.
"""

from dataclasses import dataclass

import dagster as dg
from pydantic import BaseModel, Field

from scalping_assets.assets.drift import DRIFT_ASSETS
from scalping_assets.assets.monitoring import MONITORING_ASSETS, MONITORING_CHECKS
from scalping_assets.assets.trading import TRADING_ASSETS, PaperJournalResource
from scalping_assets.models.tracking import CHALLENGER
from scalping_assets.monitoring.alerts import Alert, AlertDeliveryError, send
from scalping_assets.monitoring.live import MonitoringError, load_served_version
from scalping_assets.resources import MLflowResource
from scalping_assets.settings import Settings
from scalping_assets.trading.canary import CanaryController, MetricsUnavailable, ServiceMetricsCheck
from scalping_assets.trading.canary_state import read_canary
from scalping_assets.trading.journal import CHALLENGER_BOOK
from scalping_assets.trading.paper_band import PaperBandCheck

# The live loop's checks: a failure of any during a step rolls the canary back.
LIVE_CHECKS = [
    dg.AssetCheckKey(a.key, spec.name) for a in [*MONITORING_ASSETS, *DRIFT_ASSETS, *TRADING_ASSETS] for spec in a.check_specs
]
LIVE_CHECKS += [key for check in MONITORING_CHECKS for key in check.check_keys]


@dataclass
class FailedChecks:
    """A canary check: no live-loop asset check evaluated as failed since the step began."""

    instance: dg.DagsterInstance
    keys: list[dg.AssetCheckKey]
    name: str = "monitoring checks"

    def breach(self, since: float) -> str | None:
        failed = []
        for key in self.keys:
            record = self.instance.get_latest_asset_check_evaluation_record(key)
            if record is None or record.create_timestamp < since or record.event is None:
                continue
            evaluation = record.event.dagster_event.event_specific_data
            if getattr(evaluation, "passed", True) is False:
                failed.append(f"{key.asset_key.to_user_string()}:{key.name}")
        return f"failed since the step began: {', '.join(failed)}" if failed else None


class CanaryCursor(BaseModel):
    """What the sensor keeps between ticks: each running canary's metrics baseline, and the rollback
    alerts the webhook did not take yet (retried every tick: the rollback itself already happened)."""

    baselines: dict[str, dict] = Field(default_factory=dict)
    pending: list[Alert] = Field(default_factory=list)


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def canary_sensor(context: dg.SensorEvaluationContext, mlflow_store: MLflowResource, paper_journal: PaperJournalResource):
    """One evaluation of every running canary: roll back on a breach (one alert), step up after a step
    held, crown the challenger after the last."""
    settings = Settings()
    tracker = mlflow_store.tracker()
    cursor = CanaryCursor.model_validate_json(context.cursor or "{}")
    said = []
    for name in tracker.models_with_alias(CHALLENGER):
        state = read_canary(tracker, name)
        if state is None or not state.running:
            continue
        service = ServiceMetricsCheck(settings.service_url, settings.api_key, state.config)
        service.restore(cursor.baselines.get(name))
        checks = [service, FailedChecks(context.instance, LIVE_CHECKS)]
        try:
            served = load_served_version(tracker, name, state.version)
            checks.append(PaperBandCheck(paper_journal.journal(CHALLENGER_BOOK), served))
        except MonitoringError as exc:  # no backtest figures: no band to hold it to, said once a tick
            context.log.warning(f"{name} v{state.version}: no paper band ({exc})")

        def alert(text: str, name: str = name, version: str = state.version) -> None:
            context.log.warning(text)
            cursor.pending.append(Alert(status="failing", title=f"Canary of {name} v{version} rolled back", text=text))

        try:
            after = CanaryController(tracker, name, state.config, checks, alert, traffic=service).step()
        except MetricsUnavailable as exc:  # neither a breach nor a hold can be judged: the next tick looks again
            said.append(f"{name} v{state.version}: not judged, {exc}")
            continue
        baseline = service.baseline() if after.running else None
        cursor.baselines = {k: v for k, v in (cursor.baselines | {name: baseline}).items() if v is not None}
        said.append(f"{name} v{after.version}: {after.status} at {after.share:.0%}" + (f" ({after.why})" if after.why else ""))
    said += _deliver(context, settings, cursor)
    return dg.SensorResult(cursor=cursor.model_dump_json(), skip_reason="; ".join(said) or "no canary running")


def _deliver(context: dg.SensorEvaluationContext, settings: Settings, cursor: CanaryCursor) -> list[str]:
    """Send the pending alerts in order; those the webhook does not take stay for the next tick."""
    if not cursor.pending:
        return []
    if settings.alert_webhook_url is None:
        cursor.pending = []  # no webhook: the run log has each (logged above)
        return []
    while cursor.pending:
        try:
            send(settings.alert_webhook_url, cursor.pending[0])
        except AlertDeliveryError as exc:
            context.log.error(f"a rollback alert was not delivered ({exc}); retried on the next tick")
            return [f"{len(cursor.pending)} alert(s) pending: {exc}"]
        cursor.pending.pop(0)
    return []


CANARY_SENSORS = [canary_sensor]
