"""Monitoring automation (issue 17): an alert per incident (a failed check, a failed run, a retrain's
gate decision) and retraining on a failed drift or degradation check, or weekly.

Both sensors read the runs that *ended* since their cursor (run-end events, a public API that reads the
event log's cross-run index on SQLite as on PostgreSQL) and then each run's own check evaluations: a
failed non-blocking check does not fail its run, so the checks are watched themselves. A check is
therefore reported when its run ends, and a check reported outside any run is not watched.
"""

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from scalping_assets.features.daily import FrameStore
from scalping_assets.market.store import TickStore
from scalping_assets.monitoring.alerts import Alert, AlertDeliveryError, AlertState, Observation, send, split_day
from scalping_assets.partitions import DATASETS
from scalping_assets.records import DatasetRecord, GateRecord, PredictionLogRecord, RecordStore
from scalping_assets.resources import FrameStoreResource, RecordIOManager, TickStoreResource
from scalping_assets.settings import Settings

RETRAIN_CHECKS = ("drift_share_within_threshold", "no_significant_degradation")
RETRAIN_TAG = "scalping/retrain"  # what asked for it: the failed check's name, or "weekly"
RETRAIN_SOURCE_TAG = "scalping/retrain_source"  # the served champion's dataset, whose recipe it repeats
RETRAIN_DAYS_TAG = "scalping/retrain_days"
RETRAIN_SELECTION = dg.AssetSelection.assets("training_dataset") | dg.AssetSelection.groups("models", "evaluation")
_RUN_ENDS = (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_CANCELED)
_RUN_EVENTS = {
    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
    dg.DagsterEventType.ASSET_MATERIALIZATION,
    dg.DagsterEventType.STEP_FAILURE,
}
_RUNS_PER_TICK = 50  # a backlog is read over several ticks, each short
CHAMPION_KEY = dg.AssetKey("champion")
_CHAMPIONS_SCANNED = 100  # newest `champion` materializations searched for the served one

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=RETRAIN_SELECTION,
    description="Retrain on the last collected days: dataset, models, backtests and the gate, for one "
    "`rolling-<last day>` dataset; champion_promoted_sensor exports a promoted champion.",
)


@dataclass(frozen=True)
class EndedRun:
    """A run of this code location that ended, with its check evaluations, materializations and step failures."""

    storage_id: int  # of its run-end event
    run: dg.DagsterRun
    status: dg.DagsterEventType
    at: datetime
    message: str  # the run-end event's
    events: Sequence[dg.EventLogRecord]

    @property
    def partition(self) -> str | None:
        return self.run.tags.get("dagster/partition")

    def checks(self) -> list[dg.AssetCheckEvaluation]:
        return [
            e.event_log_entry.dagster_event.event_specific_data
            for e in self.events
            if e.event_log_entry.dagster_event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ]

    def failure(self) -> str:
        """What went wrong: the first failed step's error (a `dg.Failure`'s description, else the
        innermost exception), or the run-end message."""
        for e in self.events:
            if e.event_log_entry.dagster_event_type != dg.DagsterEventType.STEP_FAILURE:
                continue
            data = e.event_log_entry.dagster_event.event_specific_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                return f"{e.event_log_entry.step_key}: {data.user_failure_data.description}"
            error = data.error
            while error is not None and error.cause is not None:
                error = error.cause
            if error is not None:
                return f"{e.event_log_entry.step_key}: {error.message.strip()}"[:1000]
        return self.message


def _in_location(context: dg.SensorEvaluationContext, job_name: str) -> bool:
    # Several code locations may share an instance: each watches its own jobs.
    return context.repository_def is None or context.repository_def.has_job(job_name)


def _last_run_end(instance: dg.DagsterInstance) -> int:
    """Storage id of the newest run-end event: where a sensor without a cursor starts (history is not replayed)."""
    newest = [instance.fetch_run_status_changes(t, limit=1, ascending=False).records for t in _RUN_ENDS]
    return max((page[0].storage_id for page in newest if page), default=0)


def ended_runs(context: dg.SensorEvaluationContext, after: int) -> tuple[list[EndedRun], int]:
    """This code location's runs that ended after storage id `after`, in the order they ended (at most
    `_RUNS_PER_TICK` per kind), and the storage id through which run ends have been read."""
    instance, records, through = context.instance, [], None
    for event_type in _RUN_ENDS:
        page = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type, after_storage_id=after), limit=_RUNS_PER_TICK, ascending=True
        ).records
        records.extend(page)
        if len(page) == _RUNS_PER_TICK:  # more of this kind remain: read the other kinds no further
            through = min(through or page[-1].storage_id, page[-1].storage_id)
    records = sorted((r for r in records if through is None or r.storage_id <= through), key=lambda r: r.storage_id)
    if through is None:
        through = max((r.storage_id for r in records), default=after)
    ended = []
    for record in records:
        run = instance.get_run_by_id(record.run_id)
        if run is None or not _in_location(context, run.job_name):
            continue
        event = record.event_log_entry
        ended.append(
            EndedRun(
                storage_id=record.storage_id,
                run=run,
                status=event.dagster_event_type,
                at=datetime.fromtimestamp(event.timestamp, UTC),
                message=event.dagster_event.message or "",
                events=instance.get_records_for_run(record.run_id, of_type=_RUN_EVENTS).records,
            )
        )
    return ended, through


