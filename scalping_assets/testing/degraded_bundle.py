"""A registered version the service loads but cannot predict with (tests of a failing model in
production: the canary's rollback).

Built from a real exported bundle whose manifest is made to misdescribe its graph: a part that reads
the whole window is declared to read only its last row. The bundle loads (the graphs are valid ONNX,
the window and features match the champion's, so the service routes to it), and every prediction
raises in onnxruntime (a rank-2 input for a rank-3 graph): HTTP 500, counted as a failed prediction.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import onnx

from scalping_assets.models.tracking import Tracker
from serving.bundle import ARTIFACT_PATH, MANIFEST, Manifest, write_manifest


def register_degraded(tracker: Tracker, name: str, bundle: Path) -> str:
    """A new version of `name` whose run holds `bundle` (a folder `export_version` wrote) with every
    window-reading part declared to read the last row; returns the version."""
    with tempfile.TemporaryDirectory() as staging:
        folder = Path(staging) / ARTIFACT_PATH
        shutil.copytree(bundle, folder)
        manifest = Manifest.model_validate_json((folder / MANIFEST).read_text())
        windowed = [part for part in manifest.parts if part.input == "window"]
        if not windowed:
            raise ValueError(f"bundle {bundle}: no part reads the whole window (kind {manifest.kind}); export a sequence net")
        for part in windowed:
            part.input = "features"
        write_manifest(folder, manifest)
        # The version's model is the bundle's first graph: the registry needs a logged model to register.
        with tracker.run("degraded bundle", tags={"model_type": manifest.kind}) as run:
            graph = onnx.load(folder / manifest.parts[0].fp32)
            model_uri = run.model("onnx", graph, "model", None, pip_requirements=["onnxruntime"])  # not inferred: seconds
            run.folder(folder, ARTIFACT_PATH)
    return tracker.register(model_uri, name, {"degraded": "its manifest misdescribes its graph"})
