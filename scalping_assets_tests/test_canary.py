"""The canary rollout: its state machine on a real SQLite registry with the service's own metrics
exposed by prometheus_client, then against a real `bentoml serve` (two workers following the
registry every second): a failing challenger rolled back on its own at the first step with one
alert, and a healthy one stepped 10 % -> 50 % -> 100 % and crowned."""

import json
import math
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import numpy as np
import pytest
from prometheus_client import start_http_server
from pydantic import ValidationError

from scalping_assets.assets.canary import canary_sensor
from scalping_assets.assets.trading import PaperJournalResource
from scalping_assets.models.tracking import CHALLENGER, CHAMPION, PREVIOUS, Tracker
from scalping_assets.monitoring.alerts import Alert, send
from scalping_assets.resources import MLflowResource
from scalping_assets.testing.bentoml_server import bentoml_server
from scalping_assets.testing.degraded_bundle import register_degraded
from scalping_assets.testing.webhook import WebhookReceiver
from scalping_assets.trading.canary import (
    CanaryConfig,
    CanaryController,
    CanaryError,
    ServiceMetricsCheck,
    quantile,
    start_canary,
)
from scalping_assets.trading.canary_state import (
    CANARY_TAG,
    HISTORY_TAG,
    TAG_LIMIT,
    AliasEvent,
    CanaryStateError,
    alias_history,
    read_canary,
    record,
    routed_share,
)
from serving.metrics import INFERENCE_SECONDS, PREDICTION_ERRORS, PREDICTIONS
from serving.models import bucket

from .serving_helpers import SYMBOL

API_KEY = "canary-key-3a9e"
CLIENTS = [f"client-{i}" for i in range(300)]


# -- the state machine, no server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real SQLite registry and a function registering `n` versions of a fresh model name (an
    identity ONNX graph: the state machine never loads a model)."""
    import onnx
    from onnx import TensorProto, helper

    root = tmp_path_factory.mktemp("canary-registry")
    tracker = Tracker(f"sqlite:///{root}/mlflow.db", artifact_root=str(root / "artifacts"))
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 3]) for n in ("x", "y")]
    graph = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", io[:1], io[1:]))
    onnx.checker.check_model(graph)
    with tracker.run("identity") as run:
        uri = run.model("onnx", graph, "model", None, pip_requirements=["onnxruntime"])
    names = iter(range(1000))

    def versions(n: int) -> tuple[str, list[str]]:
        name = f"canary-unit-{next(names)}"
        return name, [tracker.register(uri, name, {}) for _ in range(n)]

    return tracker, versions


@pytest.fixture(scope="module")
def metrics_url():
    """The service's own counters (serving.metrics), exposed on loopback by prometheus_client as
    /metrics exposes them: the tests move them, the check scrapes them."""
    server, thread = start_http_server(0, addr="127.0.0.1")
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


class _Sensor:
    """Evaluates as a Dagster sensor does: a new check and controller each time, the metrics baseline
    kept between evaluations (in the sensor's cursor)."""

    def __init__(self, tracker, name, config, url, alert, clock):
        self.args, self.url, self.saved = (tracker, name, config), url, None
        self.alert, self.clock = alert, clock

    def step(self):
        check = ServiceMetricsCheck(self.url, "", self.args[2])
        check.restore(self.saved)
        state = CanaryController(*self.args, [check], self.alert, traffic=check, clock=self.clock).step()
        self.saved = check.baseline()
        return state


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "values, field, message",
    [
        ({"steps": [0.5, 0.1]}, "steps", "steps[1] = 0.1 follows 0.5"),
        ({"steps": [0.5, 0.5]}, "steps", "must increase"),
        ({"steps": []}, "steps", "at least 1 item"),
        ({"steps": [0.0, 1.0]}, "steps.0", "greater than 0"),
        ({"steps": [0.5, 1.5]}, "steps.1", "less than or equal to 1"),
        ({"hold_s": 0}, "hold_s", "greater than 0"),
        ({"max_error_rate": 1.5}, "max_error_rate", "less than or equal to 1"),
        ({"max_p99_ms": -1}, "max_p99_ms", "greater than 0"),
        ({"min_requests": 0}, "min_requests", "greater than or equal to 1"),
    ],
)
def test_config_errors_name_the_field(values, field, message):
    with pytest.raises(ValidationError) as caught:
        CanaryConfig(**values)
    (error,) = caught.value.errors()
    assert ".".join(map(str, error["loc"])) == field and message in str(caught.value)


