"""Alerts and retraining (issue 17): one webhook message per incident across repeated failures, its
resolution, failed runs, a retrain's gate decision, the webhook URL kept secret; a failed drift check
(or the weekly schedule) requests a retrain of the served recipe on the last collected days.

The sensors read real runs on a test instance: tiny assets whose checks and failures the tests decide.
"""

import logging
import tempfile
import traceback
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from scalping_assets.automation import (
    MONITORING_JOBS,
    MONITORING_SCHEDULES,
    MONITORING_SENSORS,
    RETRAIN_DAYS_TAG,
    RETRAIN_SOURCE_TAG,
    RETRAIN_TAG,
    alert_sensor,
    retrain_job,
    retrain_sensor,
    weekly_retrain_schedule,
)
from scalping_assets.definitions import ASSETS, build_resources
from scalping_assets.monitoring.alerts import (
    Alert,
    AlertDeliveryError,
    AlertState,
    IncidentBook,
    Observation,
    send,
    split_day,
)
from scalping_assets.partitions import DATASETS
from scalping_assets.records import DatasetRecord, GateRecord
from scalping_assets.resources import RecordIOManager
from scalping_assets.settings import Settings
from scalping_assets.testing.server_process import free_port
from scalping_assets.testing.webhook import WebhookReceiver

# What the tests decide: each check's verdict, whether `flaky` fails.
VERDICT: dict[str, bool] = {}


@dg.asset
def watched() -> int:
    return 1


@dg.asset_check(asset=watched)  # not blocking: its failure does not fail the run
def watched_ok() -> dg.AssetCheckResult:
    passed = VERDICT.get("watched_ok", True)
    return dg.AssetCheckResult(passed=passed, description="share 0.10 <= 0.30" if passed else "share 0.40 > 0.30")


@dg.asset_check(asset=watched)
def watched_fresh() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=VERDICT.get("watched_fresh", True))


@dg.asset
def flaky() -> int:
    if VERDICT.get("broken"):
        raise dg.Failure("the feed is down")
    return 1


def _gate(promoted: bool, model: str, message: str = "") -> GateRecord:
    return GateRecord(registered_model=model, promoted=promoted, champion="3", previous=None, challenger=None,
                      failures={}, cleared={}, message=message)  # fmt: skip


@dg.asset(key="champion", partitions_def=DATASETS, io_manager_key="records")
def gate_standin() -> GateRecord:
    return _gate(False, "scalping-R_100-h5", "kept v3: no candidate cleared the gate (win rate 0.51 <= 0.65)")


@dg.asset(key="drift_standin")
def drift_standin() -> int:
    return 1


@dg.asset_check(asset=drift_standin, name="drift_share_within_threshold")
def drift_check() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=VERDICT.get("drift", True))


ALERT_DEFS = dg.Definitions(
    assets=[watched, flaky, gate_standin],
    asset_checks=[watched_ok, watched_fresh],
    jobs=[
        dg.define_asset_job("watch_job", selection=[watched]),
        dg.define_asset_job("flaky_job", selection=[flaky]),
        dg.define_asset_job("gate_job", selection=[gate_standin]),
    ],
    sensors=[alert_sensor],
    resources={"records": RecordIOManager(root=tempfile.mkdtemp(prefix="alert-records-"))},  # the gate's decisions
)


@pytest.fixture(autouse=True)
def _verdicts():
    VERDICT.clear()
    yield
    VERDICT.clear()


@pytest.fixture
def hook(monkeypatch):
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("SCALPING_ALERT_WEBHOOK_URL", receiver.url)
        yield receiver


def _run(instance, job: str, defs=ALERT_DEFS, **kwargs) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False, **kwargs)


class AlertTicks:
    """Evaluates alert_sensor tick after tick on one instance, carrying the cursor as the daemon does."""

    def __init__(self, instance):
        self.instance, self.cursor = instance, None
        self.tick()  # the first tick starts watching from now

    def tick(self):
        result = alert_sensor(
            dg.build_sensor_context(
                instance=self.instance, cursor=self.cursor, definitions=ALERT_DEFS, resources=ALERT_DEFS.resources
            )
        )
        self.cursor = result.cursor if isinstance(result, dg.SensorResult) and result.cursor else self.cursor
        return result