def _subject(name: str, partition: str | None) -> tuple[str, str | None]:
    rest, day = split_day(partition)
    return (f"{name} [{rest}]" if rest else name), day


def alert_items(ended: EndedRun, records: RecordStore) -> list[Observation | Alert]:
    """What one ended run tells the alert channel, in order: each check's verdict, the run's own
    outcome (a success closes its job's incident), and a retrain's gate decision."""
    run, items = ended.run, []
    for check in ended.checks():
        partition = check.partition or ended.partition
        asset = check.asset_key.to_user_string()
        subject, day = _subject(f"{check.check_name} on {asset}", partition)
        fields = {"asset": asset, "check": check.check_name, "partition": partition or "none"}
        fields |= {"severity": check.severity.value, "job": run.job_name, "run": run.run_id}
        items.append(
            Observation(
                kind="check",
                subject=subject,
                failing=not check.passed,
                day=day,
                at=ended.at,
                text=check.description or "",
                fields=fields,
            )
        )
    if ended.status in (dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_SUCCESS):
        failed = ended.status == dg.DagsterEventType.RUN_FAILURE
        subject, day = _subject(run.job_name, ended.partition)
        fields = {"job": run.job_name, "partition": ended.partition or "none", "run": run.run_id}
        text = ended.failure() if failed else "a run of it succeeded"
        items.append(Observation(kind="run", subject=subject, failing=failed, day=day, at=ended.at, text=text, fields=fields))
    outcome = retrain_outcome(ended, records)
    return items + ([outcome] if outcome else [])


def retrain_outcome(ended: EndedRun, records: RecordStore) -> Alert | None:
    """A retrain that ended: whether its gate promoted a candidate or kept the champion, and why (its
    `GateRecord`)."""
    trigger = ended.run.tags.get(RETRAIN_TAG)
    if trigger is None or ended.status != dg.DagsterEventType.RUN_SUCCESS:
        return None  # a failed retrain is a failed run: its incident says so
    gated = any(e.asset_key == CHAMPION_KEY and e.asset_materialization for e in ended.events)
    if not gated or ended.partition is None:
        return None
    gate, dataset = records.load(["champion", ended.partition], GateRecord), ended.partition
    model = gate.registered_model
    title = (
        f"Retrain {dataset} promoted {model} v{gate.champion}"
        if gate.promoted
        else f"Retrain {dataset}: every candidate failed the gate, the champion of {model} stays"
    )
    fields = {"trigger": trigger, "dataset": dataset or "none", "days": ended.run.tags.get(RETRAIN_DAYS_TAG, "?")}
    fields |= {"recipe from": ended.run.tags.get(RETRAIN_SOURCE_TAG, "?"), "run": ended.run.run_id}
    return Alert(status="notice", title=title, text=gate.message, fields=fields)


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def alert_sensor(context: dg.SensorEvaluationContext, records: dg.ResourceParam[RecordIOManager]):
    """One message per incident to the webhook in SCALPING_ALERT_WEBHOOK_URL: every asset check of the
    code location and every failed run, and each retrain's gate decision. The cursor holds the open
    incidents; a message the webhook did not take is retried on the next tick."""
    url = Settings().alert_webhook_url
    if url is None:
        return dg.SkipReason("no webhook: set SCALPING_ALERT_WEBHOOK_URL to a Slack-compatible incoming webhook URL")
    if context.cursor is None:
        start = AlertState(after=_last_run_end(context.instance))
        return dg.SensorResult(cursor=start.dump(), skip_reason="started: watching the runs that end from now on")
    state = AlertState.parse(context.cursor)
    ended, through = ended_runs(context, state.after)
    sent = 0
    for run in ended:
        items = alert_items(run, records.store())
        first = state.delivered if state.pending_run == run.run.run_id else 0
        for index in range(first, len(items)):
            trial = state.model_copy(deep=True)
            item = items[index]
            alert = trial.incidents.observe(item) if isinstance(item, Observation) else item
            if alert is not None:
                try:
                    send(url, alert)
                except AlertDeliveryError as exc:
                    state.pending_run, state.delivered = run.run.run_id, index
                    context.log.warning(f"{exc}; retried on the next tick")
                    return dg.SensorResult(cursor=state.dump(), skip_reason=f"{sent} alert(s) sent, then {exc}")
                sent += 1
            state = trial
        state.after, state.pending_run, state.delivered = run.storage_id, None, 0
    state.after = max(state.after, through)
    summary = f"{len(ended)} ended run(s) read, {sent} alert(s) sent, {len(state.incidents.open)} incident(s) open"
    context.log.info(summary)
    return dg.SensorResult(cursor=state.dump(), skip_reason=None if sent else summary)


