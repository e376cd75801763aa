"""The prediction service as a real `bentoml serve` on loopback: auth, every endpoint, bad input,
sticky A/B routing, the prediction log, champion switch with reload and rollback, and a fuzz run
over its OpenAPI spec."""

import json
import time
from collections import Counter

import httpx
import numpy as np
import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from scalping_assets.backtest.promotion import CHAMPION, PREVIOUS, rollback
from scalping_assets.models.tracking import CLEARED_TAG
from scalping_assets.testing.bentoml_server import bentoml_server
from serving.arrow_batch import ARROW_STREAM, encode_batch
from serving.bundle import OnnxPredictor
from serving.models import bucket
from serving.predlog import features_digest, read_log

from .serving_helpers import SYMBOL

API_KEY = "test-key-5f1c"
SHARE = 0.3
KEY = {"x-api-key": API_KEY}
ARROW = {"content-type": ARROW_STREAM}


@pytest.fixture(scope="module")
def server(served_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    env = {
        "MLFLOW_TRACKING_URI": served_models.tracker.tracking_uri,
        "SCALPING_MODEL": served_models.name,
        "SCALPING_API_KEY": API_KEY,
        "SCALPING_CHALLENGER_SHARE": str(SHARE),
        "SCALPING_WORKERS": "2",  # a reload must reach both
        "SCALPING_FOLLOW_INTERVAL": "0",  # these tests move the aliases and reload themselves
        "SCALPING_PREDICTION_LOG": str(folder / "predictions"),
        "SCALPING_BUNDLE_CACHE": str(folder / "cache"),
    }
    with bentoml_server(env, folder / "server.log") as url:
        yield url, folder / "predictions"


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], headers=KEY, timeout=30) as c:
        yield c


def _tick_window(served_models, end: int, n: int) -> dict[str, list]:
    ticks = served_models.ticks.iloc[end - n : end]
    return {"epochs": ticks["epoch"].tolist(), "quotes": ticks["quote"].tolist()}


def _feature_window(served_models, row: int = 0) -> list[list[float]]:
    test = served_models.dataset.rows("test")
    return test[served_models.dataset.feature_names].iloc[row : row + 50].to_numpy().tolist()


def test_health_is_open_and_everything_else_needs_the_key(server):
    url, _ = server
    for path in ("/healthz", "/livez", "/readyz"):
        assert httpx.get(url + path).status_code == 200, path
    for method, path in [("POST", "/info"), ("POST", "/reload"), ("POST", "/predict/features"), ("POST", "/predict/ticks"),
                         ("POST", "/predict/batch"), ("GET", "/metrics"), ("GET", "/docs.json")]:  # fmt: skip
        for headers in ({}, {"x-api-key": "wrong"}):
            response = httpx.request(method, url + path, headers=headers, json={})
            assert response.status_code == 401, (path, headers, response.text)
            assert "API key" in response.json()["error"]
    with pytest.raises(InvalidStatus):
        with connect(url.replace("http", "ws") + "/stream/ticks"):
            pass