def test_one_message_per_incident_then_resolved(hook):
    with dg.instance_for_test() as instance:
        ticks = AlertTicks(instance)
        VERDICT["watched_ok"] = False
        for _ in range(2):
            assert _run(instance, "watch_job").success  # a failed non-blocking check: the run succeeds
        ticks.tick()
        assert len(hook.bodies) == 1
        body = hook.bodies[0]
        assert body["text"].startswith("Check failing: watched_ok on watched")
        assert "share 0.40 &gt; 0.30" in body["text"]  # escaped for mrkdwn
        assert {"type": "mrkdwn", "text": "*check*\nwatched_ok"} in body["blocks"][1]["fields"]

        _run(instance, "watch_job")
        ticks.tick()
        assert len(hook.bodies) == 1, "a further failure of an open incident sends nothing"

        VERDICT["watched_ok"] = True
        _run(instance, "watch_job")
        ticks.tick()
        assert len(hook.bodies) == 2
        resolved = hook.bodies[1]["text"]
        assert resolved.startswith("Resolved: check watched_ok on watched") and "share 0.10" in resolved
        assert {"type": "mrkdwn", "text": "*failed evaluations*\n3"} in hook.bodies[1]["blocks"][1]["fields"]
        _run(instance, "watch_job")
        ticks.tick()
        assert len(hook.bodies) == 2, "a pass with no incident open says nothing"

        VERDICT["watched_ok"] = False
        _run(instance, "watch_job")
        ticks.tick()
        assert len(hook.bodies) == 3 and hook.bodies[2]["text"].startswith("Check failing: watched_ok")


def test_failed_run_alerts_once_and_recovers(hook):
    with dg.instance_for_test() as instance:
        ticks = AlertTicks(instance)
        VERDICT["broken"] = True
        assert not _run(instance, "flaky_job").success
        assert not _run(instance, "flaky_job").success
        ticks.tick()
        assert [b["text"].splitlines()[0] for b in hook.bodies] == ["Run failing: flaky_job"]
        assert "the feed is down" in hook.bodies[0]["text"]
        VERDICT["broken"] = False
        assert _run(instance, "flaky_job").success
        _run(instance, "watch_job")  # another job's success closes nothing of flaky_job's
        ticks.tick()
        assert [b["text"].splitlines()[0] for b in hook.bodies[1:]] == ["Resolved: run flaky_job"]


def test_retrain_gate_keeping_the_champion_says_so(hook):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(DATASETS.name, ["rolling-2026-01-07", "default"])
        ticks = AlertTicks(instance)
        _run(instance, "gate_job", partition_key="default")  # not a retrain: the gate's usual decision is no alert
        tags = {RETRAIN_TAG: "drift_share_within_threshold", RETRAIN_DAYS_TAG: "2026-01-01..2026-01-07 (7 of 7)"}
        assert _run(instance, "gate_job", partition_key="rolling-2026-01-07", tags=tags).success
        ticks.tick()
        assert len(hook.bodies) == 1
        text = hook.bodies[0]["text"]
        assert text.startswith(
            "Retrain rolling-2026-01-07: every candidate failed the gate, the champion of scalping-R_100-h5 stays"
        )
        assert "kept v3: no candidate cleared the gate" in text
        assert {"type": "mrkdwn", "text": "*trigger*\ndrift_share_within_threshold"} in hook.bodies[0]["blocks"][1]["fields"]


def test_no_webhook_skips_without_error(monkeypatch):
    monkeypatch.delenv("SCALPING_ALERT_WEBHOOK_URL", raising=False)
    with dg.instance_for_test() as instance:
        result = alert_sensor(dg.build_sensor_context(instance=instance, definitions=ALERT_DEFS, resources=ALERT_DEFS.resources))
    assert isinstance(result, dg.SkipReason) and "SCALPING_ALERT_WEBHOOK_URL" in result.skip_message


def test_undelivered_alert_is_retried_not_repeated_and_the_url_never_leaks(hook, caplog):
    caplog.set_level(logging.DEBUG)
    with dg.instance_for_test() as instance:
        ticks = AlertTicks(instance)
        VERDICT["watched_ok"] = VERDICT["watched_fresh"] = False
        _run(instance, "watch_job")
        hook.answer_next(200, 500, 500, 500)  # the first incident gets through, the second does not
        failed = ticks.tick()
        assert len(hook.bodies) == 1
        assert "1 alert(s) sent, then alert not delivered after 3 attempt(s)" in failed.skip_reason.skip_message
        assert "500" in failed.skip_reason.skip_message
        ticks.tick()
        texts = sorted(b["text"].splitlines()[0] for b in hook.bodies)
        assert texts == ["Check failing: watched_fresh on watched", "Check failing: watched_ok on watched"]
        leaks = [failed.skip_reason.skip_message, ticks.cursor, caplog.text, repr(Settings())]
    assert hook.requests == 5  # 1 + 3 attempts, then the retry
    assert "HTTP Request: POST <webhook>" in caplog.text  # httpx's request line, redacted
    assert not any(hook.token in text for text in leaks)


