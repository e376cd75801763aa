"""Export a registered model version to a serving bundle: ONNX graphs with a fixed look-back window
and a dynamic batch axis, an INT8 dynamically quantised variant of every part whose family can use
one, and the parity and latency measured on the dataset's test span.

Each part is a model family's native model, converted by its family (`ModelFamily.to_onnx`) and
checked against the family's own predictions; the stacked ensemble is its base parts plus the
logistic-regression meta-learner (skl2onnx). The version's calibration (the run's `calibration.json`)
travels with the graphs and parity is measured on what is served: the bundle's calibrated
probabilities against the calibrated predictions of the trained model, i.e. the logged test
predictions the backtest replayed. INT8 is kept only where it is faster than FP32 and agrees with it
on at least `min_agreement` of the test windows' (calibrated) classes.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from skl2onnx import to_onnx

from scalping_assets.backtest.runs import load_predictions
from scalping_assets.features.dataset import Dataset, SequenceWindows
from scalping_assets.features.labels import PROBABILITY_COLUMNS
from scalping_assets.models import calibration
from scalping_assets.models.calibration import Calibration
from scalping_assets.models.ensemble import BASES_ARTIFACT
from scalping_assets.models.families import family
from scalping_assets.models.family import ModelFamily
from scalping_assets.models.tracking import CLEARED_TAG, Tracker

from .bundle import ARTIFACT_PATH, Manifest, OnnxPredictor, Part, write_manifest

FP32_TOLERANCE = 1e-4  # max |Δprob| between the FP32 bundle and the trained model, both calibrated
META_OPSET = 17


def _cleared(tags: dict[str, str]) -> list[str] | None:
    """The gate's per-symbol clearance of a version (None: never judged per symbol)."""
    return [s for s in tags[CLEARED_TAG].split(",") if s] if CLEARED_TAG in tags else None


class ExportError(ValueError):
    pass


@dataclass
class ExportReport:
    manifest: Manifest
    folder: Path
    fp32_max_abs_diff: float  # ONNX FP32 vs the trained model, calibrated probabilities, over the test windows
    int8_agreement: float | None  # class agreement INT8 vs FP32 (None: no part can be quantised)
    int8_kept: bool
    logged: bool  # only a bundle within FP32_TOLERANCE of the trained model reaches the registry
    latency_us: dict[str, dict[str, float]]  # precision -> p50/p99 of one window, in process
    test_windows: int

    def summary(self) -> dict:
        return {
            "fp32_max_abs_diff": self.fp32_max_abs_diff,
            "int8_agreement": self.int8_agreement,
            "int8_kept": self.int8_kept,
            "logged": self.logged,
            "latency_us": self.latency_us,
            "test_windows": self.test_windows,
            "precision": self.manifest.precision,
        }


def _family(name: str, version: str, kind: str | None) -> ModelFamily:
    try:
        return family(kind)
    except ValueError as exc:
        raise ExportError(f"{name} v{version}: no ONNX export for model type {kind!r} ({exc})") from exc


def _version_parts(tracker: Tracker, name: str, version: str) -> tuple[str, list[tuple[ModelFamily, str]], object | None]:
    """(model type, [(family, model uri)] of its parts, the ensemble's meta-learner or None)."""
    run_id = tracker.version_run_id(name, version)
    kind = tracker.run_tags(run_id).get("model_type")
    uri = f"models:/{name}/{version}"
    if kind != "ensemble":
        return kind, [(_family(name, version, kind), uri)], None
    try:
        bases = tracker.load_dict(run_id, BASES_ARTIFACT)["bases"]
    except FileNotFoundError as exc:  # an ensemble logged before its bases were recorded
        raise ExportError(f"{name} v{version} is an ensemble without {BASES_ARTIFACT}: retrain it to export") from exc
    parts = [(_family(name, version, b["kind"]), b["model_uri"]) for b in bases]
    return kind, parts, tracker.load_model("sklearn", uri)


def _calibration(tracker: Tracker, run_id: str) -> Calibration | None:
    """The calibration logged with a version's run; None for a version trained before calibration
    (its logged test predictions, what its backtest replayed, are the model's own)."""
    try:
        return Calibration.model_validate(tracker.load_dict(run_id, calibration.ARTIFACT))
    except FileNotFoundError:
        return None


def quantise(folder: Path, part: Part) -> None:
    """Write the INT8 variant of `part` (dynamic quantisation of its weights) beside its FP32 graph and
    point the part at it."""
    part.int8 = part.fp32.removesuffix(".onnx") + ".int8.onnx"
    quantize_dynamic(folder / part.fp32, folder / part.int8, weight_type=QuantType.QInt8)


def latency_us(
    predict: Callable[[np.ndarray], object], inputs: list[np.ndarray], repeats: int, warmup: int = 0
) -> dict[str, float]:
    """p50 and p99 in µs of `repeats` calls of `predict`, cycling through `inputs`, after `warmup` calls."""
    for i in range(warmup):
        predict(inputs[i % len(inputs)])
    times = []
    for i in range(repeats):
        x = inputs[i % len(inputs)]
        start = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - start)
    us = np.asarray(times) * 1e6
    return {"p50": float(np.percentile(us, 50)), "p99": float(np.percentile(us, 99))}


def predict_windows(
    predictor: OnnxPredictor, windows: SequenceWindows, symbols: Sequence[str] | np.ndarray, batch: int = 4096
) -> np.ndarray:
    """Served (calibrated) probabilities of every window of `symbols` (one per window), in batches."""
    symbols = np.asarray(symbols)
    out = [
        predictor.predict_scaled(windows[np.arange(s, min(s + batch, len(windows)))][0], symbols[s : s + batch])
        for s in range(0, len(windows), batch)
    ]
    return np.concatenate(out)


