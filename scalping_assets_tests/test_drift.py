"""Drift against the training span: silent on a stationary process, loud on a volatility change, the
method pinned whatever the reference's size, the history in an Evidently workspace that `evidently ui`
serves, and the `drift_report` asset on a real MLflow store with a trained model."""

import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from evidently import DataDefinition, Report
from evidently import Dataset as EvidentlyDataset
from evidently.metrics import ValueDrift
from evidently.ui.workspace import Workspace

from scalping_assets.assets.drift import ARTIFACT, DRIFT_ASSETS, DRIFT_CHECK, DRIFT_CHECKS, drift_report
from scalping_assets.features.batch import compute_features
from scalping_assets.features.dataset import Dataset, DatasetSpec, build_dataset
from scalping_assets.features.labels import PROBABILITY_COLUMNS
from scalping_assets.market.simulator import day_start_epoch, simulator
from scalping_assets.market.symbols import get_symbol
from scalping_assets.models.config import profile_config
from scalping_assets.models.pipeline import train_candidate
from scalping_assets.monitoring.drift import (
    CALENDAR_FEATURES,
    MAX_DRIFT_SHARE,
    METHOD,
    PREDICTION,
    PREDICTION_METHOD,
    SYMBOL,
    THRESHOLD,
    DriftInputError,
    drift,
    live_rows,
    record_snapshot,
)
from scalping_assets.monitoring.predlog import PREDICTION_SCHEMA
from scalping_assets.partitions import DAILY
from scalping_assets.records import DriftRecord, PredictionLogRecord
from scalping_assets.resources import FolderResource, MLflowResource, RecordIOManager
from scalping_assets.testing.server_process import free_port, server_process
from scalping_assets_tests.conftest import service_unavailable

SYMBOLS = ["SIG_AR1", "R_100"]
SEED = 7
LIVE_DAY, SHIFTED_DAY = date(2026, 1, 4), date(2026, 1, 5)
VOLATILITY = ["rv_20", "rv_100", "rv_500", "parkinson_20", "parkinson_100", "impact_20", "impact_100", "garch_sigma"]
SCALE_FREE = ["tick_dir", "imbalance_10", "imbalance_50", "imbalance_200", "mr_z_50", "mr_z_200"]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _scaled(ticks: pd.DataFrame, factor: float, pip: float) -> pd.DataFrame:
    """The same ticks with every log return multiplied by `factor`: volatility × factor."""
    quotes = ticks["quote"].to_numpy(np.float64)
    return ticks.assign(quote=np.round(quotes[0] * np.exp(factor * np.log(quotes / quotes[0])) / pip) * pip)