def test_send_errors_never_name_the_url(hook, monkeypatch):
    hook.answer_next(404)
    with pytest.raises(AlertDeliveryError) as refused:
        send(hook.url, Alert(status="notice", title="t"), backoff_s=0)
    assert "404" in str(refused.value) and hook.requests == 1  # a 4xx is not retried
    closed = f"http://127.0.0.1:{free_port()}/services/{hook.token}"  # nothing listens there
    with pytest.raises(AlertDeliveryError) as unreachable:
        send(closed, Alert(status="notice", title="t"), attempts=2, backoff_s=0)
    for exc in (refused.value, unreachable.value):
        assert hook.token not in "".join(traceback.format_exception(exc))
    monkeypatch.setenv("SCALPING_ALERT_WEBHOOK_URL", f"ftp://example/{hook.token}")
    with pytest.raises(AlertDeliveryError, match="not an http:// or https:// URL") as scheme:
        send(Settings().alert_webhook_url, Alert(status="notice", title="t"))
    assert hook.token not in str(scheme.value) and hook.token not in repr(Settings())


def test_incidents_by_subject_with_the_day_left_out():
    assert split_day("2026-01-05|R_100") == ("R_100", "2026-01-05")
    assert split_day("2026-01-05") == ("", "2026-01-05")
    assert split_day("rolling-2026-01-05") == ("rolling-2026-01-05", None)
    assert split_day(None) == ("", None)
    at = datetime(2026, 1, 6, tzinfo=UTC)

    def seen(failing: bool, day: str) -> Observation:
        return Observation(kind="check", subject="drift on drift_report", failing=failing, day=day, at=at)

    book = IncidentBook()
    assert book.observe(seen(True, "2026-01-05")).status == "failing"
    assert book.observe(seen(True, "2026-01-06")) is None  # drift persisting: the same incident
    assert book.observe(seen(False, "2026-01-04")) is None  # a backfill of an older day closes nothing
    resolved = book.observe(seen(False, "2026-01-07"))
    assert resolved.status == "resolved" and resolved.fields["failed evaluations"] == "2"
    state = AlertState(after=3, incidents=IncidentBook(open={}))
    assert AlertState.parse(state.dump()) == state
    with pytest.raises(ValueError, match="after"):
        AlertState.parse('{"incidents": {}}')


# Retraining. The served champion's history is made by stand-ins with the real asset keys; the sensor
# and schedule are evaluated against the real code location's assets (the real retrain_job).

SYMBOLS = ["R_100", "SIG_AR1"]
DAYS = [date(2026, 1, 2) + timedelta(days=i) for i in range(6)]  # 2026-01-02 .. 2026-01-07
DATASET_RECIPE = {"symbols": SYMBOLS, "sequence_length": 50, "walk_forward_folds": 2}


@dg.asset(
    key="training_dataset",
    partitions_def=DATASETS,
    io_manager_key="records",
    config_schema={"symbols": [str], "sequence_length": int, "walk_forward_folds": int},
)
def dataset_history() -> DatasetRecord:
    return DatasetRecord(name="default", path="", fingerprint="", symbols=SYMBOLS, start=DAYS[0], end=DAYS[-2],
                         rows={}, dropped={})  # fmt: skip


@dg.asset(key="champion", partitions_def=DATASETS, io_manager_key="records", config_schema={"min_trades": int})
def champion_history() -> GateRecord:
    return _gate(True, "scalping-R_100-SIG_AR1-h5")


