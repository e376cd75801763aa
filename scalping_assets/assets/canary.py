"""`canary_sensor`: every minute, one evaluation of each running canary (`trading.canary`) against the
live checks: the service's error rate and p99 for the challenger (its /metrics), the challenger's paper
P&L within its backtest band (the journal's challenger book), and no monitoring check failed since the
step began. A breach rolls back and sends one alert; a step that held moves on; the last completes.

The canary's state is the registry's; the sensor's cursor keeps only each canary's metrics baseline
(the service's counters at the step's first look), so that a step is judged on its own requests.
"""

import json
from dataclasses import dataclass

import dagster as dg

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


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def canary_sensor(context: dg.SensorEvaluationContext, mlflow_store: MLflowResource, paper_journal: PaperJournalResource):
    """One evaluation of every running canary: roll back on a breach (one alert), step up after a step
    held, crown the challenger after the last."""
    settings = Settings()
    tracker = mlflow_store.tracker()
    baselines = json.loads(context.cursor or "{}")
    said = []
    for name in tracker.models_with_alias(CHALLENGER):
        state = read_canary(tracker, name)
        if state is None or not state.running:
            continue
        service = ServiceMetricsCheck(settings.service_url, settings.api_key, state.config)
        service.restore(baselines.get(name))
        checks = [service, FailedChecks(context.instance, LIVE_CHECKS)]
        try:
            served = load_served_version(tracker, name, state.version)
            checks.append(PaperBandCheck(paper_journal.journal(CHALLENGER_BOOK), served))
        except MonitoringError as exc:  # no backtest figures: no band to hold it to, said once a tick
            context.log.warning(f"{name} v{state.version}: no paper band ({exc})")

        def alert(text: str, name: str = name, version: str = state.version) -> None:
            context.log.warning(text)
            if settings.alert_webhook_url is None:
                return
            title = f"Canary of {name} v{version} rolled back"
            try:
                send(settings.alert_webhook_url, Alert(status="failing", title=title, text=text))
            except AlertDeliveryError as exc:  # the rollback stands; the run log keeps the reason
                context.log.error(f"the rollback alert was not delivered: {exc}")

        try:
            after = CanaryController(tracker, name, state.config, checks, alert, traffic=service).step()
        except MetricsUnavailable as exc:  # neither a breach nor a hold can be judged: the next tick looks again
            said.append(f"{name} v{state.version}: not judged, {exc}")
            continue
        baselines[name] = service.baseline() if after.running else None
        said.append(f"{name} v{after.version}: {after.status} at {after.share:.0%}" + (f" ({after.why})" if after.why else ""))
    baselines = {k: v for k, v in baselines.items() if v is not None}
    return dg.SensorResult(cursor=json.dumps(baselines), skip_reason="; ".join(said) or "no canary running")


CANARY_SENSORS = [canary_sensor]
