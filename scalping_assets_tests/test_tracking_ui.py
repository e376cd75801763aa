"""What a quant sees in MLflow after a training and its backtest, read back through a real `mlflow ui`'s
REST API: true run durations, the backtest as a child run, curves first, the dataset, descriptions, links."""

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from scalping_assets.backtest.engine import ExecutionConfig
from scalping_assets.backtest.report import backtest_predictions
from scalping_assets.backtest.runs import (
    BACKTEST_OF_TAG,
    REPORT_ARTIFACT,
    SHARPE_METRIC,
    candidate_runs,
    load_predictions,
    log_backtest,
)
from scalping_assets.backtest.trials import count_trials
from scalping_assets.features.dataset import DatasetSpec, build_dataset
from scalping_assets.market.simulator import simulator
from scalping_assets.models.config import profile_config
from scalping_assets.models.pipeline import train_candidate
from scalping_assets.models.tracking import NOTE_TAG, Tracker
from scalping_assets.settings import DEFAULT_MLFLOW_UI_URL, Settings
from scalping_assets.testing.server_process import free_port, server_process
from scalping_assets_tests.conftest import service_unavailable

TINY = {"n_estimators": 8, "early_stopping_rounds": 4, "max_train_windows": 2_000, "max_eval_windows": 1_000}
SYMBOL = "SIG_AR1"
DATASET = "tiny"  # the Dagster partition the dataset would be
QUIET = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job runner: seven Python processes fewer


def _train_and_backtest(tracker: Tracker, folder: Path) -> dict:
    """One candidate trained under a Dagster-run parent, then backtested, as the assets do."""
    spec = DatasetSpec(symbols=[SYMBOL], start=date(2026, 1, 2), end=date(2026, 1, 2), sequence_length=20)
    ticks = {SYMBOL: simulator(SYMBOL, 7).days(date(2026, 1, 1), date(2026, 1, 2))}
    dataset = build_dataset(spec, ticks)
    parent = tracker.parent_run_id("dagster-run-1", "dagster run-1")
    began = int(time.time() * 1000)
    config = profile_config("demo", "xgboost", **TINY)
    candidate = train_candidate(dataset, config, tracker, parent, dataset_name=DATASET, dataset_source=str(folder))
    trained = int(time.time() * 1000)
    time.sleep(0.05)  # the backtest starts strictly after the training ended
    predictions = load_predictions(tracker, candidate.run_id)
    report = backtest_predictions(
        candidate.name, ticks, predictions, ExecutionConfig(), dataset.meta.boundaries[1], spec.end_epoch, draws=20
    )
    backtested = int(time.time() * 1000)
    backtest = log_backtest(tracker, candidate.run_id, report, folder / "reports")
    return {"parent": parent, "candidate": candidate, "dataset": dataset, "report": report, "backtest": backtest,
            "times": (began, trained, backtested)}  # fmt: skip


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """`_train_and_backtest` while `mlflow ui` starts on the same store (both take about 15 s)."""
    folder = tmp_path_factory.mktemp("mlflow")
    store, port = f"sqlite:///{folder}/mlflow.db", free_port()
    tracker = Tracker(store, artifact_root=str(folder / "artifacts"), ui_url=f"http://127.0.0.1:{port}/")
    assert tracker.experiment_id  # the store's tables exist before the server opens it
    command = [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", store, "--workers", "1"]
    command += ["--default-artifact-root", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port)]
    with ThreadPoolExecutor(1) as pool, ExitStack() as stack:
        logging = pool.submit(_train_and_backtest, tracker, folder)
        try:
            stack.enter_context(server_process(command, f"{tracker.ui_url}/health", QUIET, folder / "mlflow.log", 120))
        except (RuntimeError, OSError) as exc:
            logging.result()
            service_unavailable(f"mlflow ui did not start: {exc}")
        http = stack.enter_context(httpx.Client(base_url=tracker.ui_url, timeout=30))
        yield {"tracker": tracker, "http": http, **logging.result()}