@pytest.fixture
def location(tmp_path, monkeypatch):
    """The code location's assets with the monitoring jobs, data under tmp_path: ticks and features of
    both symbols on DAYS, but SIG_AR1's features of the last day not materialized; a promoted champion
    of dataset `default`, made with DATASET_RECIPE and min_trades 40."""
    monkeypatch.setenv("SCALPING_RETRAIN_DAYS", "3")
    for kind in ("ticks", "features"):
        for symbol in SYMBOLS:
            for day in DAYS if (kind, symbol) != ("features", "SIG_AR1") else DAYS[:-1]:
                path = tmp_path / kind / symbol / f"{day}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()  # the window reads which days are stored, not their rows
    defs = dg.Definitions(
        assets=[*ASSETS, drift_standin],
        asset_checks=[drift_check],
        jobs=[*MONITORING_JOBS, dg.define_asset_job("drift_job", selection=[drift_standin])],
        sensors=MONITORING_SENSORS,
        schedules=MONITORING_SCHEDULES,
        resources=build_resources(Settings(data_dir=tmp_path)),
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(DATASETS.name, ["default"])
        made = [
            dg.materialize(
                [asset],
                instance=instance,
                partition_key="default",
                run_config={"ops": {op: {"config": config}}},
                resources={"records": defs.resources["records"]},
            )
            for asset, op, config in (
                (dataset_history, "training_dataset", DATASET_RECIPE),
                (champion_history, "champion", {"min_trades": 40}),
            )
        ]
        assert all(result.success for result in made)
        yield defs, instance


def _retrain_tick(defs, instance, cursor):
    """One tick evaluated as the daemon does: the run request resolved against retrain_job's dataset
    partitions, counting those the tick itself adds (which needs the instance's ref)."""
    stores = {name: defs.resources[name] for name in ("tick_store", "feature_store", "records")}
    context = dg.build_sensor_context(
        instance=instance, instance_ref=instance.get_ref(), cursor=cursor, definitions=defs, resources=stores
    )
    return retrain_sensor.evaluate_tick(context)


def test_failed_drift_check_requests_a_retrain_of_the_served_recipe(location):
    defs, instance = location
    cursor = _retrain_tick(defs, instance, None).cursor
    _run(instance, "drift_job", defs=defs)  # passes
    passing = _retrain_tick(defs, instance, cursor)
    assert not passing.run_requests and "no failed drift_share_within_threshold" in passing.skip_message

    VERDICT["drift"] = False
    _run(instance, "drift_job", defs=defs)
    _run(instance, "drift_job", defs=defs)
    result = _retrain_tick(defs, instance, passing.cursor)
    window = DAYS[-4:-1]  # the last 3 days with ticks and features of both symbols
    partition = f"rolling-{window[-1]}"
    assert [r.partition_key for r in result.run_requests] == [partition]  # one retrain for two failures
    assert [list(r.partition_keys) for r in result.dynamic_partitions_requests] == [[partition]]
    request = result.run_requests[0]
    assert request.job_name in (None, "retrain_job") and request.run_key == partition
    assert request.tags["dagster/partition"] == partition
    ops = request.run_config["ops"]
    assert ops["training_dataset"]["config"] == {**DATASET_RECIPE, "start": str(window[0]), "end": str(window[-1])}
    assert ops["champion"]["config"] == {"min_trades": 40}
    assert request.tags[RETRAIN_TAG] == "drift_share_within_threshold" and request.tags[RETRAIN_SOURCE_TAG] == "default"
    dg.validate_run_config(defs.resolve_job_def(retrain_job.name), request.run_config)  # launchable as is

    instance.add_dynamic_partitions(DATASETS.name, [partition])  # what the daemon does with the request
    _run(instance, "drift_job", defs=defs)
    again = _retrain_tick(defs, instance, result.cursor)
    assert not again.run_requests and f"dataset {partition} exists" in again.skip_message


def test_weekly_schedule_requests_the_same_retrain(location):
    defs, instance = location
    context = dg.build_schedule_context(
        instance=instance,
        resources={name: defs.resources[name] for name in ("tick_store", "feature_store", "records")},
        repository_def=defs.get_repository_def(),
        scheduled_execution_time=datetime(2026, 1, 12, 3, tzinfo=UTC),
    )
    request = weekly_retrain_schedule(context)
    partition = f"rolling-{DAYS[-2]}"
    assert isinstance(request, dg.RunRequest) and request.partition_key == partition
    assert request.tags[RETRAIN_TAG] == "weekly"
    assert request.run_config["ops"]["training_dataset"]["config"]["start"] == str(DAYS[-4])
    assert instance.has_dynamic_partition(DATASETS.name, partition)  # a schedule adds the dataset itself
    assert isinstance(weekly_retrain_schedule(context), dg.SkipReason)