def test_a_canary_needs_a_challenger_and_a_state_the_canary_wrote(registry):
    tracker, versions = registry
    name, (v1,) = versions(1)
    tracker.set_alias(name, CHAMPION, v1)
    with pytest.raises(CanaryError, match=f"{name} has no challenger alias"):
        start_canary(tracker, name, CanaryConfig())
    never = ServiceMetricsCheck("http://127.0.0.1:9", "", CanaryConfig())  # not reached: nothing to judge
    controller = CanaryController(tracker, name, CanaryConfig(), [never], lambda _: None, traffic=never)
    with pytest.raises(CanaryError, match=f"{name} has no canary"):
        controller.step()
    day = '"2026-01-01T00:00:00Z"'
    state = f'{{"version": "1", "champion": "1", "config": {{}}, "step": 0, "share": 2, "started": {day}, "step_started": {day}'
    tracker.set_model_tag(name, CANARY_TAG, state + ', "status": "running"}')
    with pytest.raises(CanaryStateError, match=f"{name}'s tag 'canary'.*share: Input should be less than or equal to 1"):
        read_canary(tracker, name)


def test_steps_wait_for_hold_and_min_requests_then_the_challenger_is_crowned(registry, metrics_url):
    tracker, versions = registry
    name, (v1, v2) = versions(2)
    tracker.set_alias(name, CHAMPION, v1)
    tracker.set_alias(name, CHALLENGER, v2)
    config = CanaryConfig(steps=[0.5, 1.0], hold_s=60, min_requests=10)
    clock, alerts = Clock(), []
    controller = _Sensor(tracker, name, config, metrics_url, alerts.append, clock)
    predicted = PREDICTIONS.labels(variant=CHALLENGER, version=v2)

    state = start_canary(tracker, name, config, clock)
    assert (state.status, state.step, state.share, state.version, state.champion) == ("running", 0, 0.5, v2, v1)
    assert start_canary(tracker, name, config, clock) == state  # starting twice is starting once
    assert routed_share(state, v2, static=0.2) == 0.5 and routed_share(state, "other", static=0.2) == 0.2
    assert controller.step() == state  # the step's first look: its metrics baseline
    predicted.inc(5)
    clock.now += 61
    assert controller.step() == state, "held long enough, but 5 < min_requests predictions"
    predicted.inc(5)
    state = controller.step()
    assert (state.step, state.share, state.step_started.timestamp()) == (1, 1.0, clock.now)
    assert controller.step() == state
    predicted.inc(50)
    clock.now += 30
    assert controller.step() == state, "enough predictions, not held long enough"
    clock.now += 31
    done = controller.step()
    assert (done.status, done.share, done.step) == ("completed", 0.0, 1) and "held 61 s with 50 requests" in done.why
    aliases = {a: tracker.alias_version(name, a) for a in (CHAMPION, PREVIOUS, CHALLENGER)}
    assert aliases == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}
    assert routed_share(done, v2, static=0.2) == 0.0, "an ended canary's version gets no static share"
    assert tracker.version_tags(name, v2)[CANARY_TAG].startswith("completed at")

    history = tracker.model_tag(name, HISTORY_TAG)
    predicted.inc(500)
    PREDICTION_ERRORS.labels(variant=CHALLENGER).inc(500)
    clock.now += 1_000
    assert controller.step() == done, "a completed canary is left alone"
    assert tracker.model_tag(name, HISTORY_TAG) == history and not alerts
    assert {a: tracker.alias_version(name, a) for a in (CHAMPION, PREVIOUS, CHALLENGER)} == aliases
    events = [(e.event, e.alias, e.version) for e in alias_history(tracker, name)]
    assert events == [
        ("started", CHALLENGER, v2),
        ("stepped", CHALLENGER, v2),
        ("alias set", PREVIOUS, v1),
        ("alias set", CHAMPION, v2),
        ("alias removed", CHALLENGER, v2),
        ("completed", CHAMPION, v2),
    ]