def _api(http: httpx.Client, endpoint: str, **params) -> dict:
    answer = http.get(f"/ajax-api/2.0/mlflow/{endpoint}", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _run(http: httpx.Client, run_id: str) -> dict:
    run = _api(http, "runs/get", run_id=run_id)["run"]
    run["metrics"] = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
    run["tags"] = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
    return run


def _children(http: httpx.Client, experiment_id: str, run_id: str) -> list[dict]:
    found = http.post(
        "/ajax-api/2.0/mlflow/runs/search",
        json={"experiment_ids": [experiment_id], "filter": f"tags.mlflow.parentRunId = '{run_id}'"},
    )
    assert found.status_code == 200, found.text
    return [_run(http, r["info"]["run_id"]) for r in found.json().get("runs", [])]


def test_the_training_run_lasts_as_long_as_its_training_and_its_parent_spans_it(logged):
    http, tracker, candidate = logged["http"], logged["tracker"], logged["candidate"]
    began, trained, backtested = logged["times"]
    run = _run(http, candidate.run_id)
    info = run["info"]
    assert info["status"] == "FINISHED"
    start, end = int(info["start_time"]), int(info["end_time"])
    assert began <= start < end <= trained, "the run ends when its training ends, not when its backtest is logged"
    assert end < backtested
    parent = _run(http, logged["parent"])["info"]
    assert parent["status"] == "FINISHED"
    assert int(parent["start_time"]) <= start and int(parent["end_time"]) >= end, "the parent spans its trainings"
    assert run["tags"]["mlflow.parentRunId"] == logged["parent"]
    assert run["tags"][NOTE_TAG].startswith(f"{candidate.name} (xgboost, seed 0) on dataset `{DATASET}`")
    assert tracker.run_url(candidate.run_id) == f"{tracker.ui_url}/#/experiments/{tracker.experiment_id}/runs/{candidate.run_id}"


def test_the_backtest_is_a_child_run_of_the_training_linked_to_the_model_version(logged):
    http, tracker, candidate, report = logged["http"], logged["tracker"], logged["candidate"], logged["report"]
    (child,) = _children(http, tracker.experiment_id, candidate.run_id)
    assert child["info"]["run_id"] == logged["backtest"].run_id
    assert child["info"]["run_name"] == f"backtest {candidate.name}"
    assert child["info"]["status"] == "FINISHED"
    training_end = int(_run(http, candidate.run_id)["info"]["end_time"])
    assert int(child["info"]["start_time"]) >= training_end
    tags = child["tags"]
    assert tags[BACKTEST_OF_TAG] == candidate.run_id and "model_type" not in tags
    assert (tags["registered_model"], tags["model_version"]) == (candidate.registered_name, candidate.version)
    assert tags["backtest_verdict"] == report.verdict
    summary = report.summary()
    assert child["metrics"]["backtest/trades"] == summary["trades"]
    assert child["metrics"][SHARPE_METRIC] == pytest.approx(summary["sharpe_per_trade"])
    assert not any(k.startswith(("backtest/", "bt_")) for k in _run(http, candidate.run_id)["metrics"]), "nothing logged back"
    listed = _api(http, "artifacts/list", run_id=child["info"]["run_id"], path="backtest")
    assert {REPORT_ARTIFACT, "backtest/trades.parquet", "backtest/equity_drawdown.png"} <= {f["path"] for f in listed["files"]}
    version = _api(http, "model-versions/get", name=candidate.registered_name, version=candidate.version)["model_version"]
    version_tags = {t["key"]: t["value"] for t in version.get("tags", [])}
    assert version_tags["backtest_run_id"] == child["info"]["run_id"]
    # The deflated Sharpe's trials read each candidate's Sharpe ratio from its latest backtest run.
    runs = candidate_runs(tracker)
    assert [r.info.run_id for r in runs] == [candidate.run_id], "backtests are not candidates"
    assert count_trials(tracker, runs).sharpes == [pytest.approx(summary["sharpe_per_trade"])]


def test_learning_curves_come_first_and_every_metric_has_its_section(logged):
    http, candidate = logged["http"], logged["candidate"]
    metrics = _run(http, candidate.run_id)["metrics"]
    # The MLflow UI makes a chart section of each prefix before "/", named sections sorted, the rest last.
    sections = sorted({key.rsplit("/", 1)[0] for key in metrics if "/" in key})
    assert sections[0] == "curves", sections  # sorted: the learning curves before the test span's sections
    assert {section.split("/")[0] for section in sections} == {"curves", "test"}, sorted(metrics)
    assert {"test/SIG_AR1", "test/uncalibrated"} <= set(sections), "per symbol and before calibration"
    assert not [key for key in metrics if "/" not in key], "no metric left outside a section"
    for key in ("curves/train_loss", "curves/val_loss"):
        history = _api(http, "metrics/get-history", run_id=candidate.run_id, metric_key=key)["metrics"]
        assert len(history) >= 2, f"{key} is a curve, one point per boosting round"
    assert metrics["test/accuracy"] == pytest.approx(candidate.metrics["accuracy"])
    assert metrics["test/edge_p_value"] == pytest.approx(candidate.edge["p_value"])


def test_the_dataset_is_the_run_input(logged):
    http, candidate, dataset = logged["http"], logged["candidate"], logged["dataset"]
    inputs = _run(http, candidate.run_id)["inputs"]["dataset_inputs"]
    assert len(inputs) == 1
    recorded = inputs[0]["dataset"]
    assert (recorded["name"], recorded["digest"]) == (DATASET, dataset.meta.fingerprint)
    assert {t["key"]: t["value"] for t in inputs[0]["tags"]} == {"mlflow.data.context": "training"}
    assert f'"num_rows": {len(dataset.frame)}' in recorded["profile"]
    assert '"name": "symbol"' in recorded["schema"]


def test_the_experiment_the_model_and_its_versions_are_described(logged):
    http, tracker, candidate, report = logged["http"], logged["tracker"], logged["candidate"], logged["report"]
    experiment = _api(http, "experiments/get", experiment_id=tracker.experiment_id)["experiment"]
    note = {t["key"]: t["value"] for t in experiment["tags"]}[NOTE_TAG]
    assert "Backtest runs" in note and "champion" in note
    model = _api(http, "registered-models/get", name=candidate.registered_name)["registered_model"]
    assert SYMBOL in model["description"] and "@champion" in model["description"]
    # The gate adds (and on a re-run replaces) its own section.
    for verdict in ("not cleared", f"cleared {SYMBOL}"):
        tracker.describe_version(candidate.registered_name, candidate.version, verdict, section="gate")
    version = _api(http, "model-versions/get", name=candidate.registered_name, version=candidate.version)["model_version"]
    sections = version["description"].split("\n\n")
    assert [s.split(":", 1)[0] for s in sections] == ["**model**", "**backtest**", "**gate**"]
    assert f"dataset `{DATASET}`" in sections[0] and candidate.name in sections[0]
    assert report.verdict in sections[1]
    assert sections[2] == f"**gate**: cleared {SYMBOL}"


def test_the_links_open_the_run_the_version_and_the_rendered_report(logged):
    http, tracker, candidate, backtest = logged["http"], logged["tracker"], logged["candidate"], logged["backtest"]
    for url in (
        tracker.run_url(candidate.run_id),
        backtest.run_url,
        backtest.report_url,
        tracker.model_version_url(candidate.registered_name, candidate.version),
    ):
        assert url.startswith(f"{tracker.ui_url}/#/"), url
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), url
    # The routes behind the '#' name what exists.
    assert backtest.report_url == f"{backtest.run_url}/artifacts/{REPORT_ARTIFACT}"
    assert _run(http, backtest.run_id)["info"]["experiment_id"] == tracker.experiment_id
    # The file itself: MLflow sends it as an attachment (a browser downloads it), hence the artifact view.
    download = httpx.get(tracker.artifact_download_url(backtest.run_id, REPORT_ARTIFACT), timeout=30)
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/html")
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.text == backtest.html.read_text()
    query = parse_qs(urlsplit(tracker.artifact_download_url(backtest.run_id, REPORT_ARTIFACT)).query)
    assert query == {"path": [REPORT_ARTIFACT], "run_uuid": [backtest.run_id]}


def test_the_ui_base_is_the_configured_url_or_else_the_tracking_server(monkeypatch, tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    assert Tracker("http://mlflow:5000/").ui_url == "http://mlflow:5000"
    assert Tracker("http://mlflow:5000/", ui_url=DEFAULT_MLFLOW_UI_URL).ui_url == "http://mlflow:5000"  # the default: unset
    # Set, it wins: browsers reach Compose's MLflow at a published address, not at its service name.
    assert Tracker("http://mlflow:5000/", ui_url="http://127.0.0.1:5000/").ui_url == "http://127.0.0.1:5000"
    assert Tracker(store).ui_url == DEFAULT_MLFLOW_UI_URL == Settings().mlflow_ui_url
    assert Tracker(store, ui_url="https://mlflow.example.com/").ui_url == "https://mlflow.example.com"
    monkeypatch.setenv("MLFLOW_UI_URL", "https://mlflow.example.com")
    assert Settings().mlflow_ui_url == "https://mlflow.example.com"
    version = Tracker(store).model_version_url("scalping-A-h10", "3")
    assert version == f"{DEFAULT_MLFLOW_UI_URL}/#/models/scalping-A-h10/versions/3"
