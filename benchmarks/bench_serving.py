"""Serving latency and throughput: in process (trained model vs ONNX FP32 vs ONNX INT8, one window at a
time) and over HTTP against a real `bentoml serve` on loopback.

    python benchmarks/bench_serving.py [--repeats 2000] [--duration 30] [--runs 3] [--clients 32] [--batch 16]

Models: every family trained briefly (demo profile, one epoch) on one SIG_AR1 day with 100-tick
windows of 34 features; latency depends on a model's size, not on how well it learnt. In process:
one thread, one window per call, `--repeats` calls after a warm-up; the baseline is the trained
model itself through its family's `predict` (torch, native XGBoost; the scikit-learn meta-learner
over them). Over HTTP the server serves, in turn, the ensemble (the heaviest graph: four parts and
the meta-learner) and XGBoost (the lightest), with two workers and the API key on; the clients run
on the same two cores. Single requests are sequential on one keep-alive connection (httpx);
throughput is `--clients` concurrent clients for `--duration` s, each request one window
(/predict/features) or `--batch` windows (/predict/batch, merged further by adaptive batching) as
JSON or as an Arrow IPC stream (`serving.arrow_batch`, float64: the values the JSON carries), sent
by aiohttp. The three loads take turns for `--runs` rounds, so that a change in the machine's load
falls on both formats alike; each row is its median round, and Arrow / JSON is the median of the
rounds' ratios.

Targets on a 2-core machine: in-process p99 < 1 ms; HTTP p99 < 10 ms single-request; >= 2,000
predictions/s with batching (the Arrow body on the ensemble); no errors.
"""

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import aiohttp  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from scalping_assets.features.dataset import SequenceWindows  # noqa: E402
from scalping_assets.models.families import MODEL_KINDS, family  # noqa: E402
from scalping_assets.models.tracking import CHALLENGER, CHAMPION  # noqa: E402
from scalping_assets.testing.bentoml_server import bentoml_server  # noqa: E402
from scalping_assets_tests.serving_helpers import SYMBOL, ServedModels, train_served_models  # noqa: E402
from serving.arrow_batch import ARROW_STREAM, encode_batch  # noqa: E402
from serving.bundle import OnnxPredictor, write_manifest  # noqa: E402
from serving.export import ExportReport, latency_us, quantise  # noqa: E402

API_KEY = "bench"
JSON = "application/json"
WARMUP = 50  # calls before timing
TRAINING = {"epochs": 1, "max_train_windows": 2_000, "max_eval_windows": 1_000, "n_estimators": 100}


def percentiles(seconds: list[float]) -> tuple[float, float]:
    us = np.asarray(seconds) * 1e6
    return float(np.percentile(us, 50)), float(np.percentile(us, 99))


def trained_model(served: ServedModels, kind: str):
    """One scaled window (1, L, F) -> probabilities, through the model as trained."""
    candidates = served.candidates
    if kind == "ensemble":
        parts = [trained_model(served, k) for k in MODEL_KINDS]  # the bases, in the order they were stacked
        return lambda w: candidates["ensemble"].model.predict([p(w) for p in parts])
    trained = candidates[kind].model
    length = served.dataset.meta.spec.sequence_length
    ends, labels = np.array([length - 1]), np.zeros(length, np.int64)  # one window: all the rows (labels unread)
    return lambda w: trained.family.predict(trained.model, SequenceWindows(w[0], labels, ends, length))


def int8_variant(report: ExportReport, folder: Path) -> OnnxPredictor | None:
    """The INT8 graphs even where the export dropped them (slower or below the agreement): timed here."""
    if report.int8_agreement is None:
        return None
    copy = folder / f"int8-{report.manifest.kind}"
    shutil.copytree(report.folder, copy, dirs_exist_ok=True)
    manifest = report.manifest.model_copy(deep=True)
    for part in manifest.parts:
        if family(part.name).quantisable:  # a part is named by its family's kind
            quantise(copy, part)
    write_manifest(copy, manifest)
    return OnnxPredictor(copy, "int8")