def test_a_breach_rolls_back_once_and_a_rolled_back_canary_is_left_alone(registry, metrics_url):
    tracker, versions = registry
    name, (v1, v2) = versions(2)
    tracker.set_alias(name, CHAMPION, v1)
    tracker.set_alias(name, CHALLENGER, v2)
    config = CanaryConfig(hold_s=60, min_requests=20)
    clock, alerts = Clock(), []
    check = ServiceMetricsCheck(metrics_url, "", config)
    controller = CanaryController(tracker, name, config, [check], alerts.append, traffic=check, clock=clock)
    start_canary(tracker, name, config, clock)
    assert controller.step().running
    PREDICTION_ERRORS.labels(variant=CHALLENGER).inc(15)
    clock.now += 5
    assert controller.step().running, "15 failures, but fewer than min_requests: nothing to judge yet"
    PREDICTIONS.labels(variant=CHALLENGER, version=v2).inc(5)
    state = controller.step()
    assert (state.status, state.share, state.step) == ("rolled_back", 0.0, 0)
    assert "service metrics: challenger error rate 75.0% (15 of 20 predictions this step)" in state.why
    assert tracker.alias_version(name, CHAMPION) == v1 and tracker.alias_version(name, CHALLENGER) is None
    assert "rolled back at" in tracker.version_tags(name, v2)[CANARY_TAG]
    for _ in range(3):
        clock.now += 3_600
        assert controller.step() == state
    (alert,) = alerts
    assert f"Canary of {name} v{v2} rolled back at step 1 of 3 (share 10%); champion v{v1} keeps serving" in alert
    assert [e.event for e in alias_history(tracker, name)] == ["started", "rolled back", "alias removed"]


def test_a_rollback_alert_the_webhook_refused_is_sent_on_the_next_sensor_tick(registry, metrics_url, monkeypatch):
    tracker, versions = registry
    name, (v1, v2) = versions(2)
    tracker.set_alias(name, CHAMPION, v1)
    tracker.set_alias(name, CHALLENGER, v2)
    monkeypatch.setenv("SCALPING_SERVICE_URL", metrics_url)
    monkeypatch.setenv("SCALPING_API_KEY", "")
    resources = {
        "mlflow_store": MLflowResource(tracking_uri=tracker.tracking_uri),
        "paper_journal": PaperJournalResource(url="sqlite://"),
    }
    cursor = None
    with WebhookReceiver() as hook, dg.instance_for_test() as instance:
        monkeypatch.setenv("SCALPING_ALERT_WEBHOOK_URL", hook.url)

        def tick() -> list[dict]:
            nonlocal cursor
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                cursor = canary_sensor(context).cursor
            return [a for a in json.loads(cursor)["pending"] if name in a["title"]]

        start_canary(tracker, name, CanaryConfig(hold_s=60, min_requests=20))
        assert tick() == []  # the step's baseline
        PREDICTION_ERRORS.labels(variant=CHALLENGER).inc(25)
        hook.answer_next(500, 500, 500)  # every attempt of this tick's delivery fails
        [pending] = tick()
        assert read_canary(tracker, name).status == "rolled_back", "the rollback does not wait for the alert"
        assert pending["title"] == f"Canary of {name} v{v2} rolled back" and hook.bodies == []
        assert tick() == []  # delivered on the next tick, once
        assert tick() == []
    assert [b["text"].splitlines()[0] for b in hook.bodies] == [pending["title"]]


def test_a_challenger_alias_moved_by_someone_else_ends_the_canary_and_stays_theirs(registry, metrics_url):
    tracker, versions = registry
    name, (v1, v2, v3) = versions(3)
    tracker.set_alias(name, CHAMPION, v1)
    tracker.set_alias(name, CHALLENGER, v2)
    config, alerts = CanaryConfig(), []
    check = ServiceMetricsCheck(metrics_url, "", config)
    controller = CanaryController(tracker, name, config, [check], alerts.append, traffic=check)
    start_canary(tracker, name, config)
    tracker.set_alias(name, CHALLENGER, v3)  # the gate named another challenger meanwhile
    state = controller.step()
    assert (state.status, state.share) == ("rolled_back", 0.0) and f"alias moved to v{v3} while v{v2}" in state.why
    assert tracker.alias_version(name, CHALLENGER) == v3 and routed_share(state, v3, static=0.2) == 0.2
    assert len(alerts) == 1 and [e.event for e in alias_history(tracker, name)] == ["started", "rolled back"]


