"""Prediction assembly: routed feature windows in, calibrated answers out (one ONNX run per variant),
each one counted in the metrics and written to the prediction log; and a stream client's per-symbol feature
state, one tick at a time."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from bentoml.exceptions import InvalidArgument

from scalping_assets.features.batch import FeatureInputError

from .metrics import INFERENCE_SECONDS, PREDICTION_ERRORS, PREDICTIONS
from .models import Route
from .predlog import PredictionLog, features_digest
from .schemas import Prediction, StreamTick


class Item(NamedTuple):
    """One prediction to make: a raw feature window and the model it was routed to."""

    symbol: str
    client: str | None
    route: Route
    window: np.ndarray  # (L, F), raw
    epoch: int | None = None  # the tick predicted at (raw ticks, the stream)


@dataclass
class Stream:
    """One WebSocket client's feature state per symbol, tied to the model it was built for."""

    route: Route
    states: dict = field(default_factory=dict)  # symbol -> (FeatureState, deque of feature rows)


def not_cleared(symbol: str, route: Route) -> str | None:
    """Why the routed model must not answer for `symbol`: the gate did not clear it there (None: it did)."""
    m = route.model.manifest
    if m.cleared(symbol):
        return None
    return (
        f"symbol: {symbol} is not cleared by the promotion gate for {m.registered_model} v{m.version} "
        f"(cleared: {', '.join(m.cleared_symbols) or 'none'}): its backtest there did not pass"
    )


def predict(endpoint: str, items: list[Item], started: float, log: PredictionLog) -> list[Prediction]:
    """One ONNX call per variant; each item is predicted by the model it was routed to. A symbol the
    routed model was not cleared for is refused (400) before anything is predicted."""
    for i, item in enumerate(items):
        if (why := not_cleared(item.symbol, item.route)) is not None:
            raise InvalidArgument(why if len(items) == 1 else f"windows[{i}].{why}")
    results: list[Prediction | None] = [None] * len(items)
    records = []
    for variant in {item.route.variant for item in items}:
        chosen = [i for i, item in enumerate(items) if item.route.variant == variant]
        model = items[chosen[0]].route.model
        try:
            windows = model.scale(np.stack([items[i].window for i in chosen]))
            # Calibrated per symbol after the graphs: the probabilities the backtest replayed.
            proba = model.predict_scaled(windows, [items[i].symbol for i in chosen])
        except Exception:  # the request was valid (checked above and by the schemas): the model failed
            PREDICTION_ERRORS.labels(variant=variant).inc(len(chosen))
            raise
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
    log.write(records)
    return results


def stream_step(stream: Stream, tick: StreamTick, client: str | None, started: float, log: PredictionLog) -> dict:
    """The answer to one streamed tick: a prediction, the warm-up still needed, or an error naming the field."""
    model = stream.route.model
    if tick.symbol not in model.manifest.symbols:
        return {"error": f"symbol: unknown symbol {tick.symbol!r}: the served model knows {model.manifest.symbols}"}
    if (why := not_cleared(tick.symbol, stream.route)) is not None:
        return {"error": why}
    if tick.symbol not in stream.states:
        stream.states[tick.symbol] = (model.feature_state(tick.symbol), deque(maxlen=model.manifest.window))
    state, rows = stream.states[tick.symbol]
    try:
        rows.append(state.update(tick.epoch, tick.quote))
    except FeatureInputError as exc:
        return {"error": f"tick: {exc}"}
    if not model.manifest.window_ready(rows):
        return {"symbol": tick.symbol, "epoch": tick.epoch, "ready": False, "warmup_left": model.manifest.min_ticks - state.n}
    item = Item(tick.symbol, client, stream.route, np.stack(rows), tick.epoch)
    prediction = predict("stream", [item], started, log)[0]
    return {"ready": True, **prediction.model_dump()}
