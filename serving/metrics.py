"""The service's own Prometheus metrics, beside BentoML's request counts and latencies on /metrics:
which versions are served, the model time per request, the predictions and the failed predictions
per variant (what the canary controller judges a challenger by)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
# Predictions that raised (the model failed, not the client: a 400 is never counted), per window as
# `scalping_predictions`, so errors / (errors + predictions) is a variant's error rate.
PREDICTION_ERRORS = Counter("scalping_prediction_errors", "predictions that failed in the model", ["variant"])
# Batch requests read, per body format: how far clients have moved to the binary body (the cheaper to read).
BATCH_BODIES = Counter("scalping_batch_bodies", "batch requests read, per body format (json, arrow)", ["format"])