@dataclass(frozen=True)
class RetrainPlan:
    partition: str
    request: dg.RunRequest


def collected_window(ticks: TickStore, features: FrameStore, symbols: Sequence[str], days: int) -> list[date]:
    """The last `days` days stored for every symbol with their features materialized, oldest first.
    A gap inside the window fails the dataset, which names the missing days (and alert_sensor says so)."""
    common = set.intersection(*(set(ticks.days(s)) for s in symbols)) if symbols else set()
    complete = sorted(d for d in common if not any(features.missing(s, [d]) for s in symbols))
    return complete[-days:]


def _served_dataset(instance: dg.DagsterInstance, records: RecordStore) -> str | None:
    """The dataset of the newest gate decision that promoted a champion (of SCALPING_MODEL, when set):
    what is served. The decisions are the gate's records, newest materialization first."""
    model = Settings().model
    seen = set()
    for materialization in instance.fetch_materializations(CHAMPION_KEY, limit=_CHAMPIONS_SCANNED).records:
        dataset = materialization.partition_key
        if dataset is None or dataset in seen or not records.exists(["champion", dataset]):
            continue
        seen.add(dataset)
        gate = records.load(["champion", dataset], GateRecord)
        if gate.promoted and model in ("", gate.registered_model):
            return dataset
    return None


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    return records[0] if records else None


def _recipe(instance: dg.DagsterInstance, keys: set[dg.AssetKey], source: str) -> dict[str, dict]:
    """The op config the runs that made `source`'s dataset, models and gate ran with: a retrain repeats
    the served model's recipe (labels, horizon, epochs, gate criteria) on newer days."""
    runs = {r.run_id: r.storage_id for r in (_latest(instance, key, source) for key in keys) if r is not None}
    ops: dict[str, dict] = {}
    for run_id in sorted(runs, key=runs.__getitem__):  # a newer run's config wins
        run = instance.get_run_by_id(run_id)
        ops |= (run.run_config.get("ops") or {}) if run else {}
    names = {key.to_python_identifier() for key in keys}
    return {op: copy.deepcopy(config) for op, config in ops.items() if op in names}


def retrain_plan(
    instance: dg.DagsterInstance,
    repository: dg.RepositoryDefinition | None,
    tick_store: TickStoreResource,
    feature_store: FrameStoreResource,
    records: RecordStore,
    trigger: str,
) -> RetrainPlan | dg.SkipReason:
    """A `retrain_job` run of a new `rolling-<last day>` dataset: the served champion's recipe on the
    last SCALPING_RETRAIN_DAYS days collected for its symbols."""
    if repository is None:
        raise dg.DagsterInvariantViolationError("retrain needs its code location: build the context with definitions=")
    source = _served_dataset(instance, records)
    if source is None:
        return dg.SkipReason("no champion has been promoted: nothing is served, so nothing to retrain")
    if not records.exists(["training_dataset", source]):
        return dg.SkipReason(f"the served champion's dataset {source} has no record: materialize training_dataset {source}")
    symbols = records.load(["training_dataset", source], DatasetRecord).symbols
    days = Settings().retrain_days
    window = collected_window(tick_store.store(), feature_store.store(), symbols, days)
    if not window:
        return dg.SkipReason(f"no day has ticks and features of every one of {', '.join(symbols)}")
    partition = f"rolling-{window[-1]}"
    if instance.has_dynamic_partition(DATASETS.name, partition):
        return dg.SkipReason(
            f"dataset {partition} exists: the retrain up to {window[-1]} was requested already (re-execute its run to repeat it)"
        )
    ops = _recipe(instance, RETRAIN_SELECTION.resolve(repository.asset_graph), source)
    dataset_op = ops.setdefault("training_dataset", {})
    dataset_op["config"] = {
        **(dataset_op.get("config") or {}),
        "symbols": symbols,
        "start": str(window[0]),
        "end": str(window[-1]),
    }
    tags = {
        RETRAIN_TAG: trigger,
        RETRAIN_SOURCE_TAG: source,
        RETRAIN_DAYS_TAG: f"{window[0]}..{window[-1]} ({len(window)} of {days})",
    }
    return RetrainPlan(partition, dg.RunRequest(run_key=partition, partition_key=partition, run_config={"ops": ops}, tags=tags))


