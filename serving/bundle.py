"""The serving bundle: ONNX files plus a manifest holding everything a prediction needs besides the
ticks (feature names and window, the training-span scaler and fitted features, the graph layout), and
the candidate's calibration (`calibration.json`), applied per symbol after the graphs so that what is
served equals the calibrated test predictions the backtest replayed.

Runtime side only: onnxruntime and the project's feature code, no torch, no MLflow. A bundle is
written by `serving.export` and logged to the model version's MLflow run under `onnx/`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
import pandas as pd
from pydantic import BaseModel

from scalping_assets.features import registry as R
from scalping_assets.features.batch import compute_features
from scalping_assets.features.fitted import FittedFeatures
from scalping_assets.features.labels import CLASSES
from scalping_assets.features.stream import FeatureState
from scalping_assets.market.symbols import get_symbol
from scalping_assets.models.calibration import UNCALIBRATED, Calibration
from scalping_assets.models.family import PROBABILITIES, Input

ARTIFACT_PATH = "onnx"  # where a version's run holds its bundle
MANIFEST = "manifest.json"
Precision = Literal["fp32", "int8"]


class Part(BaseModel):
    """One ONNX graph, named by its model family's kind; `input` says what it reads: the whole window
    (B, L, F) or its last row (B, F)."""

    name: str
    input: Input
    fp32: str
    int8: str | None = None  # kept only where it was faster and agreed with FP32


class Manifest(BaseModel):
    registered_model: str
    version: str
    run_id: str
    kind: str
    symbols: list[str]
    feature_names: list[str]
    window: int
    scaler_mean: list[float]
    scaler_scale: list[float]
    fitted: dict[str, FittedFeatures]
    classes: list[str] = [c.lower() for c in CLASSES]
    parts: list[Part]
    meta: str | None = None  # meta-learner over the parts' concatenated probabilities (the ensemble)
    # The per-symbol calibration applied to the graphs' probabilities (`models.calibration.Calibration`
    # as JSON). None: a bundle exported before calibration, or of a version trained before it; both
    # backtested the graphs' own probabilities, so they are served uncalibrated (the identity).
    calibration: str | None = None
    precision: Precision = "fp32"  # what the export recommends serving
    export: dict = {}  # parity and latency measured at export
    # The symbols the gate cleared this version for; None: exported before the gate judged symbols.
    cleared_symbols: list[str] | None = None

    def cleared(self, symbol: str) -> bool:
        return self.cleared_symbols is None or symbol in self.cleared_symbols

    def traded(self, tracked: Sequence[str]) -> list[str]:
        """The symbols a version trades by default: those it was cleared for among the `tracked` ones (all
        it was cleared for when none of them is tracked)."""
        cleared = [s for s in self.symbols if self.cleared(s)]
        return [s for s in cleared if s in tracked] or cleared

    def window_ready(self, rows: Sequence[np.ndarray]) -> bool:
        """Whether the latest feature rows make a model window: a full window whose oldest row is defined
        (a feature is defined from the end of its warm-up on, so every later row is too)."""
        return len(rows) >= self.window and bool(np.isfinite(rows[-self.window]).all())

    @property
    def min_ticks(self) -> int:
        """Ticks a raw-tick request needs: the features' look-back, then one window of defined rows."""
        return R.WARMUP_TICKS + self.window


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One thread: a window is microseconds of work, and the server's other cores serve other requests.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return session.run([PROBABILITIES], {session.get_inputs()[0].name: x})[0]


