"""Find the bundle of a registry alias (`champion`, `challenger`) and fetch it to a local cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from scalping_assets.backtest.promotion import CHAMPION, alias_version

from .bundle import ARTIFACT_PATH, MANIFEST


class BundleRegistry:
    def __init__(self, tracking_uri: str, cache: str | Path):
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
        self.cache = Path(cache)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a server log is no terminal

    def default_model_name(self) -> str:
        """The most recently updated registered model that has a champion."""
        models = [m for m in self.client.search_registered_models() if CHAMPION in (m.aliases or {})]
        if not models:
            raise LookupError("no registered model has a champion: run the promotion gate (the champion asset) first")
        return max(models, key=lambda m: m.last_updated_timestamp or 0).name

    def resolve(self, name: str, alias: str) -> str | None:
        """The version `name@alias` points at now (None: no such alias)."""
        return alias_version(self.client, name, alias)

    def fetch(self, name: str, version: str) -> Path:
        """Local folder with the bundle of `name` v`version` (downloaded once, then cached).
        LookupError when that version was never exported."""
        target = self.cache / name / version
        if (target / MANIFEST).exists():
            return target
        missing = LookupError(f"{name} v{version} has no ONNX bundle: materialize onnx_model")
        run_id = self.client.get_model_version(name, version).run_id
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as staging:
            try:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=ARTIFACT_PATH, dst_path=staging, tracking_uri=self.tracking_uri
                )
            except (MlflowException, OSError) as exc:
                raise missing from exc
            if not (Path(local) / MANIFEST).exists():
                raise missing
            shutil.rmtree(target, ignore_errors=True)
            Path(local).rename(target)  # a half-downloaded bundle is never picked up
        return target
