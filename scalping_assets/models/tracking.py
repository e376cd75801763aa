"""MLflow tracking and registry behind one object: the only module that imports `mlflow`.

Everything goes through an explicit `MlflowClient` and explicit run ids, so two trackers on two stores
in one process never send a run, a model or an alias to each other's store. MLflow's flavors (logging
and loading torch, XGBoost and scikit-learn models, registering a logged model) know only the
process-global fluent API; they run inside `Tracker._fluent`, which points the globals at this store
(and activates the run) for that call alone and puts back whatever was set before.

Every training is a run that ends when its training ends; the runs of one Dagster run are children of
one parent run (found by the Dagster run id tag, created by whichever step comes first, spanning its
children), so the MLflow UI lists them side by side. A backtest is a run of its own, a child of the
training it tests (`backtest.runs`). Learning curves are logged under `curves/` and test-span metrics
under `test/`: the MLflow UI makes a chart section of each prefix, the named ones before the rest.
Models are registered under one name per (symbol set, horizon), tagged with their type; the
experiment, each registered model and each version carry a description (markdown, in sections that
training, backtest and gate each replace).

Links into the MLflow UI (`run_url`, `model_version_url`, `artifact_url`, ...) start at the UI's base
URL: the tracking server itself when the tracking URI is http(s), else `ui_url` (SQLite and local
artifacts have no UI of their own: `make mlflow` serves one at the default).
"""

from __future__ import annotations

import importlib
import importlib.metadata
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
from urllib.parse import quote, urlencode

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from ..settings import DEFAULT_MLFLOW_UI_URL

PARENT_TAG = "dagster_run_id"
NOTE_TAG = "mlflow.note.content"  # a run's or an experiment's description in the MLflow UI (markdown)
# Metric sections: the MLflow UI groups a run's charts by the prefix before the last "/", named sections
# first (sorted), unprefixed metrics last, so the learning curves are not buried under one-bar charts.
CURVES = "curves/"  # per epoch (or boosting round): train/val loss, val accuracy, learning rate
TEST = "test/"  # the candidate's metrics on the test span
EXPERIMENT_DESCRIPTION = """Scalping models on Deriv synthetic indices (scalping-assets).

- **Parent runs** `dagster <id>`: one per Dagster run of the model assets, spanning its trainings.
- **Training runs** `<family>-seed<k>` and `ensemble`: learning curves under *curves/*, test-span metrics
  under *test/*, the dataset as the run's input, plots, test predictions and the model as artifacts; each
  registers a version of `scalping-<symbols>-h<horizon>`.
- **Walk-forward runs** `<family>-seed<k>-walk-forward`: per-fold metrics as steps (`wf_*`).
- **Backtest runs** `backtest <candidate>`: children of the training they test, metrics under *backtest/*,
  the HTML report at *backtest/report.html*, the trades, linked to the model version they judge.

The promotion gate moves the registry aliases `champion` (served), `challenger` and `previous`."""
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


# The package each flavor's model needs to load, beside MLflow itself; pinned to what trained it.
FLAVOR_PACKAGES = {"pytorch": "torch", "xgboost": "xgboost", "sklearn": "scikit-learn", "onnx": "onnxruntime"}


def _requirements(flavor: str) -> list[str]:
    packages = ["mlflow", *([FLAVOR_PACKAGES[flavor]] if flavor in FLAVOR_PACKAGES else []), "numpy"]
    return [f"{name}=={importlib.metadata.version(name)}" for name in packages]


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

    def curves(self, values: dict[str, float], step: int) -> None:
        """One point of the learning curves (an epoch, a boosting round), under `curves/`."""
        self.metrics({f"{CURVES}{k}": v for k, v in values.items()}, step=step)

    def tag(self, key: str, value: str) -> None:
        self.tracker.client.set_tag(self.run_id, key, value)

    def describe(self, text: str) -> None:
        """The run's description (markdown) in the MLflow UI."""
        self.tag(NOTE_TAG, text)

    def dataset(
        self, frame: Any, name: str, digest: str, source: str | None = None, context: str = "training", **profile: int
    ) -> None:
        """Record `frame` (a pandas DataFrame) as the run's input: the MLflow UI's dataset column shows
        `name` and `digest`, its drawer the source (`source`: a local folder or URI; None: this code),
        the column types and the profile (rows, cells and `profile`). Only the frame's dtypes are read
        (MLflow's own inference reads every cell: minutes on a large frame)."""
        kinds = {"f": "double", "i": "long", "u": "long", "b": "boolean", "M": "datetime"}
        columns = [
            {"type": kinds.get(dtype.kind, "string"), "name": str(column), "required": True}
            for column, dtype in frame.dtypes.items()
        ]
        if source is None:
            source_type, source_json = "code", json.dumps({"tags": {"mlflow.source.name": "scalping_assets"}})
        else:
            source_type, source_json = "local", json.dumps({"uri": str(source)})
        entity = DatasetEntity(
            name=name,
            digest=digest,
            source_type=source_type,
            source=source_json,
            schema=json.dumps({"mlflow_colspec": columns}),
            profile=json.dumps({"num_rows": len(frame), "num_elements": int(frame.size), **profile}),
        )
        self.tracker.client.log_inputs(self.run_id, [DatasetInput(entity, [InputTag(MLFLOW_DATASET_CONTEXT, context)])])

    def model(self, flavor: str, model: object, name: str, input_example: Any, output: Any = None, **kwargs) -> str:
        """Log `model` with its flavor (signature inferred from the example and `output`); returns its URI."""
        if output is not None:
            kwargs["signature"] = infer_signature(input_example, output)
        # Given, MLflow does not start a process per model to find what the model imports (seconds each).
        kwargs.setdefault("pip_requirements", _requirements(flavor))
        with self.tracker._fluent(self.run_id):
            return _flavor(flavor).log_model(model, name=name, input_example=input_example, **kwargs).model_uri