def test_every_endpoint_serves_the_champion_and_agrees_with_the_bundle(served_models, server, client):
    url, _ = server
    versions = {k: served_models.candidates[k].version for k in ("xgboost", "cnn")}
    info = client.post("/info", json={}).json()
    assert info["models"]["champion"]["version"] == versions["xgboost"]
    assert info["models"]["challenger"]["version"] == versions["cnn"]
    assert info["challenger_share"] == SHARE and info["auth"] is True
    min_ticks = info["models"]["champion"]["min_ticks"]

    champion = OnnxPredictor(served_models.exports["xgboost"].folder)
    end = len(served_models.ticks) - 100
    ticks = _tick_window(served_models, end, min_ticks)
    client_id = next(f"c{i}" for i in range(100) if bucket(f"c{i}") >= SHARE)  # routed to the champion
    response = client.post("/predict/ticks", json={"symbol": SYMBOL, **ticks, "client_id": client_id})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == versions["xgboost"] and body["variant"] == "champion" and body["symbols"] == [SYMBOL]
    assert body["epoch"] == ticks["epochs"][-1]
    window = champion.features_from_ticks(SYMBOL, ticks["epochs"], ticks["quotes"])
    expected = champion.predict(window[None], SYMBOL)[0]
    # Served: the graph's output calibrated by the candidate's own calibration, as its backtested predictions were.
    assert champion.calibration == served_models.candidates["xgboost"].calibration
    graph = champion.graphs(champion.scale(window[None].astype(np.float32)))
    np.testing.assert_array_equal(expected, served_models.candidates["xgboost"].calibration.apply(graph, SYMBOL)[0])
    np.testing.assert_allclose([body["probabilities"][c] for c in ("down", "neutral", "up")], expected, atol=1e-6)
    assert body["prediction"] == ("down", "neutral", "up")[int(expected.argmax())]

    features = client.post(
        "/predict/features", json={"symbol": SYMBOL, "features": window.tolist(), "client_id": client_id}
    ).json()
    np.testing.assert_allclose(list(features["probabilities"].values()), expected, atol=1e-6)

    windows = [{"symbol": SYMBOL, "features": _feature_window(served_models, row), "client_id": client_id} for row in range(40)]
    batch = client.post("/predict/batch", json={"windows": windows})
    assert batch.status_code == 200, batch.text
    singles = champion.predict(np.array([w["features"] for w in windows]), SYMBOL)
    np.testing.assert_allclose([list(p["probabilities"].values()) for p in batch.json()], singles, atol=1e-6)

    # The stream: warm-up answers, then one prediction per tick, the last one equal to the HTTP answer.
    replies = []
    with connect(url.replace("http", "ws") + f"/stream/ticks?client_id={client_id}", additional_headers=KEY) as ws:
        stream = _tick_window(served_models, end, min_ticks + 5)  # ends at the same tick as `ticks`
        for epoch, quote in zip(stream["epochs"], stream["quotes"], strict=True):
            ws.send(json.dumps({"symbol": SYMBOL, "epoch": epoch, "quote": quote}))
            replies.append(json.loads(ws.recv()))
        ws.send('{"symbol": "SIG_AR1", "epoch": 1, "quote": 1.0}')
        assert "epochs must increase" in json.loads(ws.recv())["error"]
        ws.send("not json")
        assert "Invalid JSON" in json.loads(ws.recv())["error"]
    ready = [r for r in replies if r.get("ready")]
    assert replies[0] == {"symbol": SYMBOL, "epoch": replies[0]["epoch"], "ready": False, "warmup_left": min_ticks - 1}
    assert len(ready) == 6 and all(r["version"] == versions["xgboost"] for r in ready)
    np.testing.assert_allclose(list(ready[-1]["probabilities"].values()), expected, atol=1e-6)

    reloaded = client.post("/reload", json={}).json()
    assert reloaded["served"] == {"champion": versions["xgboost"], "challenger": versions["cnn"]} and not reloaded["changed"]
    metrics = client.get("/metrics").text
    assert (
        f'scalping_model_info{{alias="champion",registered_model="{served_models.name}",version="{versions["xgboost"]}"}} 1.0'
        in metrics
    )
    assert 'bentoml_service_request_total{endpoint="/predict/ticks",http_response_code="200"' in metrics
    assert "bentoml_service_request_duration_seconds_bucket" in metrics and "scalping_inference_seconds_bucket" in metrics


def _errors(response: httpx.Response) -> str:
    return json.dumps(response.json())


@pytest.mark.parametrize(
    "path, body, field, message",
    [
        ("/predict/features", '{"symbol": "SIG_AR1", "features": [[1.0', None, "Invalid JSON"),
        ("/predict/features", '{"symbol": "SIG_AR1", "features": [[1.0]]}', "features", "the model reads exactly 50"),
        ("/predict/features", '{"symbol": "R_100", "features": []}', "symbol", "unknown symbol 'R_100'"),
        ("/predict/features", '{"features": []}', "symbol", "Field required"),
        ("/predict/ticks", '{"symbol": "SIG_AR1", "epochs": [1], "quotes": [NaN]}', "quotes", "finite number"),
        ("/predict/ticks", '{"symbol": "SIG_AR1", "epochs": [1], "quotes": [Infinity]}', "quotes", "finite number"),
        ("/predict/ticks", '{"symbol": "SIG_AR1", "epochs": [1], "quotes": [1, -2]}', "quotes", "quotes[1] = -2"),
        ("/predict/ticks", '{"symbol": "SIG_AR1", "epochs": [-5], "quotes": [1]}', "epochs", "greater than or equal to 0"),
        ("/predict/batch", '{"windows": []}', "windows", "at least 1 item"),
        ("/predict/batch", '{"windows": [{"symbol": "SIG_AR1", "features": "x"}]}', "features", "valid array"),
    ],
)
def test_client_mistakes_get_400_naming_the_field(client, path, body, field, message):
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert message in _errors(response)
    if field:
        assert any(field in map(str, d["loc"]) for d in response.json()["detail"]), response.text