class OnnxPredictor:
    """Raw feature windows in, class probabilities out, through the bundle's graphs."""

    def __init__(
        self, folder: str | Path, precision: Precision | Literal["auto"] = "auto", registered: tuple[str, str] | None = None
    ):
        """`registered`: the (name, version) the registry serves this bundle as, when it is not the one
        it was exported for (a run's model registered again under another name)."""
        self.folder = Path(folder)
        self.manifest = Manifest.model_validate_json((self.folder / MANIFEST).read_text())
        m = self.manifest
        self.registered_model, self.version = registered or (m.registered_model, m.version)
        self.precision: Precision = m.precision if precision == "auto" else precision
        self._parts = [(part, _session(self.folder / self._file(part))) for part in m.parts]
        self._meta = _session(self.folder / m.meta) if m.meta else None
        self.calibration = (
            Calibration.model_validate_json((self.folder / m.calibration).read_text()) if m.calibration else UNCALIBRATED
        )
        self._mean = np.asarray(m.scaler_mean, np.float32)
        self._scale = np.asarray(m.scaler_scale, np.float32)
        self._pips = {s: get_symbol(s).pip_size for s in m.symbols}

    def _file(self, part: Part) -> str:
        if self.precision == "int8" and part.int8:
            return part.int8
        return part.fp32

    @property
    def served_precision(self) -> str:
        """'int8' only where some part actually runs quantised."""
        return "int8" if any(self._file(p) == p.int8 for p, _ in self._parts) else "fp32"

    def scale(self, raw: np.ndarray) -> np.ndarray:
        return ((raw - self._mean) / self._scale).astype(np.float32)

    def graphs(self, windows: np.ndarray) -> np.ndarray:
        """(B, L, F) windows already scaled -> (B, 3) probabilities of the ONNX graphs, uncalibrated."""
        outputs = [_run(session, windows if part.input == "window" else windows[:, -1, :]) for part, session in self._parts]
        if self._meta is None:
            return outputs[0]
        return _run(self._meta, np.hstack(outputs).astype(np.float32))

    def predict_scaled(self, windows: np.ndarray, symbols: str | Sequence[str] | None = None) -> np.ndarray:
        """(B, L, F) windows already scaled, of `symbols` (one per window, or one for all; None: the
        bundle's only symbol) -> (B, 3) calibrated probabilities: what is served."""
        if symbols is None:
            if len(self.manifest.symbols) != 1:
                raise ValueError(f"symbols: required for a bundle of several symbols ({', '.join(self.manifest.symbols)})")
            symbols = self.manifest.symbols[0]
        return self.calibration.apply(self.graphs(windows), symbols)

    def predict(self, raw_windows: np.ndarray, symbols: str | Sequence[str] | None = None) -> np.ndarray:
        """(B, L, F) raw feature windows (the feature code's units) of `symbols` (as `predict_scaled`)
        -> (B, 3) calibrated probabilities."""
        return self.predict_scaled(self.scale(np.asarray(raw_windows, np.float32)), symbols)

    def features_from_ticks(self, symbol: str, epochs: np.ndarray, quotes: np.ndarray) -> np.ndarray:
        """The raw feature window (L, F) at the last tick, computed by the training code's batch path."""
        ticks = pd.DataFrame({"epoch": np.asarray(epochs, np.int64), "quote": np.asarray(quotes, np.float64)})
        frame = compute_features(ticks, self._pips[symbol], self.manifest.fitted[symbol])
        return frame[self.manifest.feature_names].to_numpy()[-self.manifest.window :]

    def feature_state(self, symbol: str) -> FeatureState:
        """Streaming features of one symbol (one tick in, one feature row out), as `features_from_ticks`."""
        return FeatureState(self._pips[symbol], self.manifest.fitted[symbol])

    def info(self) -> dict:
        m = self.manifest
        return {
            "registered_model": self.registered_model,
            "version": self.version,
            "kind": m.kind,
            "symbols": m.symbols,
            "cleared_symbols": m.symbols if m.cleared_symbols is None else m.cleared_symbols,
            "window": m.window,
            "min_ticks": m.min_ticks,
            "features": m.feature_names,
            "classes": m.classes,
            "precision": self.served_precision,
            "calibrated": m.calibration is not None,
            "export": m.export,
        }


def write_manifest(folder: Path, manifest: Manifest) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))