class Tracker:
    def __init__(
        self, tracking_uri: str, experiment: str = "scalping", artifact_root: str | None = None, ui_url: str | None = None
    ):
        self.tracking_uri = tracking_uri
        server = tracking_uri.startswith(("http://", "https://"))
        # A server stores the artifacts it is sent (`--serve-artifacts`, deploy/mlflow/serve.sh): a local
        # folder would be one only this machine can read.
        self._experiment, self._artifact_root = experiment, None if server else artifact_root
        # The MLflow UI's base URL: one set (MLFLOW_UI_URL) wins, as the address people's browsers reach is
        # not always the one the processes use (Compose's http://mlflow:5000); else an http(s) tracking
        # URI is its own UI.
        chosen = ui_url not in (None, "", DEFAULT_MLFLOW_UI_URL)
        self.ui_url = (ui_url if chosen else tracking_uri if server else DEFAULT_MLFLOW_UI_URL).rstrip("/")

    @cached_property
    def client(self) -> MlflowClient:
        """Opened on first use (a SQLite store checks its schema: seconds), so building links costs nothing."""
        return MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)

    @cached_property
    def experiment_id(self) -> str:
        """The experiment's id, created (with its description) on first use; a reader of the registry
        creates nothing."""
        found = self.client.get_experiment_by_name(self._experiment)
        if found is None:
            return self.client.create_experiment(
                self._experiment, artifact_location=self._artifact_root, tags={NOTE_TAG: EXPERIMENT_DESCRIPTION}
            )
        if NOTE_TAG not in found.tags:  # created before experiments had one; a description people wrote stays
            self.client.set_experiment_tag(found.experiment_id, NOTE_TAG, EXPERIMENT_DESCRIPTION)
        return found.experiment_id

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
    def run(
        self, name: str, parent: str | None = None, tags: dict[str, str] | None = None, description: str | None = None
    ) -> Iterator[RunLog]:
        """A new run (child of `parent` when given), FINISHED when the block ends, FAILED if it raises:
        its duration is the block's. A parent that groups a Dagster run's trainings (`parent_run_id`) is
        RUNNING while the block runs and ends when it ends, so it spans its children; any other parent
        (the training a backtest tests) is left as it is."""
        all_tags = {"git_commit": git_commit(), **(tags or {})}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        if description:
            all_tags[NOTE_TAG] = description
        above = self.client.get_run(parent) if parent else None
        group = above is not None and PARENT_TAG in above.data.tags
        if group and above.info.status != "FAILED":
            self.client.update_run(parent, "RUNNING")
        run_id = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name).info.run_id
        try:
            yield RunLog(self, run_id)
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            if group:
                self.client.set_terminated(parent, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")
        if group:
            # A failed sibling keeps the group FAILED.
            failed = self.client.get_run(parent).info.status == "FAILED"
            self.client.set_terminated(parent, "FAILED" if failed else "FINISHED")

    def reopen(self, run_id: str) -> RunLog:
        """A finished run, to add artifacts or tags to (an export beside its model). Logging into a run
        does not change its duration; a backtest is a run of its own (`backtest.runs`)."""
        return RunLog(self, run_id)

    def search_runs(self, filter_string: str) -> list:
        return self.client.search_runs([self.experiment_id], filter_string, max_results=50_000)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return self.client.get_run(run_id).data.tags

    # -- links into the MLflow UI (a single-page app: the part after # is its route) ---------------

    def experiment_url(self) -> str:
        return f"{self.ui_url}/#/experiments/{self.experiment_id}"

    def run_url(self, run_id: str) -> str:
        """The run's page in the MLflow UI (a run of this tracker's experiment)."""
        return f"{self.experiment_url()}/runs/{run_id}"

    def artifact_url(self, run_id: str, path: str) -> str:
        """The run's artifact `path` in the MLflow UI's artifact view, which shows it (HTML rendered,
        images, tables): what to link for people. The file itself is at `artifact_download_url`."""
        return f"{self.run_url(run_id)}/artifacts/{quote(path)}"

    def artifact_download_url(self, run_id: str, path: str) -> str:
        """The artifact's bytes from the MLflow server (`/get-artifact`). MLflow sends every artifact as
        an attachment (HTML too, against XSS on its domain): a browser downloads it."""
        return f"{self.ui_url}/get-artifact?{urlencode({'path': path, 'run_uuid': run_id})}"

    def compare_url(self, run_ids: list[str]) -> str:
        """The MLflow UI's side-by-side comparison of the runs (params, metrics, curves overlaid)."""
        # The query the UI builds itself (JSON.stringify: no spaces), percent-encoded for a link.
        runs, experiments = (json.dumps(ids, separators=(",", ":")) for ids in (run_ids, [self.experiment_id]))
        return f"{self.ui_url}/#/compare-runs?{urlencode({'runs': runs, 'experiments': experiments})}"

    def registered_model_url(self, name: str) -> str:
        return f"{self.ui_url}/#/models/{quote(name, safe='')}"

    def model_version_url(self, name: str, version: str) -> str:
        return f"{self.registered_model_url(name)}/versions/{version}"

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

    def load_arrays(self, run_id: str, path: str) -> dict[str, np.ndarray]:
        """The arrays of a logged `.npz` by name; FileNotFoundError when the run lacks it."""
        with tempfile.TemporaryDirectory() as folder, np.load(self.download(run_id, path, folder)) as arrays:
            return {name: arrays[name] for name in arrays.files}

    def load_model(self, flavor: str, model_uri: str, **kwargs) -> Any:
        """A logged or registered model (`models:/…`, `runs:/…`) through its flavor."""
        with self._fluent():
            return _flavor(flavor).load_model(model_uri, **kwargs)

    # -- registry -------------------------------------------------------------------------------

    def register(self, model_uri: str, name: str, tags: dict[str, str], description: str | None = None) -> str:
        """Register the logged model under `name` (`description`: the version's `model` section);
        returns the new version."""
        with self._fluent():
            version = str(mlflow.register_model(model_uri, name, tags=tags).version)
        if description:
            self.describe_version(name, version, description, section="model")
        return version

    def describe_model(self, name: str, text: str) -> None:
        """The registered model's description, unless it has one (a description people wrote stays)."""
        if not self.client.get_registered_model(name).description:
            self.client.update_registered_model(name, description=text)

    def describe_version(self, name: str, version: str, text: str, *, section: str) -> None:
        """Set `section` of the version's description (markdown paragraphs `**section**: text`, in the
        order first set): training writes `model`, the backtest `backtest`, the gate `gate`; setting a
        section again replaces it and leaves the others."""
        current = self.client.get_model_version(name, str(version)).description or ""
        head = f"**{section}**:"
        paragraph = f"{head} {text.strip()}"
        paragraphs = [p for p in current.split("\n\n") if p.strip()]
        at = next((i for i, p in enumerate(paragraphs) if p.startswith(head)), None)
        if at is None:
            paragraphs.append(paragraph)
        else:
            paragraphs[at] = paragraph
        self.client.update_model_version(name, str(version), description="\n\n".join(paragraphs))

    def run_versions(self, run_id: str) -> list[tuple[str, str]]:
        """(registered model, version) of every version registered from the run."""
        return [(v.name, str(v.version)) for v in self.client.search_model_versions(f"run_id = '{run_id}'")]

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

    def delete_alias(self, name: str, alias: str) -> None:
        self.client.delete_registered_model_alias(name, alias)

    def model_tag(self, name: str, key: str) -> str | None:
        """The registered model's tag `key` (None: no such tag, or no such model)."""
        try:
            return self.client.get_registered_model(name).tags.get(key)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":  # the registry down is not "no tag"
                raise
            return None

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.client.set_registered_model_tag(name, key, value)

    def models_with_alias(self, alias: str) -> list[str]:
        """Registered models that have `alias`, the most recently updated first."""
        models = [m for m in self.client.search_registered_models() if alias in (m.aliases or {})]
        return [m.name for m in sorted(models, key=lambda m: m.last_updated_timestamp or 0, reverse=True)]


def finite_metrics(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric, finite entries of `values` (MLflow stores no NaN or text as a metric)."""
    return {f"{prefix}{k}": float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}