def test_the_metrics_check_judges_the_step_from_counter_deltas(metrics_url):
    config = CanaryConfig(max_error_rate=0.05, max_p99_ms=50, min_requests=100)
    check = ServiceMetricsCheck(metrics_url, "", config)
    errors, seconds = (
        PREDICTION_ERRORS.labels(variant=CHALLENGER),
        INFERENCE_SECONDS.labels(endpoint="features", variant=CHALLENGER),
    )
    errors.inc(1_000)  # before the step: not its errors
    assert check.breach(since=1.0) is None and check.requests(since=1.0) == 0
    PREDICTIONS.labels(variant=CHALLENGER, version="9").inc(97)
    errors.inc(3)
    for _ in range(97):
        seconds.observe(0.002)
    assert check.requests(since=1.0) == 100 and check.breach(since=1.0) is None  # 3 % of errors, p99 under 5 ms
    PREDICTIONS.labels(variant=CHALLENGER, version="9").inc(3)
    for _ in range(3):
        seconds.observe(0.09)  # 3 of 100 successes in (50, 100] ms: the p99 is there
    assert "challenger p99 model time 83.3 ms over 100 requests > max_p99_ms 50" in check.breach(since=1.0)
    again = ServiceMetricsCheck(metrics_url, "", config)
    again.restore(check.baseline())  # what a sensor keeps in its cursor between evaluations
    assert again.requests(since=1.0) == 103 and "p99 model time 83.3 ms" in again.breach(since=1.0)
    assert check.breach(since=2.0) is None, "a new step starts from its own baseline"
    # Prometheus' histogram_quantile: linear inside the bucket, the highest finite bound past it.
    assert quantile(0.5, ((0.01, 50.0), (0.1, 100.0), (math.inf, 100.0))) == 0.01
    assert quantile(0.75, ((0.01, 50.0), (0.1, 100.0), (math.inf, 100.0))) == pytest.approx(0.055)
    assert quantile(0.99, ((0.01, 50.0), (0.1, 60.0), (math.inf, 100.0))) == 0.1
    assert math.isnan(quantile(0.99, ((0.1, 0.0), (math.inf, 0.0))))


def test_the_alias_history_keeps_the_newest_entries_that_fit_a_tag(registry):
    tracker, versions = registry
    name, _ = versions(1)
    start = datetime.now(UTC)
    for i in range(60):
        at = start + timedelta(seconds=i)
        record(tracker, name, [AliasEvent(at=at, event="stepped", alias=CHALLENGER, version=str(i), why="x" * 500)])
    text = tracker.model_tag(name, HISTORY_TAG)
    history = alias_history(tracker, name)
    assert len(text) <= TAG_LIMIT and 5 <= len(history) < 60
    assert history[-1].version == "59" and history[-1].at == at
    assert [int(e.version) for e in history] == list(range(60 - len(history), 60)), "the oldest dropped, in order"
    assert all(len(e.why) <= 300 for e in history)


# -- against the service ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def canary_server(served_models, tmp_path_factory):
    """A real service of a fresh registered model (the fixture's xgboost as champion), with no static
    challenger share: only a canary routes clients to a challenger."""
    folder = tmp_path_factory.mktemp("canary-server")
    name, tracker = "scalping-canary-test", served_models.tracker
    champion = tracker.register(served_models.candidates["xgboost"].model_uri, name, {})  # its run holds the bundle
    tracker.set_alias(name, CHAMPION, champion)
    env = {
        "MLFLOW_TRACKING_URI": tracker.tracking_uri,
        "SCALPING_MODEL": name,
        "SCALPING_API_KEY": API_KEY,
        "SCALPING_CHALLENGER_SHARE": "0",
        "SCALPING_WORKERS": "2",
        "SCALPING_FOLLOW_INTERVAL": "1",
        "SCALPING_PREDICTION_LOG": str(folder / "predictions"),
        "SCALPING_BUNDLE_CACHE": str(folder / "cache"),
    }
    with bentoml_server(env, folder / "server.log") as url:
        yield url, name, champion


def _info(url: str) -> dict:
    return httpx.post(f"{url}/info", json={}, headers={"x-api-key": API_KEY}, timeout=30).json()


def _wait_for(url: str, share: float, champion: str | None = None, timeout_s: float = 30) -> dict:
    """/info once the service routes `share` to the challenger (and serves `champion`), eight times in a
    row over new connections, which land on either worker (a worker follows another's reload on its
    next request)."""
    deadline, agreeing = time.monotonic() + timeout_s, 0
    while agreeing < 8:
        time.sleep(0.1)
        info = _info(url)
        served = info["models"].get(CHAMPION, {}).get("version")
        agreeing = agreeing + 1 if info["challenger_share"] == share and champion in (None, served) else 0
        assert time.monotonic() < deadline, f"the service routes {info['challenger_share']}, not {share}: {info}"
    return info


