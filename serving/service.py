"""The BentoML prediction service: the registry's `champion` (and, for a share of clients, its
`challenger`) as ONNX graphs behind HTTP and WebSocket endpoints.

    bentoml serve serving.service:Scalping

Settings come from the environment (see `Settings`); the model is found through MLflow's registry
at start-up and again on POST /reload, so a newly promoted champion is served without a restart.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

import bentoml
import numpy as np
from bentoml.exceptions import InvalidArgument, ServiceUnavailable
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, Field, ValidationError

from scalping_assets.backtest.promotion import CHALLENGER, CHAMPION
from scalping_assets.features.batch import FeatureInputError

from .bundle import OnnxPredictor
from .predlog import PredictionLog, features_digest
from .registry import BundleRegistry
from .schemas import MAX_BATCH, Expected, FeatureWindow, Prediction, StreamTick, TickWindow, expect

OPEN_PATHS = ("/healthz", "/livez", "/readyz")
MAX_BODY_BYTES = 16 * 1024 * 1024


class Settings(BaseModel):
    """The service's environment: SCALPING_* variables and MLflow's own MLFLOW_TRACKING_URI."""

    tracking_uri: str
    model: str = Field(default="", description="registered model name; empty: the latest one with a champion")
    api_key: str = Field(default="", description="empty: no authentication")
    challenger_share: float = Field(default=0.0, ge=0, le=1, description="share of clients routed to the challenger")
    precision: Literal["auto", "fp32", "int8"] = "auto"
    prediction_log: str
    cache: str

    @classmethod
    def from_env(cls) -> Settings:
        data = os.environ.get("SCALPING_DATA_DIR", "data")
        env = os.environ.get
        return cls(
            tracking_uri=env("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(data, 'mlflow.db').resolve()}",
            model=env("SCALPING_MODEL", ""),
            api_key=env("SCALPING_API_KEY", ""),
            challenger_share=float(env("SCALPING_CHALLENGER_SHARE", "0")),
            precision=env("SCALPING_PRECISION", "auto"),
            prediction_log=env("SCALPING_PREDICTION_LOG") or str(Path(data, "predictions")),
            cache=env("SCALPING_BUNDLE_CACHE") or str(Path(data, "serving-cache")),
        )


def bucket(client_id: str) -> float:
    """A client's fixed place in [0, 1): the same client always lands on the same side of the split."""
    return int.from_bytes(hashlib.sha256(client_id.encode()).digest()[:8], "big") / 2**64


class ApiKeyMiddleware:
    """401 without the key (x-api-key header, or ?api_key= for WebSockets, whose browsers cannot set
    headers) on every path but the health probes; 413 for bodies above MAX_BODY_BYTES."""

    def __init__(self, app):
        self.app = app
        self.key = Settings.from_env().api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.key and not self._authorised(scope, headers):
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong API key"})
            return await _json(send, 401, {"error": "missing or wrong API key (x-api-key header)"})
        length = headers.get(b"content-length", b"0")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return await _json(send, 413, {"error": f"body of {int(length):,} bytes exceeds {MAX_BODY_BYTES:,}"})
        return await self.app(scope, receive, send)

    def _authorised(self, scope, headers: dict) -> bool:
        given = headers.get(b"x-api-key", b"")
        if not given and scope["type"] == "websocket":
            query = dict(p.split(b"=", 1) for p in scope.get("query_string", b"").split(b"&") if b"=" in p)
            given = query.get(b"api_key", b"")
        return hmac.compare_digest(given, self.key)