def test_window_rules_of_ticks_and_features_and_payload_size(served_models, client):
    features = _feature_window(served_models)
    features[7][3] = float("nan")
    response = client.post(
        "/predict/features",
        content=json.dumps({"symbol": SYMBOL, "features": features}),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400 and "finite number" in _errors(response)
    assert response.json()["detail"][0]["loc"] == ["features", 7, 3]
    ticks = _tick_window(served_models, 30_000, 2_600)
    response = client.post("/predict/ticks", json={"symbol": SYMBOL, **ticks, "quotes": ticks["quotes"][:-1]})
    assert response.status_code == 400 and "2600 epochs but 2599 quotes" in _errors(response)
    ticks["epochs"][100] = ticks["epochs"][99]
    response = client.post("/predict/ticks", json={"symbol": SYMBOL, **ticks})
    assert response.status_code == 400 and "epochs[100]" in _errors(response)
    response = client.post(
        "/predict/ticks", json={"symbol": SYMBOL, "epochs": ticks["epochs"][:500], "quotes": ticks["quotes"][:500]}
    )
    assert response.status_code == 400 and "500 ticks given; the model needs at least 2550" in _errors(response)
    response = client.post("/predict/ticks", json={"symbol": SYMBOL, **_tick_window(served_models, 40_000, 20_001)})
    assert response.status_code == 400 and "at most 20000" in _errors(response)
    response = client.post("/predict/features", content=b" " * (17 * 1024 * 1024), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "exceeds" in response.json()["error"]
    assert client.get("/livez").status_code == 200


def test_ab_split_is_sticky_and_within_tolerance_of_the_share(served_models, client):
    window = _feature_window(served_models)
    versions = {"champion": served_models.candidates["xgboost"].version, "challenger": served_models.candidates["cnn"].version}
    variants = {}
    for i in range(2_000):
        body = client.post(
            "/predict/features", json={"symbol": SYMBOL, "features": window}, headers={"x-client-id": f"client-{i}"}
        ).json()
        assert body["version"] == versions[body["variant"]]
        variants[f"client-{i}"] = body["variant"]
    share = sum(v == "challenger" for v in variants.values()) / len(variants)
    assert abs(share - SHARE) < 4 * np.sqrt(SHARE * (1 - SHARE) / len(variants)), share
    for i in range(0, 2_000, 40):  # sticky: the same client lands where it landed before
        again = client.post("/predict/features", json={"symbol": SYMBOL, "features": window, "client_id": f"client-{i}"}).json()
        assert again["variant"] == variants[f"client-{i}"]


def test_every_prediction_is_logged(served_models, server, client):
    _, log_folder = server
    window = _feature_window(served_models, 3)
    body = client.post("/predict/features", json={"symbol": SYMBOL, "features": window, "client_id": "logged-client"}).json()
    record = [r for r in read_log(log_folder) if r["client"] == "logged-client"][-1]
    assert {"timestamp", "symbol", "version", "variant", "features_digest", "probabilities", "latency_ms"} <= set(record)
    model = OnnxPredictor(served_models.exports[{"champion": "xgboost", "challenger": "cnn"}[body["variant"]]].folder)
    assert record["features_digest"] == features_digest(model.scale(np.asarray(window)))
    assert record["probabilities"] == body["probabilities"] and record["version"] == body["version"]
    assert record["features"] == window[-1]
    endpoints = Counter(r["endpoint"] for r in read_log(log_folder))
    assert endpoints["features"] >= 2_000 and endpoints["batch"] >= 40 and endpoints["stream"] >= 6


def _windows(served_models, n: int) -> np.ndarray:
    """`n` raw feature windows (n, 50, 34) of the test span."""
    return np.array([_feature_window(served_models, row) for row in range(0, 10 * n, 10)])


def test_an_arrow_batch_is_answered_as_its_json_is(served_models, server, client):
    """The same windows as an Arrow stream and as JSON: the same answers to the bit (float64; float32
    against the JSON of the float32 values), routed alike, logged alike; the key is required too."""
    _, log_folder = server
    windows = _windows(served_models, 40)
    clients = [f"arrow-{i}" for i in range(len(windows))]  # about a third land on the challenger
    for dtype in ("float64", "float32"):
        sent = windows.astype(dtype).astype(np.float64)  # the values the Arrow body carries
        body = [{"symbol": SYMBOL, "features": w.tolist(), "client_id": c} for w, c in zip(sent, clients, strict=True)]
        as_json = client.post("/predict/batch", json={"windows": body})
        as_arrow = client.post("/predict/batch", content=encode_batch(windows, SYMBOL, clients, dtype), headers=ARROW)
        assert as_json.status_code == 200 and as_arrow.status_code == 200, as_arrow.text
        answers = [[{k: v for k, v in p.items() if k != "latency_ms"} for p in r.json()] for r in (as_json, as_arrow)]
        assert answers[0] == answers[1], dtype
        assert {p["variant"] for p in answers[1]} == {"champion", "challenger"}
    logged = ("client", "endpoint", "variant", "version", "features_digest", "probabilities", "features")
    records = Counter(json.dumps([r[k] for k in logged]) for r in read_log(log_folder) if r["client"] in clients)
    # Every record twice (its JSON twin and its Arrow twin), 4 per client (two formats, two dtypes).
    assert set(records.values()) <= {2, 4} and records.total() == 4 * len(clients)
    unkeyed = httpx.post(f"{server[0]}/predict/batch", content=encode_batch(windows[:1], SYMBOL), headers=ARROW)
    assert unkeyed.status_code == 401


def _stream(columns: dict[str, pa.Array]) -> bytes:
    """An Arrow stream encode_batch would not write."""
    batch = pa.record_batch(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _nested(x: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[2]), x.shape[1])


def _nan_at(x: np.ndarray, i: int, row: int, col: int) -> np.ndarray:
    x = x.copy()
    x[i, row, col] = np.nan
    return x


@pytest.mark.parametrize(
    "make, loc, message",
    [
        (lambda x: b"\x00 not arrow", ["body"], "not an Arrow IPC stream"),
        (lambda x: encode_batch(x, SYMBOL)[:200], ["body"], "not an Arrow IPC stream"),
        (lambda x: encode_batch(x[:, :, :-1], SYMBOL), ["features"], "rows have 33 values; the model has 34 features"),
        (lambda x: encode_batch(x[:, 1:], SYMBOL), ["features"], "windows have 49 rows; the model reads exactly 50"),
        (lambda x: _stream({"symbol": pa.array([SYMBOL] * 3), "features": _nested(x.astype(np.int64))}), ["features"], "int64"),
        (lambda x: _stream({"symbol": pa.array([SYMBOL] * 3), "features": pa.array(list(x.reshape(3, -1)))}), ["features"],
         "must be fixed_size_list<fixed_size_list<float64 or float32>> (50 rows x 34 features), got list<item: double>"),
        (lambda x: _stream({"features": _nested(x)}), ["symbol"], "column 'symbol' is required once, found 0 times"),
        (lambda x: _stream({"symbol": pa.array([1, 2, 3]), "features": _nested(x)}), ["symbol"], "must hold strings, got int64"),
        (lambda x: encode_batch(_nan_at(x, 2, 7, 3), SYMBOL), ["windows", 2, "features", 7, 3], "should be a finite number"),
        (lambda x: encode_batch(x * 1e10, SYMBOL), ["windows", 0, "features", 0, 0], "Input should be within ±1e+09"),
        (lambda x: encode_batch(x, [SYMBOL, "R_100", SYMBOL]), ["windows", 1, "symbol"], "unknown symbol 'R_100'"),
        (lambda x: encode_batch(x[:0], SYMBOL), ["windows"], "a batch holds 1 to 128 windows, got 0"),
        (lambda x: encode_batch(np.repeat(x, 43, axis=0), SYMBOL), ["windows"], "got 129"),
        (lambda x: encode_batch(x, SYMBOL, ["", "c" * 201, ""]), ["windows", 1, "client_id"], "at most 200 characters"),
    ],
)  # fmt: skip
def test_a_bad_arrow_body_gets_400_naming_the_problem(served_models, client, make, loc, message):
    x = _windows(served_models, 3)
    x[:, 0, 0] = 1.0  # a non-zero first value: the out-of-range case scales it past the bound
    response = client.post("/predict/batch", content=make(x), headers=ARROW)
    assert response.status_code == 400, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == loc and message in error["msg"], error


def test_a_batch_in_neither_format_gets_415(served_models, client):
    arrow = encode_batch(_windows(served_models, 2), SYMBOL)
    for content_type in ("application/octet-stream", "text/csv", "application/vnd.apache.arrow.file"):
        response = client.post("/predict/batch", content=arrow, headers={"content-type": content_type})
        assert response.status_code == 415, (content_type, response.text)
        assert "application/json or application/vnd.apache.arrow.stream" in response.text
    response = client.post("/predict/batch", content=arrow, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "Invalid JSON" in response.text  # read as what it claims to be
    assert client.get("/livez").status_code == 200


def _metric(client: httpx.Client, sample: str, **labels: str) -> float:
    """The sum of a sample over the label sets holding `labels` (across workers)."""
    families = text_string_to_metric_families(client.get("/metrics").text)
    return sum(s.value for f in families for s in f.samples if s.name == sample and labels.items() <= s.labels.items())


def test_metrics_count_arrow_batches(served_models, client):
    """Each body counted by its format, its predictions and its request as the JSON body's are."""
    windows, arrow, json_ = _windows(served_models, 16), 5, 1
    counted = [
        ("scalping_batch_bodies_total", {"format": "arrow"}),
        ("scalping_batch_bodies_total", {"format": "json"}),
        ("scalping_predictions_total", {}),
        ("bentoml_service_request_total", {"endpoint": "/predict/batch", "http_response_code": "200"}),
    ]
    before = [_metric(client, name, **labels) for name, labels in counted]
    for _ in range(arrow):
        assert client.post("/predict/batch", content=encode_batch(windows, SYMBOL), headers=ARROW).status_code == 200
    body = {"windows": [{"symbol": SYMBOL, "features": w.tolist()} for w in windows]}
    assert client.post("/predict/batch", json=body).status_code == 200
    after = [_metric(client, name, **labels) for name, labels in counted]
    deltas = [b - a for a, b in zip(before, after, strict=True)]
    assert deltas == [arrow, json_, (arrow + json_) * len(windows), arrow + json_]


def test_fuzzing_the_openapi_spec_never_gets_a_5xx(server):
    """Schemathesis generates valid and invalid requests for every operation of /docs.json."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    url, _ = server
    schema = schemathesis.openapi.from_url(f"{url}/docs.json", headers=KEY)
    statuses: Counter = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(mode))
            @settings(max_examples=80, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
            def fuzz(case):
                response = case.call(base_url=url, headers=KEY, timeout=30)
                statuses[response.status_code] += 1
                assert response.status_code < 500, (
                    f"{case.method} {case.path} {case.body!r:.300}: {response.status_code} {response.text[:300]}"
                )

            try:
                fuzz()
            except Unsatisfiable:  # nothing to make invalid: an operation without parameters or body
                assert mode == GenerationMode.NEGATIVE
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    total = sum(statuses.values())
    print(
        f"\nfuzz: {len(operations)} operations, {total} requests, statuses {dict(sorted(statuses.items()))}, 5xx: {server_errors}"
    )
    assert len(operations) >= 9 and total >= 500 and server_errors == 0
    assert httpx.get(f"{url}/livez").status_code == 200


def test_champion_switch_reload_and_rollback(served_models, server, client):
    url, _ = server
    name, tracker = served_models.name, served_models.tracker
    xgboost, ensemble = served_models.candidates["xgboost"].version, served_models.candidates["ensemble"].version
    served_models.export("ensemble")
    window = _feature_window(served_models)
    client_id = next(f"c{i}" for i in range(100) if bucket(f"c{i}") >= SHARE)

    def served() -> str:
        """The version every worker serves (new connections land on either worker)."""
        body = {"symbol": SYMBOL, "features": window, "client_id": client_id}
        versions = {httpx.post(f"{url}/predict/features", json=body, headers=KEY).json()["version"] for _ in range(12)}
        assert len(versions) == 1, f"workers disagree: {versions}"
        return versions.pop()

    tracker.set_alias(name, PREVIOUS, xgboost)
    tracker.set_alias(name, CHAMPION, ensemble)
    assert served() == xgboost  # nothing changes before a reload
    reloaded = client.post("/reload", json={}).json()
    assert reloaded["changed"] and reloaded["served"]["champion"] == ensemble
    assert served() == ensemble
    assert rollback(tracker, name) == (xgboost, ensemble)
    assert client.post("/reload", json={}).json()["served"]["champion"] == xgboost
    assert served() == xgboost


def test_a_symbol_the_gate_did_not_clear_is_refused(served_models, server, client):
    url, _ = server
    name, tracker = served_models.name, served_models.tracker
    xgboost, transformer = served_models.candidates["xgboost"].version, served_models.candidates["transformer"].version
    tracker.set_version_tag(name, transformer, CLEARED_TAG, "")  # the gate cleared it for no symbol
    served_models.exports.pop("transformer", None)  # exported again: the bundle reads the tag at export
    assert served_models.export("transformer").manifest.cleared_symbols == []
    tracker.set_alias(name, CHAMPION, transformer)
    try:
        assert client.post("/reload", json={}).json()["served"]["champion"] == transformer
        assert client.post("/info", json={}).json()["models"]["champion"]["cleared_symbols"] == []
        client_id = next(f"c{i}" for i in range(100) if bucket(f"c{i}") >= SHARE)  # routed to the champion
        body = {"symbol": SYMBOL, "features": _feature_window(served_models), "client_id": client_id}
        response = httpx.post(f"{url}/predict/features", json=body, headers=KEY)
        assert response.status_code == 400 and f"{SYMBOL} is not cleared by the promotion gate" in response.text
    finally:
        tracker.set_alias(name, CHAMPION, xgboost)
        assert client.post("/reload", json={}).json()["served"]["champion"] == xgboost


def test_without_a_key_and_without_a_champion_until_one_is_registered(served_models, tmp_path):
    """Auth off; a model name with no champion yet: alive, not ready, 503 on predictions; a reload
    after the registration serves it with no restart."""
    name = "scalping-serving-test"
    env = {
        "MLFLOW_TRACKING_URI": served_models.tracker.tracking_uri,
        "SCALPING_MODEL": name,
        "SCALPING_API_KEY": "",
        "SCALPING_PREDICTION_LOG": str(tmp_path / "predictions"),
        "SCALPING_BUNDLE_CACHE": str(tmp_path / "cache"),
    }
    window = _feature_window(served_models)
    with bentoml_server(env, tmp_path / "server.log") as url:
        assert httpx.get(f"{url}/readyz").status_code == 503
        response = httpx.post(f"{url}/predict/features", json={"symbol": SYMBOL, "features": window})
        assert response.status_code == 503
        assert "has no champion" in httpx.post(f"{url}/info", json={}).json()["problems"]["champion"]
        tracker, candidate = served_models.tracker, served_models.candidates["xgboost"]
        version = tracker.register(candidate.model_uri, name, {})  # its run holds the bundle
        tracker.set_alias(name, CHAMPION, version)
        assert httpx.post(f"{url}/reload", json={}).json()["served"] == {"champion": version}
        assert httpx.get(f"{url}/readyz").status_code == 200
        response = httpx.post(f"{url}/predict/features", json={"symbol": SYMBOL, "features": window})
        assert response.status_code == 200 and response.json()["registered_model"] == name


def test_the_service_follows_the_registry_without_a_reload(served_models, tmp_path):
    """A promotion (the champion alias moved) is served within the follow interval by every worker,
    with no POST /reload, and the server's log says what it switched to."""
    name = "scalping-follow-test"
    tracker, candidates = served_models.tracker, served_models.candidates
    served_models.export("ensemble")  # its run holds a bundle (the xgboost's is exported by the fixture)
    first = tracker.register(candidates["xgboost"].model_uri, name, {})
    second = tracker.register(candidates["ensemble"].model_uri, name, {})
    tracker.set_alias(name, CHAMPION, first)
    env = {
        "MLFLOW_TRACKING_URI": tracker.tracking_uri,
        "SCALPING_MODEL": name,
        "SCALPING_API_KEY": "",
        "SCALPING_WORKERS": "2",
        "SCALPING_FOLLOW_INTERVAL": "1",
        "SCALPING_PREDICTION_LOG": str(tmp_path / "predictions"),
        "SCALPING_BUNDLE_CACHE": str(tmp_path / "cache"),
    }
    body = {"symbol": SYMBOL, "features": _feature_window(served_models)}
    with bentoml_server(env, tmp_path / "server.log") as url:

        def versions() -> set[str]:
            return {httpx.post(f"{url}/predict/features", json=body).json()["version"] for _ in range(8)}

        assert versions() == {first}
        tracker.set_alias(name, CHAMPION, second)  # what the gate does on a promotion
        deadline = time.monotonic() + 60
        while versions() != {second} and time.monotonic() < deadline:
            time.sleep(0.5)
        assert versions() == {second}, "every worker serves the new champion"
    logged = (tmp_path / "server.log").read_text()
    assert "followed the registry" in logged and f"{name} {{'champion': '{first}'}} -> {{'champion': '{second}'}}" in logged