def _round(url: str, window: list[list[float]]) -> dict[str, httpx.Response]:
    """One prediction per client, each on a new connection (so both workers answer)."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}, timeout=30, limits=limits) as client:
        return {c: client.post("/predict/features", json={"symbol": SYMBOL, "features": window, "client_id": c}) for c in CLIENTS}


def _window(served_models) -> list[list[float]]:
    test = served_models.dataset.rows("test")
    return test[served_models.dataset.feature_names].iloc[:50].to_numpy().tolist()


def _print_history(tracker: Tracker, name: str, since) -> None:
    print(f"\nalias history of {name}:")
    for e in alias_history(tracker, name):
        if e.at >= since:
            print(f"  {e.at.isoformat(timespec='milliseconds')}  {e.event:<13} {e.alias:<10} v{e.version:<3} {e.why}")


def test_a_failing_challenger_is_rolled_back_on_its_own_at_the_first_step(served_models, canary_server):
    url, name, champion = canary_server
    tracker = served_models.tracker
    tracker.set_alias(name, CHAMPION, champion)
    bad = register_degraded(tracker, name, served_models.exports["cnn"].folder)
    tracker.set_alias(name, CHALLENGER, bad)
    config = CanaryConfig(hold_s=2, min_requests=20)
    check, window = ServiceMetricsCheck(url, API_KEY, config), _window(served_models)
    routed = [c for c in CLIENTS if bucket(c) < config.steps[0]]
    assert len(routed) >= config.min_requests  # one round of traffic is enough to judge the first step

    with WebhookReceiver() as hook:

        def alert(message: str) -> None:
            send(hook.url, Alert(status="failing", title="Canary rolled back", text=message))

        controller = CanaryController(tracker, name, config, [check], alert, traffic=check)
        state = start_canary(tracker, name, config)
        info = _wait_for(url, 0.1)
        assert info["models"][CHALLENGER]["version"] == bad and info["canary"]["status"] == "running"
        assert controller.step() == state  # the step's first look: its metrics baseline
        failed, deadline = set(), time.monotonic() + 30
        while state.running and time.monotonic() < deadline:
            answers = _round(url, window)
            failed |= {c for c, r in answers.items() if r.status_code == 500}
            assert all(r.json()["variant"] == CHAMPION for c, r in answers.items() if c not in routed)
            state = controller.step()
        assert failed == set(routed), "exactly the challenger's clients failed"
        assert (state.status, state.step, state.share) == ("rolled_back", 0, 0.0)
        assert "service metrics: challenger error rate 100.0%" in state.why
        assert tracker.alias_version(name, CHAMPION) == champion and tracker.alias_version(name, CHALLENGER) is None
        assert "rolled back" in tracker.version_tags(name, bad)[CANARY_TAG]

        info = _wait_for(url, 0.0)
        assert set(info["models"]) == {CHAMPION} and info["canary"]["status"] == "rolled_back"
        answers = _round(url, window)  # nobody is routed to the challenger any more
        assert {(r.status_code, r.json()["variant"], r.json()["version"]) for r in answers.values()} == {
            (200, CHAMPION, champion)
        }
        assert controller.step() == state, "a rolled-back canary is left alone"
    (body,) = hook.bodies
    text = body["text"]
    assert f"Canary of {name} v{bad} rolled back at step 1 of 3 (share 10%); champion v{champion}" in text
    assert "error rate 100.0%" in text
    _print_history(tracker, name, state.started)


def test_a_healthy_challenger_steps_up_to_every_client_and_is_crowned(served_models, canary_server):
    url, name, champion = canary_server
    tracker = served_models.tracker
    tracker.set_alias(name, CHAMPION, champion)
    good = tracker.register(served_models.candidates["cnn"].model_uri, name, {})  # its run holds the cnn's bundle
    tracker.set_alias(name, CHALLENGER, good)
    config = CanaryConfig(hold_s=1, min_requests=20)
    check, window = ServiceMetricsCheck(url, API_KEY, config), _window(served_models)
    controller = CanaryController(tracker, name, config, [check], lambda message: pytest.fail(message), traffic=check)
    state, measured = start_canary(tracker, name, config), {}
    deadline = time.monotonic() + 60
    while state.running and time.monotonic() < deadline:
        _wait_for(url, state.share)
        assert controller.step() == state  # the step's first look: its metrics baseline
        answers = _round(url, window)
        variants = {c: r.json()["variant"] for c, r in answers.items()}
        assert variants == {c: CHALLENGER if bucket(c) < state.share else CHAMPION for c in CLIENTS}, "sticky, by bucket"
        versions = {r.json()["variant"]: r.json()["version"] for r in answers.values()}
        assert versions == ({CHALLENGER: good, CHAMPION: champion} if state.share < 1 else {CHALLENGER: good})
        measured[state.share] = fraction = sum(v == CHALLENGER for v in variants.values()) / len(CLIENTS)
        assert abs(fraction - state.share) <= 4 * np.sqrt(state.share * (1 - state.share) / len(CLIENTS)), (fraction, state)
        while (moved := controller.step()) == state and time.monotonic() < deadline:
            time.sleep(0.2)  # the step holds hold_s
        state = moved
    print(f"\nshare of clients routed to the challenger per step: {measured}")
    assert list(measured) == [0.1, 0.5, 1.0] and state.status == "completed"
    aliases = {a: tracker.alias_version(name, a) for a in (CHAMPION, PREVIOUS, CHALLENGER)}
    assert aliases == {CHAMPION: good, PREVIOUS: champion, CHALLENGER: None}
    info = _wait_for(url, 0.0, champion=good)
    assert set(info["models"]) == {CHAMPION} and info["canary"]["status"] == "completed"
    answers = _round(url, window)
    assert {(r.json()["variant"], r.json()["version"]) for r in answers.values()} == {(CHAMPION, good)}
    _print_history(tracker, name, state.started)


def test_the_canary_sensor_rolls_back_a_failing_challenger_through_dagster(served_models, canary_server, monkeypatch, tmp_path):
    """The same rollback as Dagster runs it: `canary_sensor` evaluations (the metrics baseline carried in
    its cursor from tick to tick), the service found through SCALPING_SERVICE_URL, the alert through
    SCALPING_ALERT_WEBHOOK_URL."""
    url, name, champion = canary_server
    tracker = served_models.tracker
    tracker.set_alias(name, CHAMPION, champion)
    bad = register_degraded(tracker, name, served_models.exports["cnn"].folder)
    tracker.set_alias(name, CHALLENGER, bad)
    monkeypatch.setenv("SCALPING_SERVICE_URL", url)
    monkeypatch.setenv("SCALPING_API_KEY", API_KEY)
    resources = {
        "mlflow_store": MLflowResource(tracking_uri=tracker.tracking_uri, artifact_root=str(served_models.root / "artifacts")),
        "paper_journal": PaperJournalResource(url=f"sqlite:///{tmp_path / 'journal.sqlite'}"),
    }
    window, cursor = _window(served_models), None
    with WebhookReceiver() as hook, dg.instance_for_test() as instance:
        monkeypatch.setenv("SCALPING_ALERT_WEBHOOK_URL", hook.url)

        def tick() -> str:
            nonlocal cursor
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                result = canary_sensor(context)
            cursor = result.cursor
            return result.skip_reason.skip_message if result.skip_reason else ""

        start_canary(tracker, name, CanaryConfig(hold_s=2, min_requests=20))
        _wait_for(url, 0.1)
        assert f"{name} v{bad}: running at 10%" in tick()  # the step's first look: its baseline, in the cursor
        assert name in json.loads(cursor)["baselines"]
        deadline = time.monotonic() + 30
        while read_canary(tracker, name).running and time.monotonic() < deadline:
            _round(url, window)
            said = tick()
        state = read_canary(tracker, name)
        assert state.status == "rolled_back" and "error rate 100.0%" in state.why, said
        assert f"{name} v{bad}: rolled_back at 0%" in said and json.loads(cursor) == {"baselines": {}, "pending": []}
        assert tracker.alias_version(name, CHAMPION) == champion and tracker.alias_version(name, CHALLENGER) is None
        assert "no canary running" in tick(), "a rolled-back canary is not evaluated again"
        _wait_for(url, 0.0)
    (body,) = hook.bodies
    assert f"Canary of {name} v{bad} rolled back" in body["text"]
    _print_history(tracker, name, state.started)
