"""MLflow tracking and registry, as one small object the assets and tests share.

Every training is a run; the runs of one Dagster run are children of one parent run (found by the
Dagster run id tag, created by whichever step comes first), so the MLflow UI lists them side by side.
Models are registered under one name per (symbol set, horizon), tagged with their type.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

PARENT_TAG = "dagster_run_id"


def registered_model_name(symbols: list[str], horizon: int) -> str:
    return "scalping-" + "-".join(re.sub(r"[^A-Za-z0-9_]", "_", s) for s in sorted(symbols)) + f"-h{horizon}"


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _set_process_uris(uri: str) -> None:
    """Point MLflow's fluent API (runs, log_model, register_model) at `uri` for this process.

    MLflow also exports the URIs as MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI; those are the user's
    setting (the resources read them), so they are put back as they were.
    """
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str = "scalping", artifact_root: str | None = None):
        self.tracking_uri = tracking_uri
        self.activate()
        self.client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_root)
        else:
            self.experiment_id = found.experiment_id

    def activate(self) -> None:
        """Point MLflow's fluent API (models:/ URIs, log_model, register_model) at this store again:
        another Tracker made since may have taken the process over."""
        _set_process_uris(self.tracking_uri)

    def parent_run_id(self, group: str, name: str) -> str:
        """The parent run of a group of trainings (a Dagster run id), created on first use."""
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.{PARENT_TAG} = '{group}'", max_results=1, order_by=["attributes.start_time ASC"]
        )
        if runs:
            return runs[0].info.run_id
        run = self.client.create_run(self.experiment_id, tags={PARENT_TAG: group}, run_name=name)
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id

    @contextmanager
    def run(self, name: str, parent: str | None = None, tags: dict[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
        """A training run (child of `parent` when given) as the active fluent run."""
        all_tags = {"git_commit": git_commit(), **(tags or {})}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=name, tags=all_tags) as active:
            yield active

    def run_url(self, run_id: str) -> str:
        """Where the run is in the MLflow UI (for a server; a local store shows the run id)."""
        base = self.tracking_uri if self.tracking_uri.startswith("http") else "http://127.0.0.1:5000"
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"

    @staticmethod
    def log_bytes(data: bytes, path: str) -> None:
        with tempfile.TemporaryDirectory() as folder:
            file = Path(folder) / Path(path).name
            file.write_bytes(data)
            mlflow.log_artifact(str(file), artifact_path=str(Path(path).parent) if Path(path).parent != Path(".") else None)

    def register(self, model_uri: str, name: str, tags: dict[str, str]) -> str:
        """Register the logged model under `name`; returns the new version."""
        version = mlflow.register_model(model_uri, name, tags=tags)
        return str(version.version)
