"""MLflow tracking and registry behind one object: the only module that imports `mlflow`.

Everything goes through an explicit `MlflowClient` and explicit run ids, so two trackers on two stores
in one process never send a run, a model or an alias to each other's store. MLflow's flavors (logging
and loading torch, XGBoost and scikit-learn models, registering a logged model) know only the
process-global fluent API; they run inside `Tracker._fluent`, which points the globals at this store
(and activates the run) for that call alone and puts back whatever was set before.

Every training is a run; the runs of one Dagster run are children of one parent run (found by the
Dagster run id tag, created by whichever step comes first), so the MLflow UI lists them side by side.
Models are registered under one name per (symbol set, horizon), tagged with their type.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

PARENT_TAG = "dagster_run_id"
# Registry aliases: the gate's decision, which every consumer (serving included) reads from the registry.
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
CLEARED_TAG = "cleared_symbols"  # version tag: the symbols the gate cleared the version for, comma-separated
_BATCH = 100  # MLflow's limit of params (and a safe size for metrics) in one log_batch


def registered_model_name(symbols: list[str], horizon: int) -> str:
    return "scalping-" + "-".join(re.sub(r"[^A-Za-z0-9_]", "_", s) for s in sorted(symbols)) + f"-h{horizon}"


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _flavor(name: str):
    """An MLflow model flavor module (`pytorch`, `xgboost`, `sklearn`, `pyfunc`), imported when first used."""
    return importlib.import_module(f"mlflow.{name}")


class RunLog:
    """What is logged into one run, by its id."""

    def __init__(self, tracker: Tracker, run_id: str):
        self.tracker, self.run_id = tracker, run_id

    def params(self, values: dict[str, Any]) -> None:
        items = [Param(k, str(v)) for k, v in values.items()]
        for i in range(0, len(items), _BATCH):
            self.tracker.client.log_batch(self.run_id, params=items[i : i + _BATCH])

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in values.items()]
        for i in range(0, len(items), _BATCH):
            self.tracker.client.log_batch(self.run_id, metrics=items[i : i + _BATCH])

    def dict(self, data: dict, path: str) -> None:
        self.tracker.client.log_dict(self.run_id, data, path)

    def bytes(self, data: bytes, path: str) -> None:
        with tempfile.TemporaryDirectory() as folder:
            file = Path(folder) / Path(path).name
            file.write_bytes(data)
            parent = str(Path(path).parent) if Path(path).parent != Path(".") else None
            self.tracker.client.log_artifact(self.run_id, str(file), parent)

    def folder(self, local: Path, path: str) -> None:
        self.tracker.client.log_artifacts(self.run_id, str(local), path)

    def tag(self, key: str, value: str) -> None:
        self.tracker.client.set_tag(self.run_id, key, value)

    def model(self, flavor: str, model: object, name: str, input_example: Any, output: Any = None, **kwargs) -> str:
        """Log `model` with its flavor (signature inferred from the example and `output`); returns its URI."""
        if output is not None:
            kwargs["signature"] = infer_signature(input_example, output)
        with self.tracker._fluent(self.run_id):
            return _flavor(flavor).log_model(model, name=name, input_example=input_example, **kwargs).model_uri


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str = "scalping", artifact_root: str | None = None):
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
        self._experiment, self._artifact_root = experiment, artifact_root

    @cached_property
    def experiment_id(self) -> str:
        """The experiment's id, created on first use (a reader of the registry creates nothing)."""
        found = self.client.get_experiment_by_name(self._experiment)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(self._experiment, artifact_location=self._artifact_root)

    @contextmanager
    def _fluent(self, run_id: str | None = None) -> Iterator[None]:
        """MLflow's fluent API on this store (with `run_id` active) for the block only; restored after.

        MLflow also exports the URIs as MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI; those are the
        user's setting, so they are put back as they were, as are the URIs set before.
        """
        saved_env = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        saved_uris = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        try:
            if run_id is None:
                yield
            else:
                outer = mlflow.active_run()
                with mlflow.start_run(run_id=run_id, nested=outer is not None):
                    yield
        finally:
            mlflow.set_tracking_uri(saved_uris[0])
            mlflow.set_registry_uri(saved_uris[1])
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    # -- runs -----------------------------------------------------------------------------------

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
    def run(self, name: str, parent: str | None = None, tags: dict[str, str] | None = None) -> Iterator[RunLog]:
        """A new run (child of `parent` when given), FINISHED when the block ends, FAILED if it raises."""
        all_tags = {"git_commit": git_commit(), **(tags or {})}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run_id = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name).info.run_id
        try:
            yield RunLog(self, run_id)
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")

    def reopen(self, run_id: str) -> RunLog:
        """A finished run, to log more into (a backtest into its candidate's run)."""
        return RunLog(self, run_id)

    def search_runs(self, filter_string: str) -> list:
        return self.client.search_runs([self.experiment_id], filter_string, max_results=50_000)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return self.client.get_run(run_id).data.tags

    def run_url(self, run_id: str) -> str:
        """Where the run is in the MLflow UI (for a server; a local store shows the run id)."""
        base = self.tracking_uri if self.tracking_uri.startswith("http") else "http://127.0.0.1:5000"
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"

    # -- artifacts and models -------------------------------------------------------------------

    def download(self, run_id: str, path: str, dst: str | Path | None = None) -> Path:
        """A run's artifact (file or folder) on local disk; FileNotFoundError when the run lacks it."""
        try:
            return Path(self.client.download_artifacts(run_id, path, None if dst is None else str(dst)))
        except (MlflowException, OSError) as exc:
            raise FileNotFoundError(f"run {run_id} has no artifact {path}") from exc

    def load_dict(self, run_id: str, path: str) -> dict:
        with tempfile.TemporaryDirectory() as folder:
            return json.loads(self.download(run_id, path, folder).read_text())

    def load_model(self, flavor: str, model_uri: str, **kwargs) -> Any:
        """A logged or registered model (`models:/…`, `runs:/…`) through its flavor."""
        with self._fluent():
            return _flavor(flavor).load_model(model_uri, **kwargs)

    # -- registry -------------------------------------------------------------------------------

    def register(self, model_uri: str, name: str, tags: dict[str, str]) -> str:
        """Register the logged model under `name`; returns the new version."""
        with self._fluent():
            return str(mlflow.register_model(model_uri, name, tags=tags).version)

    def version_run_id(self, name: str, version: str) -> str:
        return self.client.get_model_version(name, version).run_id

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        return self.client.get_model_version(name, version).tags

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, str(version), key, value)

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version `name@alias` points at (None: no such alias, or no such model)."""
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def models_with_alias(self, alias: str) -> list[str]:
        """Registered models that have `alias`, the most recently updated first."""
        models = [m for m in self.client.search_registered_models() if alias in (m.aliases or {})]
        return [m.name for m in sorted(models, key=lambda m: m.last_updated_timestamp or 0, reverse=True)]


def finite_metrics(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric, finite entries of `values` (MLflow stores no NaN or text as a metric)."""
    return {f"{prefix}{k}": float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}
