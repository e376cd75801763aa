"""Find the bundle of a registry alias (`champion`, `challenger`) and fetch it to a local cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from scalping_assets.models.tracking import CHAMPION, Tracker

from .bundle import ARTIFACT_PATH, MANIFEST


class BundleRegistry:
    def __init__(self, tracking_uri: str, cache: str | Path):
        self.tracker = Tracker(tracking_uri)
        self.cache = Path(cache)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a server log is no terminal

    def default_model_name(self) -> str:
        """The most recently updated registered model that has a champion."""
        models = self.tracker.models_with_alias(CHAMPION)
        if not models:
            raise LookupError("no registered model has a champion: run the promotion gate (the champion asset) first")
        return models[0]

    def resolve(self, name: str, alias: str) -> str | None:
        """The version `name@alias` points at now (None: no such alias)."""
        return self.tracker.alias_version(name, alias)

    def fetch(self, name: str, version: str) -> Path:
        """Local folder with the bundle of `name` v`version` (downloaded once, then cached).
        LookupError when that version was never exported."""
        target = self.cache / name / version
        if (target / MANIFEST).exists():
            return target
        missing = LookupError(f"{name} v{version} has no ONNX bundle: materialize onnx_model")
        run_id = self.tracker.version_run_id(name, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as staging:
            try:
                local = self.tracker.download(run_id, ARTIFACT_PATH, staging)
            except FileNotFoundError as exc:
                raise missing from exc
            if not (Path(local) / MANIFEST).exists():
                raise missing
            shutil.rmtree(target, ignore_errors=True)
            Path(local).rename(target)  # a half-downloaded bundle is never picked up
        return target