def day_rows(dataset: Dataset, day: date, rows: int, factor: float = 1.0, symbols: list[str] | None = None) -> pd.DataFrame:
    """`rows` feature rows of `day` drawn at random over its ticks, as the service computes them (the
    day before as warm-up, the dataset's fitted features), with a `symbol` column."""
    parts = []
    for symbol in symbols or dataset.meta.spec.symbols:
        pip = get_symbol(symbol).pip_size
        ticks = simulator(symbol, SEED).days(day - timedelta(days=1), day)
        frame = compute_features(_scaled(ticks, factor, pip) if factor != 1 else ticks, pip, dataset.meta.fitted[symbol])
        frame = frame[frame["epoch"] >= day_start_epoch(day)]
        frame.insert(0, SYMBOL, symbol)
        parts.append(frame.sample(rows // len(symbols or dataset.meta.spec.symbols), random_state=1))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def world():
    """Two symbols' dataset (training span: 70 % of 2026-01-02) and a later day's feature rows, as they
    are and with the volatility tripled; the predicted classes drawn alike (stationary) or leaning up."""
    spec = DatasetSpec(symbols=SYMBOLS, start=date(2026, 1, 2), end=date(2026, 1, 2))
    ticks = {s: simulator(s, SEED).days(date(2026, 1, 1), date(2026, 1, 2)) for s in SYMBOLS}
    dataset = build_dataset(spec, ticks)
    reference = dataset.rows("train")[[SYMBOL, *dataset.feature_names]].reset_index(drop=True)
    rng = np.random.default_rng(0)
    classes = ["down", "neutral", "up"]
    predictions = pd.DataFrame({SYMBOL: rng.choice(SYMBOLS, 5_000), PREDICTION: rng.choice(classes, 5_000, p=[0.3, 0.4, 0.3])})
    stationary = day_rows(dataset, LIVE_DAY, 4_000)
    stationary[PREDICTION] = rng.choice(classes, len(stationary), p=[0.3, 0.4, 0.3])
    tripled = day_rows(dataset, LIVE_DAY, 4_000, factor=3.0)
    tripled[PREDICTION] = rng.choice(classes, len(tripled), p=[0.1, 0.2, 0.7])
    world = {"dataset": dataset, "reference": reference, "predictions": predictions, "stationary": stationary, "tripled": tripled}
    for name in ("stationary", "tripled"):
        world[f"{name} result"] = drift(reference, world[name], features=dataset.feature_names, reference_predictions=predictions)
    return world


def test_two_samples_of_a_stationary_process_do_not_drift(world):
    """The training span and a later day of the same simulated process: nothing drifts."""
    result, dataset = world["stationary result"], world["dataset"]
    assert result.method == METHOD and result.threshold == THRESHOLD
    assert result.share <= 0.05 and result.share <= MAX_DRIFT_SHARE, result.table()[:5]
    assert sorted(result.excluded) == sorted(CALENDAR_FEATURES), "the calendar differs from the training span's by construction"
    assert set(result.scores) == set(dataset.feature_names) - set(CALENDAR_FEATURES)
    assert result.mix == {s: 2_000 for s in SYMBOLS}
    assert result.reference_rows == 20_000


def test_tripled_volatility_drifts_the_volatility_features_only(world):
    result = world["tripled result"]
    assert set(VOLATILITY) <= set(result.drifted), result.table()
    assert not set(SCALE_FREE) & set(result.drifted), "sign and z-score features do not see a volatility change"
    assert result.share > MAX_DRIFT_SHARE, "the share check fails"
    assert result.drifted == sorted(result.drifted, key=lambda f: -result.scores[f]), "the most drifted first"
    assert [r["feature"] for r in result.table()][: len(result.drifted)] == result.drifted


def test_the_method_and_its_meaning_are_pinned_whatever_the_reference_size(world):
    """Evidently's default judges a column by a KS p-value under 1,000 reference rows and by the normed
    Wasserstein distance above; ours is the distance at every size, estimating the same quantity: a
    reference of 800 rows scores the data as one of 20,000 does, within its sampling noise, and every
    feature not within that noise of the threshold gets the same verdict."""
    reference, features = world["reference"], world["dataset"].feature_names
    small = 800
    for name in ("stationary", "tripled"):
        large = world[f"{name} result"]
        few = drift(reference, world[name], features=features, max_reference_rows=small)
        assert few.reference_rows == small
        configs = [m["config"] for m in few.snapshot.dict()["metrics"][1:]]
        assert {(c["method"], c["threshold"]) for c in configs if c.get("column") in features} == {(METHOD, THRESHOLD)}
        a, b = few.scores, large.scores
        off = {f: (a[f], b[f]) for f in a if abs(a[f] - b[f]) > 0.1 + 0.1 * b[f]}
        assert not off, (name, off)
        clear = [f for f in b if abs(b[f] - THRESHOLD) > 0.1 + 0.1 * b[f]]
        assert len(clear) >= len(b) - 4
        assert {f for f in clear if f in few.drifted} == {f for f in clear if f in large.drifted}, name
    # What the pin prevents: Evidently's own choice follows the reference's size.
    definition = DataDefinition(numerical_columns=["rv_500"])
    current = EvidentlyDataset.from_pandas(world["stationary"][["rv_500"]], data_definition=definition)
    chosen = {}
    for rows in (small, 20_000):
        sample = EvidentlyDataset.from_pandas(reference[["rv_500"]].sample(rows, random_state=0), data_definition=definition)
        chosen[rows] = Report([ValueDrift(column="rv_500")]).run(current, sample).dict()["metrics"][0]["config"]["method"]
    assert chosen == {small: "K-S p_value", 20_000: "Wasserstein distance (normed)"}


def test_the_reference_follows_the_live_symbol_mix(world):
    """A day that asked about R_100 alone is not drift, though R_100's features differ from SIG_AR1's."""
    r_100 = world["stationary"][world["stationary"][SYMBOL] == "R_100"]
    features = VOLATILITY + SCALE_FREE
    matched = drift(world["reference"], r_100, features=features)
    assert matched.mix == {"R_100": len(r_100)} and matched.share <= 0.05
    pooled = drift(world["reference"].drop(columns=SYMBOL), r_100.drop(columns=SYMBOL), features=features)
    assert pooled.share > MAX_DRIFT_SHARE, "without the symbols, the mix alone would raise the alarm"


def test_prediction_drift_compares_class_distributions(world):
    same, leaning = world["stationary result"].prediction, world["tripled result"].prediction
    assert same.method == PREDICTION_METHOD and not same.drifted and same.score < 0.05
    assert sum(same.live.values()) == pytest.approx(1) and sum(same.reference.values()) == pytest.approx(1)
    assert leaning.drifted and leaning.live["up"] > 0.6 and leaning.reference["up"] < 0.4
    assert PREDICTION not in world["tripled result"].scores, "prediction drift is not a feature"
    assert world["tripled result"].snapshot.dict()["metrics"][-1]["config"]["method"] == PREDICTION_METHOD


def test_live_rows_refuse_a_feature_vector_of_the_wrong_length():
    log = pd.DataFrame(
        {
            SYMBOL: ["R_100"] * 2,
            "features": [[1.0, 2.0], [1.0]],
            "latency_ms": [0.5, 0.6],
            **{c: [0.2, 0.2] for c in PROBABILITY_COLUMNS[:2]},
            PROBABILITY_COLUMNS[2]: [0.6, 0.6],
            "source": ["predictions-2026-01-04-1.jsonl"] * 2,
            "line": [7, 8],
        }
    )
    with pytest.raises(DriftInputError, match=r"day\.parquet: row 1 \(predictions-2026-01-04-1\.jsonl:8\) logs 1 features"):
        live_rows(log, ["a", "b"], "day.parquet")
    frame = live_rows(log.iloc[:1], ["a", "b"], "day.parquet")
    assert list(frame.columns) == [SYMBOL, "a", "b", PREDICTION, "latency_ms"] and frame[PREDICTION].tolist() == ["up"]


@pytest.fixture(scope="module")
def workspace(world, tmp_path_factory):
    """Model A: version 1 on two days (the first recorded twice), version 2 on one; model B: one day."""
    folder = tmp_path_factory.mktemp("evidently")
    features = VOLATILITY + SCALE_FREE  # fewer charts to draw: the workspace is what is tested here
    live = {"accuracy": 0.41, "latency_p50_ms": 0.8, "latency_p99_ms": 2.5}
    recorded = []
    for model, version, day, rows in [
        ("model-a", "1", LIVE_DAY, "stationary"),
        ("model-a", "1", LIVE_DAY, "stationary"),  # materialized again: replaces
        ("model-a", "1", SHIFTED_DAY, "tripled"),
        ("model-a", "2", SHIFTED_DAY, "stationary"),
        ("model-b", "4", LIVE_DAY, "stationary"),
    ]:
        result = drift(
            world["reference"], world[rows], features=features, live=live | {"accuracy": live["accuracy"] + len(recorded) / 100},
            day=day, labels={"version": version, "day": day.isoformat()},
        )  # fmt: skip
        recorded.append((model, version, day, result, record_snapshot(folder, model, result)))
    return folder, recorded


def test_the_workspace_holds_a_project_per_registered_model_and_a_snapshot_per_run(workspace):
    folder, recorded = workspace
    opened = Workspace(str(folder))
    projects = {p.name: p for p in opened.list_projects()}
    assert set(projects) == {"model-a", "model-b"}
    runs = {name: [str(r) for r in opened.list_runs(p.id)] for name, p in projects.items()}
    assert len(runs["model-a"]) == 3, "one snapshot per (version, day); the day recorded twice is replaced"
    assert len(runs["model-b"]) == 1
    stored = [opened.get_run(projects["model-a"].id, r) for r in runs["model-a"]]
    assert sorted((s.metadata["version"], s.metadata["day"]) for s in stored) == [
        ("1", LIVE_DAY.isoformat()), ("1", SHIFTED_DAY.isoformat()), ("2", SHIFTED_DAY.isoformat())
    ]  # fmt: skip
    assert recorded[0][4] not in runs["model-a"] and recorded[1][4] in runs["model-a"]
    dashboard = projects["model-a"].dashboard.model()
    titles = [p.title for p in dashboard.panels]
    for wanted in ("Share of drifted features", "Most-drifted features (of the last snapshot)", "Live accuracy", "Latency (ms)"):
        assert wanted in titles
    most = next(p for p in dashboard.panels if p.title.startswith("Most-drifted"))
    last = recorded[3][3]  # model-a's last snapshot
    assert [m.metric_labels["column"] for m in most.values] == sorted(last.scores, key=lambda f: -last.scores[f])[:5]


def test_evidently_ui_shows_the_history(workspace, tmp_path):
    """`evidently ui` on the workspace (what `make monitor` runs) serves each project's series."""
    folder, recorded = workspace
    port = free_port()
    command = [str(Path(sys.executable).parent / "evidently"), "ui", "--workspace", str(folder), "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    try:
        with server_process(command, f"http://127.0.0.1:{port}/api/version", {}, tmp_path / "evidently.log", 90):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}/api", timeout=30) as http:
                projects = {p["name"]: p["id"] for p in http.get("/projects").json()}
                assert set(projects) == {"model-a", "model-b"}
                wanted = [
                    {"tags": [], "metadata": {}, "metric": f"evidently:metric_v2:{metric}", "metric_labels": labels}
                    for metric, labels in (
                        ("DriftedColumnsCount", {"value_type": "share"}),
                        ("LiveFigure", {"figure": "accuracy"}),
                    )
                ]
                answer = http.post(f"/v2/snapshots/{projects['model-a']}/data_series_batch", json={"series_filter": wanted})
                assert answer.status_code in (200, 201), answer.text
                data = answer.json()
    except RuntimeError as exc:
        service_unavailable(f"evidently ui did not start: {exc}")
    assert [s["timestamp"][:10] for s in data["sources"]] == [
        LIVE_DAY.isoformat(),
        SHIFTED_DAY.isoformat(),
        SHIFTED_DAY.isoformat(),
    ]
    shares = [v for s in data["series"] if s["metric_type"].endswith("DriftedColumnsCount") for v in s["values"] if v is not None]
    assert sorted(shares) == sorted(r[3].share for r in recorded[1:4])
    accuracy = [v for s in data["series"] if s["metric_type"].endswith("LiveFigure") for v in s["values"]]
    assert sorted(accuracy) == pytest.approx([0.42, 0.43, 0.44]), "the replaced snapshot's 0.41 is gone"


# -- the asset ----------------------------------------------------------------------------------------

TINY = {"n_estimators": 8, "early_stopping_rounds": 4, "max_train_windows": 2_000, "max_eval_windows": 1_000}
MODEL_SYMBOL = "SIG_AR1"
prediction_log = dg.SourceAsset(key="prediction_log", partitions_def=DAILY, io_manager_key="records")


def write_log(path: Path, day: date, served: list[tuple[str, str, pd.DataFrame]]) -> PredictionLogRecord:
    """A consolidated prediction log (`monitoring.predlog`'s schema) of (model, version, rows with
    `symbol`, the features and `p_down`/`p_neutral`/`p_up`) and its record."""
    frames = []
    for name, version, rows in served:
        features = rows.drop(columns=[SYMBOL, *PROBABILITY_COLUMNS])
        n = len(rows)
        frames.append(
            pd.DataFrame(
                {
                    "timestamp": pd.Timestamp(datetime.combine(day, datetime.min.time(), UTC))
                    + pd.to_timedelta(np.arange(n), "s"),
                    "endpoint": "/stream/ticks",
                    "symbol": rows[SYMBOL].to_numpy(),
                    "registered_model": name,
                    "version": version,
                    "variant": "champion",
                    "client": "me",
                    "epoch": pd.array(np.arange(n), dtype="Int64"),
                    "features_digest": "0" * 16,
                    "latency_ms": np.linspace(0.2, 3.0, n),
                    **{c: rows[c].to_numpy(np.float64) for c in PROBABILITY_COLUMNS},
                    "features": list(features.to_numpy(np.float64)),
                    "source": "predictions-x-1.jsonl",
                    "line": np.arange(1, n + 1),
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    pq.write_table(pa.Table.from_pandas(frame, schema=PREDICTION_SCHEMA, preserve_index=False), path)
    models = sorted({f"{n}@{v}" for n, v, _ in served})
    return PredictionLogRecord(day=day, path=str(path), files=[], read=len(frame), kept=len(frame), models=models)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Two tiny XGBoost versions trained on SIG_AR1 (2026-01-02) in a real MLflow store, and the
    resources the asset runs with."""
    root = tmp_path_factory.mktemp("served")
    resources = {
        "mlflow_store": MLflowResource(tracking_uri=f"sqlite:///{root}/mlflow.db", artifact_root=str(root / "mlartifacts")),
        "monitoring_store": FolderResource(root=str(root / "monitoring")),
        "records": RecordIOManager(root=str(root / "records")),
    }
    tracker = resources["mlflow_store"].tracker()
    spec = DatasetSpec(symbols=[MODEL_SYMBOL], start=date(2026, 1, 2), end=date(2026, 1, 2), sequence_length=20)
    dataset = build_dataset(spec, {MODEL_SYMBOL: simulator(MODEL_SYMBOL, SEED).days(date(2026, 1, 1), date(2026, 1, 2))})
    folder = dataset.save(root / "datasets" / "tiny")
    configs = [profile_config("demo", "xgboost", seed=s, **TINY) for s in (0, 1)]
    candidates = [train_candidate(dataset, c, tracker, dataset_name="tiny", dataset_source=str(folder)) for c in configs]
    return {"root": root, "resources": resources, "tracker": tracker, "dataset": dataset, "candidates": candidates}


def _materialize(served, day: date, rows: dict[str, pd.DataFrame], extra: list[tuple[str, str, pd.DataFrame]] = ()):
    """The day's log (`rows`: version -> feature rows, probabilities drawn from the version's test span)
    saved with its record, then `drift_report` materialized on it."""
    tracker = served["tracker"]
    logged = []
    for candidate in served["candidates"]:
        if candidate.version not in rows:
            continue
        part = rows[candidate.version][[SYMBOL, *served["dataset"].feature_names]]
        test = pd.read_parquet(tracker.download(candidate.run_id, "predictions/test.parquet"))
        probabilities = test[PROBABILITY_COLUMNS].sample(len(part), replace=True, random_state=2).reset_index(drop=True)
        logged.append(
            (candidate.registered_name, candidate.version, pd.concat([part.reset_index(drop=True), probabilities], axis=1))
        )
    record = write_log(served["root"] / f"{day}.parquet", day, logged + list(extra))
    served["resources"]["records"].store().save(["prediction_log", day.isoformat()], record)
    return dg.materialize(
        [prediction_log, drift_report], partition_key=day.isoformat(), resources=served["resources"], run_config=QUIET
    )


def test_drift_report_judges_every_served_version_and_logs_the_report_to_mlflow(served):
    dataset, tracker = served["dataset"], served["tracker"]
    first, second = served["candidates"]
    rows = day_rows(dataset, LIVE_DAY, 1_500)
    few = rows.iloc[:50].assign(**dict.fromkeys(PROBABILITY_COLUMNS, 1 / 3))
    result = _materialize(
        served, LIVE_DAY, {first.version: rows, second.version: rows.iloc[:600]}, [(first.registered_name, "9", few)]
    )
    assert result.success
    record = served["resources"]["records"].store().load(["drift_report", LIVE_DAY.isoformat()], DriftRecord)
    assert (record.version, record.current_rows, record.symbols) == (first.version, 1_500, {MODEL_SYMBOL: 1_500})
    assert [o.version for o in record.others] == [second.version], "one report per served version"
    assert record.skipped == {f"{first.registered_name}@9": "50 predictions < min_rows 200"}
    for judged, candidate in ((record, first), (record.others[0], second)):
        assert judged.drift_share <= MAX_DRIFT_SHARE and judged.method == METHOD and judged.run_id == candidate.run_id
        assert judged.prediction_drift["drifted"] is False, "live probabilities drawn from the test span's"
        assert Path(judged.html).read_text().lstrip().startswith("<!DOCTYPE html>")
        logged = tracker.download(candidate.run_id, ARTIFACT.format(day=LIVE_DAY.isoformat()))
        assert logged.read_bytes() == Path(judged.html).read_bytes()
        assert judged.report_url == tracker.artifact_url(candidate.run_id, f"drift/{LIVE_DAY}.html")
        assert judged.live["latency_p99_ms"] > judged.live["latency_p50_ms"] > 0 and "accuracy" not in judged.live
    (materialized,) = result.asset_materializations_for_node("drift_report")
    metadata = materialized.metadata
    assert metadata["drift_share"].value == record.drift_share
    assert metadata["drifted_features"].value == len(record.drifted)
    table = [r.data for r in metadata["features"].value.records]
    assert [r["feature"] for r in table] == sorted(record.scores, key=lambda f: -record.scores[f])
    assert {r["feature"] for r in table if r["drifted"]} == set(record.drifted)
    assert metadata["mlflow_report"].value == record.report_url
    assert [r.data["served"] for r in metadata["versions"].value.records] == [
        f"{first.registered_name}@{first.version}", f"{first.registered_name}@{second.version}", f"{first.registered_name}@9"
    ]  # fmt: skip
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == DRIFT_CHECK and check.passed
    opened = Workspace(str(served["root"] / "monitoring" / "evidently"))
    (project,) = opened.list_projects()
    assert project.name == first.registered_name and len(opened.list_runs(project.id)) == 2


def test_drift_report_check_fails_after_a_volatility_change(served):
    first = served["candidates"][0]
    rows = day_rows(served["dataset"], SHIFTED_DAY, 1_000, factor=3.0)
    result = _materialize(served, SHIFTED_DAY, {first.version: rows})
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith(f"{first.registered_name}@{first.version}: ") and "rv_" in check.description
    record = served["resources"]["records"].store().load(["drift_report", SHIFTED_DAY.isoformat()], DriftRecord)
    assert set(VOLATILITY) <= set(record.drifted)


def test_drift_assets_and_checks_are_exported():
    assert DRIFT_ASSETS == [drift_report]
    assert DRIFT_CHECKS == [dg.AssetCheckKey(dg.AssetKey("drift_report"), DRIFT_CHECK)]