def _after(cursor: str) -> int:
    try:
        return int(json.loads(cursor)["after"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"retrain sensor cursor {cursor!r} has no integer `after`; reset the sensor's cursor") from exc


@dg.sensor(job=retrain_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def retrain_sensor(
    context: dg.SensorEvaluationContext,
    tick_store: TickStoreResource,
    feature_store: FrameStoreResource,
    records: dg.ResourceParam[RecordIOManager],  # an I/O manager: a plain sensor takes it as a raw resource
):
    """Retrain when a drift_share_within_threshold or no_significant_degradation check fails: one
    `retrain_job` run per window of collected days, whatever the number of failures."""
    if context.cursor is None:
        start = json.dumps({"after": _last_run_end(context.instance)})
        return dg.SensorResult(cursor=start, skip_reason="started: watching the runs that end from now on")
    ended, through = ended_runs(context, _after(context.cursor))
    cursor = json.dumps({"after": through})
    failed = [c for run in ended for c in run.checks() if c.check_name in RETRAIN_CHECKS and not c.passed]
    if not failed:
        return dg.SensorResult(cursor=cursor, skip_reason=f"no failed {' or '.join(RETRAIN_CHECKS)} in {len(ended)} ended run(s)")
    trigger = failed[0].check_name
    plan = retrain_plan(context.instance, context.repository_def, tick_store, feature_store, records.store(), trigger)
    if isinstance(plan, dg.SkipReason):
        return dg.SensorResult(cursor=cursor, skip_reason=f"{trigger} failed, but {plan.skip_message}")
    context.log.info(f"{trigger} failed on {failed[0].asset_key.to_user_string()}: retraining as {plan.partition}")
    add = DATASETS.build_add_request([plan.partition])
    return dg.SensorResult(run_requests=[plan.request], dynamic_partitions_requests=[add], cursor=cursor)


@dg.schedule(
    job=retrain_job, cron_schedule="0 3 * * 1", execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED
)
def weekly_retrain_schedule(
    context: dg.ScheduleEvaluationContext,
    tick_store: TickStoreResource,
    feature_store: FrameStoreResource,
    records: dg.ResourceParam[RecordIOManager],  # an I/O manager: a plain sensor takes it as a raw resource
):
    """Mondays 03:00 UTC: the same retrain as retrain_sensor's, drift or not."""
    plan = retrain_plan(context.instance, context.repository_def, tick_store, feature_store, records.store(), "weekly")
    if isinstance(plan, dg.SkipReason):
        return plan
    # A schedule cannot carry dynamic-partition requests (a sensor's SensorResult can): it adds the
    # dataset itself, which then also tells retrain_sensor this window was requested.
    context.instance.add_dynamic_partitions(DATASETS.name, [plan.partition])
    return plan.request


# -- the day's monitoring: the prediction log, then live performance of every version that answered ----

monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=dg.AssetSelection.assets("prediction_log", "drift_report"),
    description="One UTC day of the service's prediction log consolidated, and its drift report.",
)
live_job = dg.define_asset_job(
    "live_job",
    selection=dg.AssetSelection.assets("live_performance"),
    description="One day of one served model version: its predictions resolved and traded, beside its backtest.",
)


@dg.schedule(
    job=monitoring_job, cron_schedule="30 0 * * *", execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED
)
def daily_monitoring_schedule(context: dg.ScheduleEvaluationContext):
    """At 00:30 UTC: the day that just ended (the service's log files of that day are closed by then).
    With SCALPING_TICK_SOURCE=deriv, collected_days_sensor requests a day's monitoring once the
    collector completed it instead."""
    if Settings().tick_source == "deriv":
        return dg.SkipReason("SCALPING_TICK_SOURCE is deriv: collected_days_sensor runs each collected day's monitoring")
    day = context.scheduled_execution_time.astimezone(UTC).date() - timedelta(days=1)
    return dg.RunRequest(run_key=f"monitoring:{day}", partition_key=day.isoformat())


@dg.asset_sensor(asset_key=dg.AssetKey("prediction_log"), job=live_job, default_status=dg.DefaultSensorStatus.STOPPED)
def live_performance_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry, records: RecordIOManager):
    """Live performance of every model version that answered on the day just consolidated (the
    prediction log added them to the `served` partitions)."""
    day = asset_event.dagster_event.partition
    log = records.store().load(records.key(asset_event.dagster_event.asset_key, day), PredictionLogRecord)
    if not log.models:
        return dg.SkipReason(f"no model answered on {day}: nothing to judge")
    return [
        dg.RunRequest(run_key=f"live:{day}:{served}", partition_key=dg.MultiPartitionKey({"date": day, "served": served}))
        for served in log.models
    ]


MONITORING_JOBS = [retrain_job, monitoring_job, live_job]
MONITORING_SENSORS = [alert_sensor, retrain_sensor, live_performance_sensor]
MONITORING_SCHEDULES = [weekly_retrain_schedule, daily_monitoring_schedule]