async def _json(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


# BentoML runs prometheus_client in multi-process mode (PROMETHEUS_MULTIPROC_DIR is set before the
# worker imports this module); "livemax" keeps the gauge free of a per-process label.
MODEL_INFO = Gauge(
    "scalping_model_info",
    "served model version (1 per alias)",
    ["alias", "registered_model", "version"],
    multiprocess_mode="livemax",
)
INFERENCE_SECONDS = Histogram(
    "scalping_inference_seconds",
    "model time per request (features and ONNX), excluding HTTP",
    ["endpoint", "variant"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
PREDICTIONS = Counter("scalping_predictions", "predictions made", ["variant", "version"])


class _Route(NamedTuple):
    variant: str  # champion or challenger
    model: OnnxPredictor


class _Item(NamedTuple):
    """One prediction to make: a raw feature window and the model it was routed to."""

    symbol: str
    client: str | None
    route: _Route
    window: np.ndarray  # (L, F), raw
    epoch: int | None = None  # the tick predicted at (raw ticks, the stream)


@dataclass
class _Stream:
    """One WebSocket client's feature state per symbol, tied to the model it was built for."""

    route: _Route
    states: dict = field(default_factory=dict)  # symbol -> (FeatureState, deque of feature rows)


stream_app = FastAPI(title="tick stream")


@bentoml.service(
    name="scalping",
    # Each worker holds its own models; a reload by one is passed on to the others by a marker file.
    workers=int(os.environ.get("SCALPING_WORKERS", "2")),
    traffic={"timeout": 30},
    # One log line per request costs more than a prediction; the prediction log and /metrics keep the record.
    logging={"access": {"enabled": os.environ.get("SCALPING_ACCESS_LOG", "") == "1"}},
    # Sub-millisecond buckets: the defaults start at 5 ms, above most of this service's requests.
    metrics={"duration": {"buckets": [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0]}},
)
@bentoml.asgi_app(stream_app, path="/stream")
class Scalping:
    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self.registry = BundleRegistry(self.settings.tracking_uri, self.settings.cache)
        self.log = PredictionLog(self.settings.prediction_log)
        self.models: dict[str, OnnxPredictor] = {}
        self.problems: dict[str, str] = {}
        self._reload_lock = threading.RLock()
        self._info_labels: list[tuple[str, str, str]] = []
        self._pinned: dict = {}
        self._marker = Path(self.settings.cache) / "reload.marker"
        self._marker_seen = self._marker_time()
        self._load(self._resolve())
        # Requests allocate thousands of small objects (a tick window is 2,600 of them), which triggers
        # full collections over everything imported at start-up: tens of ms each. Exempt the latter.
        gc.freeze()

    # -- model loading -------------------------------------------------------------------------

    @bentoml.api(route="/reload")
    def reload(self) -> dict:
        """Resolve the aliases again and load whatever changed; answers what is served now."""
        with self._reload_lock:
            result = self._load(self._resolve())
            # The other workers load exactly these versions on their next request.
            self._marker.parent.mkdir(parents=True, exist_ok=True)
            staged = self._marker.with_suffix(f".{os.getpid()}")
            staged.write_text(json.dumps(self._pinned))
            os.replace(staged, self._marker)  # a follower never reads half a file
            self._marker_seen = self._marker_time()
        return result

    def _marker_time(self) -> int:
        try:
            return self._marker.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def _follow_reloads(self) -> None:
        seen = self._marker_time()
        if seen != self._marker_seen:
            with self._reload_lock:
                self._marker_seen = seen
                self._load(json.loads(self._marker.read_text()))

    def _resolve(self) -> dict:
        """{"name", "versions": {alias: version}, "problems": {alias: why}} as the registry has them now."""
        try:
            name = self.settings.model or self.registry.default_model_name()
        except LookupError as exc:
            return {"name": None, "versions": {}, "problems": {CHAMPION: str(exc)}}
        aliases = [CHAMPION] + ([CHALLENGER] if self.settings.challenger_share > 0 else [])
        versions = {alias: self.registry.resolve(name, alias) for alias in aliases}
        problems = {alias: f"{name} has no {alias}" for alias, version in versions.items() if version is None}
        return {"name": name, "versions": {a: v for a, v in versions.items() if v}, "problems": problems}

    def _load(self, pinned: dict) -> dict:
        """Serve the versions `_resolve` found (a failing one keeps nothing, but a champion that fails
        to load keeps the last good one)."""
        self._pinned = pinned
        before = {alias: m.version for alias, m in self.models.items()}
        models, problems, name = {}, dict(pinned["problems"]), pinned["name"]
        for alias, version in pinned["versions"].items():
            current = self.models.get(alias)
            if current is not None and (current.registered_model, current.version) == (name, version):
                models[alias] = current
                continue
            try:
                models[alias] = OnnxPredictor(self.registry.fetch(name, version), self.settings.precision, (name, version))
            except LookupError as exc:
                problems[alias] = f"{alias}: {exc}"
        challenger = models.get(CHALLENGER)
        if challenger is not None and CHAMPION in models and not _compatible(models[CHAMPION], challenger):
            problems[CHALLENGER] = "challenger reads other windows or symbols than the champion: not routed"
            models.pop(CHALLENGER)
        if CHAMPION not in models and CHAMPION in self.models:
            models = self.models  # keep serving the last good champion rather than nothing
        self.models, self.problems = models, problems
        champion = models.get(CHAMPION)
        expect(champion and _expected(champion))
        for labels in self._info_labels:  # prometheus cannot clear labels across worker processes
            MODEL_INFO.labels(*labels).set(0)
        self._info_labels = [(a, m.registered_model, m.version) for a, m in models.items()]
        for labels in self._info_labels:
            MODEL_INFO.labels(*labels).set(1)
        after = {alias: m.version for alias, m in models.items()}
        return {"served": after, "changed": after != before, "problems": problems}

    def __is_ready__(self) -> bool:
        self._follow_reloads()
        return CHAMPION in self.models

    @bentoml.api(route="/info")
    def info(self) -> dict:
        """What is served: each alias's model, its window and features, the A/B split."""
        self._follow_reloads()
        return {
            "models": {alias: model.info() for alias, model in self.models.items()},
            "challenger_share": self.settings.challenger_share if CHALLENGER in self.models else 0.0,
            "auth": bool(self.settings.api_key),
            "problems": self.problems,
        }

    # -- predictions ---------------------------------------------------------------------------

    def _require_champion(self) -> None:
        """Once per request: follow a reload another worker made, and 503 while there is nothing to serve."""
        self._follow_reloads()
        if CHAMPION not in self.models:
            raise ServiceUnavailable(f"no champion loaded: {self.problems.get(CHAMPION, 'unknown')}")

    def _route(self, client_id: str | None) -> _Route:
        if CHALLENGER in self.models and client_id and bucket(client_id) < self.settings.challenger_share:
            return _Route(CHALLENGER, self.models[CHALLENGER])
        return _Route(CHAMPION, self.models[CHAMPION])

    def _predict(self, endpoint: str, items: list[_Item], started: float) -> list[Prediction]:
        """One ONNX call per variant; each item is predicted by the model it was routed to."""
        results: list[Prediction | None] = [None] * len(items)
        records = []
        for variant in {item.route.variant for item in items}:
            chosen = [i for i, item in enumerate(items) if item.route.variant == variant]
            model = items[chosen[0]].route.model
            windows = model.scale(np.stack([items[i].window for i in chosen]))
            proba = model.predict_scaled(windows)
            elapsed = time.perf_counter() - started
            INFERENCE_SECONDS.labels(endpoint=endpoint, variant=variant).observe(elapsed)
            PREDICTIONS.labels(variant=variant, version=model.version).inc(len(chosen))
            m = model.manifest
            for row, i in enumerate(chosen):
                symbol, client, epoch = items[i].symbol, items[i].client, items[i].epoch
                probabilities = dict(zip(m.classes, map(float, proba[row]), strict=True))
                results[i] = Prediction(
                    registered_model=model.registered_model,
                    version=model.version,
                    variant=variant,
                    symbols=m.symbols,
                    symbol=symbol,
                    probabilities=probabilities,
                    prediction=m.classes[int(proba[row].argmax())],
                    epoch=epoch,
                    latency_ms=elapsed * 1e3,
                )
                records.append(
                    {
                        "endpoint": endpoint,
                        "symbol": symbol,
                        "registered_model": model.registered_model,
                        "version": model.version,
                        "variant": variant,
                        "client": client,
                        "epoch": epoch,
                        "features_digest": features_digest(windows[row]),
                        "features": [float(v) for v in items[i].window[-1]],  # the last row, raw: what drift compares
                        "probabilities": probabilities,
                        "latency_ms": elapsed * 1e3,
                    }
                )
        self.log.write(records)
        return results

    @staticmethod
    def _client(client_id: str, ctx: bentoml.Context) -> str | None:
        return client_id or ctx.request.headers.get("x-client-id")

    @bentoml.api(route="/predict/features", input_spec=FeatureWindow)
    def predict_features(self, symbol: str, features: list[list[float]], client_id: str, ctx: bentoml.Context) -> Prediction:
        """One prediction from a precomputed raw feature window."""
        started = time.perf_counter()
        self._require_champion()
        client = self._client(client_id, ctx)
        window = np.asarray(features, np.float64)
        return self._predict("features", [_Item(symbol, client, self._route(client), window)], started)[0]

    @bentoml.api(route="/predict/ticks", input_spec=TickWindow)
    def predict_ticks(
        self, symbol: str, epochs: list[int], quotes: list[float], client_id: str, ctx: bentoml.Context
    ) -> Prediction:
        """One prediction at the last tick of a raw tick window (features computed here, by training's code)."""
        started = time.perf_counter()
        self._require_champion()
        client = self._client(client_id, ctx)
        route = self._route(client)
        model = route.model  # the window gets this model's fitted features, and this model predicts it
        try:
            window = model.features_from_ticks(symbol, epochs, quotes)
        except FeatureInputError as exc:
            raise InvalidArgument(f"ticks: {exc}") from exc
        if not np.isfinite(window).all():
            raise InvalidArgument(f"ticks: features are not all defined; send at least {model.manifest.min_ticks} ticks")
        return self._predict("ticks", [_Item(symbol, client, route, window, epochs[-1])], started)[0]

    # max_latency_ms bounds the wait for a batch to fill; past it BentoML answers 503, so it is generous.
    # A larger max_batch_size made the dispatcher wait for batches that never filled (half the throughput).
    @bentoml.api(route="/predict/batch", batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=1000)
    def predict_batch(
        self, windows: Annotated[list[FeatureWindow], Field(min_length=1, max_length=MAX_BATCH)]
    ) -> list[Prediction]:
        """Many feature windows in one call; concurrent calls are merged into one ONNX run (adaptive batching)."""
        started = time.perf_counter()
        self._require_champion()
        items = [_Item(w.symbol, w.client_id, self._route(w.client_id), np.asarray(w.features, np.float64)) for w in windows]
        return self._predict("batch", items, started)

    # -- streaming -----------------------------------------------------------------------------

    @stream_app.websocket("/ticks")
    async def stream_ticks(self, websocket: WebSocket) -> None:
        """Send ticks as JSON ({"symbol", "epoch", "quote"}), one message each; every tick is answered
        with a prediction, or with the warm-up still needed, or with an error naming the field."""
        await websocket.accept()
        client = websocket.query_params.get("client_id") or websocket.headers.get("x-client-id")
        stream: _Stream | None = None
        try:
            while True:
                message = await websocket.receive_text()
                started = time.perf_counter()
                try:
                    tick = StreamTick.model_validate_json(message)
                    self._require_champion()
                except ValidationError as exc:
                    await websocket.send_json({"error": _first_error(exc)})
                    continue
                except ServiceUnavailable as exc:
                    await websocket.send_json({"error": str(exc)})
                    continue
                route = self._route(client)
                if stream is None or stream.route != route:
                    stream = _Stream(route)  # a new model: its own fitted features
                await websocket.send_json(self._stream_step(stream, tick, client, started))
        except WebSocketDisconnect:
            return

    def _stream_step(self, stream: _Stream, tick: StreamTick, client: str | None, started: float) -> dict:
        model = stream.route.model
        if tick.symbol not in model.manifest.symbols:
            return {"error": f"symbol: unknown symbol {tick.symbol!r}: the served model knows {model.manifest.symbols}"}
        if tick.symbol not in stream.states:
            stream.states[tick.symbol] = (model.feature_state(tick.symbol), deque(maxlen=model.manifest.window))
        state, rows = stream.states[tick.symbol]
        try:
            rows.append(state.update(tick.epoch, tick.quote))
        except FeatureInputError as exc:
            return {"error": f"tick: {exc}"}
        if len(rows) < model.manifest.window or not np.isfinite(rows[0]).all():
            return {"symbol": tick.symbol, "epoch": tick.epoch, "ready": False, "warmup_left": model.manifest.min_ticks - state.n}
        prediction = self._predict("stream", [_Item(tick.symbol, client, stream.route, np.stack(rows), tick.epoch)], started)[0]
        return {"ready": True, **prediction.model_dump()}


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    return f"{'.'.join(map(str, error['loc'])) or 'message'}: {error['msg']}"


def _expected(model: OnnxPredictor) -> Expected:
    m = model.manifest
    return Expected(tuple(m.symbols), m.window, len(m.feature_names), m.min_ticks)


def _compatible(a: OnnxPredictor, b: OnnxPredictor) -> bool:
    return _expected(a) == _expected(b)


Scalping.add_asgi_middleware(ApiKeyMiddleware)