def in_process(served: ServedModels, repeats: int, folder: Path) -> None:
    torch.set_num_threads(1)
    windows = served.dataset.windows("test")
    inputs = [windows[np.array([i])][0] for i in range(0, min(len(windows), 5_000), 25)]
    shape = f"{windows.length} ticks x {windows.x.shape[1]} features"
    print(f"\nin process, one window ({shape}), one thread, {repeats} calls (us)")
    header = f"{'trained p50':>11} {'p99':>7} {'FP32 p50':>9} {'p99':>7} {'INT8 p50':>9} {'p99':>7} {'FP32 speed-up':>13}"
    print(f"{'model':<12} {header}  served")
    for kind in (*MODEL_KINDS, "ensemble"):
        report = served.export(kind)
        baseline = latency_us(trained_model(served, kind), inputs, repeats, WARMUP)
        fp32 = latency_us(OnnxPredictor(report.folder, "fp32").predict_scaled, inputs, repeats, WARMUP)
        quantised = int8_variant(report, folder)
        int8 = latency_us(quantised.predict_scaled, inputs, repeats, WARMUP) if quantised else None
        int8_text = f"{int8['p50']:>9.1f} {int8['p99']:>7.1f}" if int8 else f"{'-':>9} {'-':>7}"
        agreement = f" (INT8 agreement {report.int8_agreement:.4f})" if report.int8_agreement is not None else ""
        print(
            f"{kind:<12} {baseline['p50']:>11.1f} {baseline['p99']:>7.1f} {fp32['p50']:>9.1f} {fp32['p99']:>7.1f} {int8_text} "
            f"{baseline['p50'] / fp32['p50']:>12.1f}x  {report.manifest.precision}{agreement}"
        )


def sequential(client: httpx.Client, path: str, body: bytes, n: int) -> tuple[float, float, int]:
    times, errors = [], 0
    for i in range(n + 20):
        start = time.perf_counter()
        response = client.post(path, content=body)
        if i >= 20:
            times.append(time.perf_counter() - start)
            errors += response.status_code != 200
    p50, p99 = percentiles(times)
    return p50 / 1e3, p99 / 1e3, errors


async def load(url: str, path: str, body: bytes, content_type: str, per_request: int, clients: int, duration: float) -> dict:
    """Closed loop: each client sends its next request when the last one is answered (aiohttp: the
    load generator shares the two cores with the server and must cost as little as possible). Only
    answered requests count as predictions; the others are counted per status (or client error)."""
    latencies: list[float] = []
    statuses: Counter[int | str] = Counter()
    headers = {"x-api-key": API_KEY, "content-type": content_type}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector) as session:
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    async with session.post(path, data=body) as response:
                        await response.read()
                        statuses[response.status] += 1
                except aiohttp.ClientError as exc:
                    statuses[type(exc).__name__] += 1
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    p50, p99 = percentiles(latencies)
    failed = {status: n for status, n in statuses.items() if status != 200}
    return {
        "requests": len(latencies),
        "predictions_per_s": statuses[200] * per_request / elapsed,
        "p50_ms": p50 / 1e3,
        "p99_ms": p99 / 1e3,
        "failed": failed,
    }


