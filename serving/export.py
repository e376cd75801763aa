"""Export a registered model version to a serving bundle: ONNX graphs with a fixed look-back window
and a dynamic batch axis, an INT8 dynamically quantised variant of every neural part, and the
parity and latency measured on the dataset's test span.

Sequence nets go through `torch.onnx.export` with a softmax on top; XGBoost through onnxmltools (its
TreeEnsemble op keeps XGBoost's float32 thresholds, so nothing is lost); the stacked ensemble as its
base graphs plus the logistic-regression meta-learner (skl2onnx). INT8 is kept only where it is
faster than FP32 and agrees with it on at least `min_agreement` of the test windows' classes.
"""

from __future__ import annotations

import io
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxmltools.convert import convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType
from onnxruntime.quantization import QuantType, quantize_dynamic
from skl2onnx import to_onnx

from scalping_assets.features.dataset import Dataset, SequenceWindows
from scalping_assets.models.config import SEQUENCE_KINDS
from scalping_assets.models.ensemble import BASES_ARTIFACT
from scalping_assets.models.tracking import Tracker
from scalping_assets.models.train import predict_proba
from scalping_assets.models.trees import predict_tree

from .bundle import ARTIFACT_PATH, PROBABILITIES, Manifest, OnnxPredictor, Part, write_manifest

FP32_TOLERANCE = 1e-4  # max |Δprob| between the FP32 graph and the trained model
TORCH_OPSET = 17
XGBOOST_OPSET = 15  # the highest onnxmltools' XGBoost converter supports


class ExportError(ValueError):
    pass


@dataclass
class Reference:
    """A part as trained (torch net or XGBoost booster), the truth the ONNX graph is checked against."""

    name: str
    net: torch.nn.Module | None = None
    booster: object | None = None

    def predict(self, windows: SequenceWindows, feature_names: list[str]) -> np.ndarray:
        if self.net is not None:
            return predict_proba(self.net, windows)
        return predict_tree(self.booster, windows.x[windows.ends], feature_names)

    def to_onnx(self, n_features: int, window: int) -> tuple[bytes, str]:
        if self.net is not None:
            net = torch.nn.Sequential(self.net, torch.nn.Softmax(dim=1)).eval()
            buffer = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                torch.onnx.export(
                    net,
                    (torch.zeros(1, window, n_features),),
                    buffer,
                    input_names=["window"],
                    output_names=[PROBABILITIES],
                    dynamic_axes={"window": {0: "batch"}, PROBABILITIES: {0: "batch"}},
                    opset_version=TORCH_OPSET,
                    dynamo=False,
                )
            return buffer.getvalue(), "window"
        booster = self.booster[: self.booster.best_iteration + 1]
        booster.feature_names = None  # the converter wants f0..fN
        model = convert_xgboost(
            booster, initial_types=[("features", FloatTensorType([None, n_features]))], target_opset=XGBOOST_OPSET
        )
        return model.SerializeToString(), "features"


def _load_reference(tracker: Tracker, name: str, kind: str, model_uri: str) -> Reference:
    if kind in SEQUENCE_KINDS:
        return Reference(name, net=tracker.load_model("pytorch", model_uri, map_location="cpu").eval())
    if kind == "xgboost":
        return Reference(name, booster=tracker.load_model("xgboost", model_uri))
    raise ExportError(f"no ONNX export for model type {kind!r}")


@dataclass
class ExportReport:
    manifest: Manifest
    folder: Path
    fp32_max_abs_diff: float  # ONNX FP32 vs the trained model, probabilities, over the test windows
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


def _version_parts(tracker: Tracker, name: str, version: str) -> tuple[str, list[tuple[str, str, str]], object | None]:
    """(model type, [(part name, kind, model uri)], the ensemble's meta-learner or None)."""
    run_id = tracker.version_run_id(name, version)
    kind = tracker.run_tags(run_id).get("model_type")
    uri = f"models:/{name}/{version}"
    if kind != "ensemble":
        return kind, [(kind, kind, uri)], None
    try:
        bases = tracker.load_dict(run_id, BASES_ARTIFACT)["bases"]
    except FileNotFoundError as exc:  # an ensemble logged before its bases were recorded
        raise ExportError(f"{name} v{version} is an ensemble without {BASES_ARTIFACT}: retrain it to export") from exc
    return kind, [(b["kind"], b["kind"], b["model_uri"]) for b in bases], tracker.load_model("sklearn", uri)


def quantise(folder: Path, parts: list[Part]) -> bool:
    """Write an INT8 variant (dynamic quantisation of the weights) of every neural part beside its FP32
    graph and point the part at it; False when no part can be (trees have no MatMul to quantise)."""
    for part in parts:
        if part.input == "window":
            part.int8 = part.fp32.removesuffix(".onnx") + ".int8.onnx"
            quantize_dynamic(folder / part.fp32, folder / part.int8, weight_type=QuantType.QInt8)
    return any(part.int8 for part in parts)


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


def predict_windows(predictor: OnnxPredictor, windows: SequenceWindows, batch: int = 4096) -> np.ndarray:
    """Probabilities of every window, in batches."""
    out = [
        predictor.predict_scaled(windows[np.arange(s, min(s + batch, len(windows)))][0]) for s in range(0, len(windows), batch)
    ]
    return np.concatenate(out)


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
    references = [_load_reference(tracker, part, part_kind, uri) for part, part_kind, uri in specs]
    parts = []
    for i, reference in enumerate(references):
        graph, input_kind = reference.to_onnx(n_features, window)
        fp32 = f"part{i}_{reference.name}.onnx"
        (folder / fp32).write_bytes(graph)
        parts.append(Part(name=reference.name, input=input_kind, fp32=fp32))
    quantisable = quantise(folder, parts)
    meta_file = None
    if meta_learner is not None:
        example = np.zeros((1, 3 * len(parts)), np.float32)
        graph = to_onnx(meta_learner, example, options={id(meta_learner): {"zipmap": False}}, target_opset=TORCH_OPSET)
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
    )
    write_manifest(folder, manifest)

    windows = dataset.windows("test")
    truth_parts = [reference.predict(windows, dataset.feature_names) for reference in references]
    truth = truth_parts[0] if meta_learner is None else meta_learner.predict_proba(np.hstack(truth_parts))
    fp32 = OnnxPredictor(folder, "fp32")
    fp32_proba = predict_windows(fp32, windows)
    fp32_diff = float(np.abs(fp32_proba - truth).max())
    singles = list(windows[np.arange(min(len(windows), 256))][0][:, None])  # one window per call
    latency = {"fp32": latency_us(fp32.predict_scaled, singles, latency_repeats)}
    agreement, keep_int8 = None, False
    if quantisable:
        int8 = OnnxPredictor(folder, "int8")
        agreement = float((predict_windows(int8, windows).argmax(axis=1) == fp32_proba.argmax(axis=1)).mean())
        latency["int8"] = latency_us(int8.predict_scaled, singles, latency_repeats)
        keep_int8 = agreement >= min_agreement and latency["int8"]["p50"] < latency["fp32"]["p50"]
    if not keep_int8:
        for part in parts:
            if part.int8:
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
