"""The BentoML prediction service: the registry's `champion` (and, for a share of clients, its
`challenger`) as ONNX graphs behind HTTP and WebSocket endpoints.

    bentoml serve serving.service:Scalping

Settings come from `scalping_assets.settings.Settings` (the environment); the model is found
through MLflow's registry at start-up, again every SCALPING_FOLLOW_INTERVAL seconds and on POST
/reload, so a newly promoted champion is served without a restart. The endpoints live here;
`models` holds what is served, `predictions` how an answer is made, `batch_body` how a batch is read
(JSON or Arrow), `middleware` the API key.
"""

from __future__ import annotations

import gc
import threading
import time

import bentoml
import numpy as np
from bentoml.exceptions import InvalidArgument, ServiceUnavailable
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from scalping_assets.features.batch import FeatureInputError
from scalping_assets.models.tracking import CHAMPION
from scalping_assets.settings import Settings

from .batch_body import BatchRequest
from .middleware import ApiKeyMiddleware
from .models import ModelSet
from .predictions import Item, Stream, predict, stream_step
from .predlog import PredictionLog
from .schemas import MAX_BATCH, BatchWindow, FeatureWindow, Prediction, StreamTick, TickWindow

# Read once per process: the decorator needs it at import time, and every worker imports this module.
SETTINGS = Settings()

stream_app = FastAPI(title="tick stream")


@bentoml.service(
    name="scalping",
    # Each worker holds its own models; a reload by one is passed on to the others by a marker file.
    workers=SETTINGS.workers,
    traffic={"timeout": 30},
    # One log line per request costs more than a prediction; the prediction log and /metrics keep the record.
    logging={"access": {"enabled": SETTINGS.access_log}},
    # Sub-millisecond buckets: the defaults start at 5 ms, above most of this service's requests.
    metrics={"duration": {"buckets": [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0]}},
)
@bentoml.asgi_app(stream_app, path="/stream")
class Scalping:
    def __init__(self) -> None:
        self.models = ModelSet(SETTINGS)
        self.log = PredictionLog(SETTINGS.prediction_log_dir())
        if SETTINGS.follow_interval_s > 0:  # a daemon thread: it ends with the worker
            follow = threading.Thread(
                target=self.models.follow_registry,
                args=(SETTINGS.follow_interval_s, threading.Event()),
                name="follow-registry",
                daemon=True,
            )
            follow.start()
        # Requests allocate thousands of small objects (a tick window is 2,600 of them), which triggers
        # full collections over everything imported at start-up: tens of ms each. Exempt the latter.
        gc.freeze()

    # -- what is served ------------------------------------------------------------------------

    @bentoml.api(route="/reload")
    def reload(self) -> dict:
        """Resolve the aliases again and load whatever changed; answers what is served now."""
        return self.models.reload().model_dump()

    def __is_ready__(self) -> bool:
        self.models.follow_reloads()
        return self.models.ready

    @bentoml.api(route="/info")
    def info(self) -> dict:
        """What is served: each alias's model, its window and features, the A/B split and the canary
        rollout that sets it (null: none ever ran, the static share applies)."""
        self.models.follow_reloads()
        canary = self.models.pinned.canary
        return {
            "models": {alias: model.info() for alias, model in self.models.loaded.items()},
            "challenger_share": self.models.challenger_share,
            "canary": None if canary is None else canary.model_dump(mode="json"),
            "auth": bool(SETTINGS.api_key.get_secret_value()),
            "problems": self.models.problems,
        }

    # -- predictions ---------------------------------------------------------------------------

    def _require_champion(self) -> None:
        """Once per request: follow a reload another worker made, and 503 while there is nothing to serve."""
        self.models.follow_reloads()
        if not self.models.ready:
            raise ServiceUnavailable(f"no champion loaded: {self.models.problems.get(CHAMPION, 'unknown')}")

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
        return predict("features", [Item(symbol, client, self.models.route(client), window)], started, self.log)[0]

    @bentoml.api(route="/predict/ticks", input_spec=TickWindow)
    def predict_ticks(
        self, symbol: str, epochs: list[int], quotes: list[float], client_id: str, ctx: bentoml.Context
    ) -> Prediction:
        """One prediction at the last tick of a raw tick window (features computed here, by training's code)."""
        started = time.perf_counter()
        self._require_champion()
        client = self._client(client_id, ctx)
        route = self.models.route(client)
        model = route.model  # the window gets this model's fitted features, and this model predicts it
        try:
            window = model.features_from_ticks(symbol, epochs, quotes)
        except FeatureInputError as exc:
            raise InvalidArgument(f"ticks: {exc}") from exc
        if not np.isfinite(window).all():
            raise InvalidArgument(f"ticks: features are not all defined; send at least {model.manifest.min_ticks} ticks")
        return predict("ticks", [Item(symbol, client, route, window, epochs[-1])], started, self.log)[0]

    # max_latency_ms bounds the wait for a batch to fill; past it BentoML answers 503, so it is generous.
    # A larger max_batch_size made the dispatcher wait for batches that never filled (half the throughput).
    @bentoml.api(route="/predict/batch", input_spec=BatchRequest, batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=1000)
    def predict_batch(self, windows: list[BatchWindow]) -> list[Prediction]:
        """Many feature windows in one call, as JSON or as an Arrow IPC stream (Content-Type
        application/vnd.apache.arrow.stream: columns symbol, client_id, features); concurrent calls
        are merged into one ONNX run (adaptive batching)."""
        started = time.perf_counter()
        self._require_champion()
        items = [Item(w.symbol, w.client_id, self.models.route(w.client_id), w.features) for w in windows]
        return predict("batch", items, started, self.log)

    # -- streaming -----------------------------------------------------------------------------

    @stream_app.websocket("/ticks")
    async def stream_ticks(self, websocket: WebSocket) -> None:
        """Send ticks as JSON ({"symbol", "epoch", "quote"}), one message each; every tick is answered
        with a prediction, or with the warm-up still needed, or with an error naming the field."""
        await websocket.accept()
        client = websocket.query_params.get("client_id") or websocket.headers.get("x-client-id")
        stream: Stream | None = None
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
                route = self.models.route(client)
                if stream is None or stream.route != route:
                    stream = Stream(route)  # a new model: its own fitted features
                await websocket.send_json(stream_step(stream, tick, client, started, self.log))
        except WebSocketDisconnect:
            return


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    return f"{'.'.join(map(str, error['loc'])) or 'message'}: {error['msg']}"


Scalping.add_asgi_middleware(ApiKeyMiddleware, api_key=SETTINGS.api_key)