def median_run(runs: list[dict]) -> dict:
    """The round of median throughput (the lower middle one of an even count): its own latencies with it."""
    return sorted(runs, key=lambda run: run["predictions_per_s"])[(len(runs) - 1) // 2]


def over_http(served: ServedModels, kind: str, args: argparse.Namespace, folder: Path) -> None:
    served.export(kind)
    served.tracker.set_alias(served.name, CHAMPION, served.candidates[kind].version)
    env = {
        "MLFLOW_TRACKING_URI": served.tracker.tracking_uri,
        "SCALPING_MODEL": served.name,
        "SCALPING_API_KEY": API_KEY,
        "SCALPING_WORKERS": str(args.workers),
        "SCALPING_PREDICTION_LOG": str(folder / kind / "predictions"),
        "SCALPING_BUNDLE_CACHE": str(folder / kind / "cache"),
    }
    test = served.dataset.rows("test")
    window = test[served.dataset.feature_names].iloc[:100].to_numpy().tolist()
    single = json.dumps({"symbol": SYMBOL, "features": window}).encode()
    batch = json.dumps({"windows": [{"symbol": SYMBOL, "features": window}] * args.batch}).encode()
    arrow = encode_batch([window] * args.batch, SYMBOL)
    predictor = OnnxPredictor(served.exports[kind].folder)
    ticks = served.ticks.iloc[-predictor.manifest.min_ticks :]
    tick_body = json.dumps({"symbol": SYMBOL, "epochs": ticks["epoch"].tolist(), "quotes": ticks["quote"].tolist()}).encode()
    (folder / kind).mkdir(parents=True, exist_ok=True)
    with bentoml_server(env, folder / kind / "server.log") as url:
        with httpx.Client(base_url=url, headers={"x-api-key": API_KEY, "content-type": JSON}, timeout=30) as client:
            print(f"\nHTTP, {kind} v{served.candidates[kind].version} as champion, {args.workers} worker(s) (ms)")
            print(f"{'single request, sequential':<44} {'p50':>7} {'p99':>7} {'errors':>7}")
            for label, path, body, n in (
                ("/predict/features (one window)", "/predict/features", single, args.requests),
                (f"/predict/ticks ({len(ticks):,} raw ticks)", "/predict/ticks", tick_body, args.requests // 5),
            ):
                p50, p99, errors = sequential(client, path, body, n)
                print(f"{label:<44} {p50:>7.2f} {p99:>7.2f} {errors:>7}")
        print(f"\n{args.clients} concurrent clients for {args.duration:.0f} s, median of {args.runs} rounds")
        print(
            f"{'endpoint':<40} {'requests':>9} {'predictions/s':>14} {'p50 ms':>7} {'p99 ms':>7} {'errors':>7} {'vs single':>9}"
        )
        loads = {
            "/predict/features": ("/predict/features", single, JSON, 1),
            f"/predict/batch ({args.batch} windows, JSON)": ("/predict/batch", batch, JSON, args.batch),
            f"/predict/batch ({args.batch} windows, Arrow)": ("/predict/batch", arrow, ARROW_STREAM, args.batch),
        }
        rounds = [
            {label: asyncio.run(load(url, *spec, args.clients, args.duration)) for label, spec in loads.items()}
            for _ in range(args.runs)
        ]
        baseline = None
        for label in loads:
            runs = [r[label] for r in rounds]
            r = median_run(runs)
            baseline = baseline or r["predictions_per_s"]
            print(
                f"{label:<40} {r['requests']:>9,} {r['predictions_per_s']:>14,.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
                f"{sum(sum(run['failed'].values()) for run in runs):>7} {r['predictions_per_s'] / baseline:>8.1f}x"
            )
            failed = sum((Counter(run["failed"]) for run in runs), Counter())
            if failed:  # 503 "process is overloaded": a batch waited past max_latency_ms
                print(f"{'':<4}errors by status: {dict(failed)}")
        json_label, arrow_label = list(loads)[1:]
        ratios = [r[arrow_label]["predictions_per_s"] / r[json_label]["predictions_per_s"] for r in rounds]
        print(f"Arrow / JSON, same rounds: {statistics.median(ratios):.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2_000, help="in-process calls per model and precision")
    parser.add_argument("--requests", type=int, default=1_000, help="sequential HTTP requests (raw ticks: a fifth)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per load and round")
    parser.add_argument("--runs", type=int, default=3, help="rounds of the three loads (features, batch JSON, batch Arrow)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--serve", default="ensemble,xgboost", help="champions to serve in turn (the heaviest and the lightest)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("training and exporting every family (demo profile, one epoch) ...", flush=True)
        served = train_served_models(folder / "models", sequence_length=100, training=TRAINING)
        in_process(served, args.repeats, folder)
        served.tracker.client.delete_registered_model_alias(served.name, CHALLENGER)
        for kind in args.serve.split(","):
            over_http(served, kind, args, folder)


if __name__ == "__main__":
    main()