def _logged_truth(tracker: Tracker, run_id: str, dataset: Dataset, windows: SequenceWindows, symbols: np.ndarray) -> np.ndarray:
    """The trained model's calibrated probabilities of the test windows, as its run logged them (what its
    backtest replayed): read rather than predicted again, after checking they are of the same windows."""
    logged = load_predictions(tracker, run_id)
    epochs = dataset.rows("test")["epoch"].to_numpy()[windows.ends]
    same = len(logged) == len(windows) and (logged["symbol"].to_numpy() == symbols).all() and (logged["epoch"] == epochs).all()
    if not same:
        raise ExportError(
            f"run {run_id}: its logged test predictions ({len(logged):,} rows) are not of the dataset's "
            f"{len(windows):,} test windows"
        )
    return logged[PROBABILITY_COLUMNS].to_numpy(np.float64)


def export_version(
    tracker: Tracker,
    name: str,
    version: str,
    dataset: Dataset,
    folder: str | Path,
    min_agreement: float = 0.99,
    latency_repeats: int = 300,
) -> ExportReport:
    """Write the bundle of `name` v`version` to `folder`, measure parity and latency on the test span,
    and log the bundle to the version's run under `onnx/` (tagging the version with the outcome) if its
    FP32 graph is within FP32_TOLERANCE of the trained model."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    run_id = tracker.version_run_id(name, version)
    fingerprint = tracker.run_tags(run_id).get("dataset_fingerprint")
    if fingerprint != dataset.meta.fingerprint:
        raise ExportError(
            f"{name} v{version} was trained on dataset {fingerprint}, not on the given one ({dataset.meta.fingerprint}): "
            "parity must be measured on the model's own test span"
        )
    kind, specs, meta_learner = _version_parts(tracker, name, version)
    n_features, window = len(dataset.feature_names), dataset.meta.spec.sequence_length
    references = [(part_family, part_family.load(tracker, uri)) for part_family, uri in specs]  # the trained parts
    parts = []
    for i, (part_family, model) in enumerate(references):
        # A part is named by its family's kind: what reads the bundle can find the family again.
        fp32 = f"part{i}_{part_family.kind}.onnx"
        (folder / fp32).write_bytes(part_family.to_onnx(model, n_features, window))
        parts.append(Part(name=part_family.kind, input=part_family.input, fp32=fp32))
    quantisable = [part for part, (part_family, _) in zip(parts, references, strict=True) if part_family.quantisable]
    for part in quantisable:
        quantise(folder, part)
    fitted = _calibration(tracker, run_id)
    if fitted is not None:
        (folder / calibration.ARTIFACT).write_text(fitted.model_dump_json())
    meta_file = None
    if meta_learner is not None:
        example = np.zeros((1, 3 * len(parts)), np.float32)
        graph = to_onnx(meta_learner, example, options={id(meta_learner): {"zipmap": False}}, target_opset=META_OPSET)
        onnx.save(graph, folder / "meta.onnx")
        meta_file = "meta.onnx"
    manifest = Manifest(
        registered_model=name,
        version=str(version),
        run_id=run_id,
        kind=kind,
        symbols=dataset.meta.spec.symbols,
        feature_names=dataset.feature_names,
        window=window,
        scaler_mean=dataset.meta.scaler_mean,
        scaler_scale=dataset.meta.scaler_scale,
        fitted=dataset.meta.fitted,
        parts=parts,
        meta=meta_file,
        calibration=None if fitted is None else calibration.ARTIFACT,
        cleared_symbols=_cleared(tracker.version_tags(name, version)),
    )
    write_manifest(folder, manifest)

    windows = dataset.windows("test")
    symbols = calibration.window_symbols(dataset, "test")
    truth = _logged_truth(tracker, run_id, dataset, windows, symbols)
    fp32 = OnnxPredictor(folder, "fp32")
    fp32_proba = predict_windows(fp32, windows, symbols)
    fp32_diff = float(np.abs(fp32_proba - truth).max())
    singles = list(windows[np.arange(min(len(windows), 256))][0][:, None])  # one window per call

    def served(predictor: OnnxPredictor) -> Callable[[np.ndarray], np.ndarray]:
        """One window of the first test symbol per call, calibration included: what a request costs."""
        return lambda window: predictor.predict_scaled(window, str(symbols[0]))

    latency = {"fp32": latency_us(served(fp32), singles, latency_repeats)}
    agreement, keep_int8 = None, False
    if quantisable:
        int8 = OnnxPredictor(folder, "int8")
        agreement = float((predict_windows(int8, windows, symbols).argmax(axis=1) == fp32_proba.argmax(axis=1)).mean())
        latency["int8"] = latency_us(served(int8), singles, latency_repeats)
        keep_int8 = agreement >= min_agreement and latency["int8"]["p50"] < latency["fp32"]["p50"]
    if not keep_int8:
        for part in quantisable:
            (folder / part.int8).unlink()
            part.int8 = None
    manifest.precision = "int8" if keep_int8 else "fp32"
    logged = fp32_diff <= FP32_TOLERANCE
    report = ExportReport(manifest, folder, fp32_diff, agreement, keep_int8, logged, latency, len(truth))
    manifest.export = report.summary()
    write_manifest(folder, manifest)
    if logged:
        # A re-export may leave an earlier INT8 file in the run: harmless, the manifest names what is served.
        tracker.reopen(run_id).folder(folder, ARTIFACT_PATH)
        for key, value in {"onnx_precision": manifest.precision, "onnx_fp32_max_abs_diff": f"{fp32_diff:.3g}"}.items():
            tracker.set_version_tag(name, version, key, value)
    return report
