"""The feature and dataset assets materialized for real: partitions across day boundaries, checks, metadata."""

from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from scalping_assets.definitions import build_resources, defs
from scalping_assets.features.batch import compute_features
from scalping_assets.features.dataset import Dataset
from scalping_assets.features.registry import WARMUP_TICKS
from scalping_assets.market.simulator import simulator
from scalping_assets.partitions import tick_partition
from scalping_assets.records import DatasetRecord
from scalping_assets.settings import Settings
from scalping_assets_tests.feature_helpers import assert_same_features

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
SYMBOLS = ["SIG_AR1", "CRASH500"]


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    resources = build_resources(Settings(data_dir=data, seed=11))
    with dg.instance_for_test() as instance:
        for job in ("ticks_job", "features_job"):
            for day in DAYS:
                for symbol in SYMBOLS:
                    result = defs.resolve_job_def(job).execute_in_process(
                        partition_key=tick_partition(day, symbol), instance=instance, resources=resources, run_config=QUIET
                    )
                    assert result.success
                    assert all(c.passed for c in result.get_asset_check_evaluations()), (job, day, symbol)
        # A second dataset partition: a check of one dataset reads that dataset only, not every one.
        instance.add_dynamic_partitions("dataset", ["one", "two"])
        dataset = defs.resolve_job_def("dataset_job").execute_in_process(
            instance=instance,
            resources=resources,
            run_config={**QUIET, "ops": {"training_dataset": {"config": {"symbols": SYMBOLS}}}},
            partition_key="two",
        )
        yield data, resources, dataset


def test_features_of_a_day_equal_the_continuous_computation_across_the_boundary(materialized):
    data, resources, _ = materialized
    feature_store = resources["feature_store"].store()
    for symbol in SYMBOLS:
        continuous = simulator(symbol, 11).days(date(2026, 1, 1), date(2026, 1, 3))
        pip = 0.001
        full = compute_features(continuous, pip)
        day_two = feature_store.read_day(symbol, date(2026, 1, 2))
        rows = np.searchsorted(continuous["epoch"].to_numpy(), day_two["epoch"].to_numpy())
        names = list(day_two.columns[1:])
        assert_same_features(day_two.iloc[:, 1:], full.iloc[rows, 1:], names, f"{symbol} day 2 vs continuous")
        first_day = feature_store.read_day(symbol, date(2026, 1, 1))
        undefined = ~np.isfinite(first_day.iloc[:, 1:].to_numpy()).all(axis=1)
        assert undefined.sum() == WARMUP_TICKS and undefined[:WARMUP_TICKS].all(), "only the first stored day warms up"


def test_training_dataset_asset_writes_a_checked_dataset_with_plots(materialized):
    data, resources, result = materialized
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["dataset_finite"].passed and checks["dataset_splits_disjoint"].passed
    assert "dataset_class_balance" in checks
    meta = result.asset_materializations_for_node("training_dataset")[0].metadata
    for key in ("correlation_heatmap", "mutual_information"):
        assert "data:image/png;base64," in meta[key].value
    assert meta["range"].value == "2026-01-02 .. 2026-01-03"
    dataset = Dataset.load(data / "datasets" / "two")
    assert set(dataset.frame["symbol"]) == set(SYMBOLS)
    record = resources["records"].store().load(["training_dataset", "two"], DatasetRecord)  # what the checks read
    assert Path(record.path) == data / "datasets" / "two" and record.fingerprint == dataset.meta.fingerprint
    assert record.rows == dataset.meta.rows
    assert dataset.meta.fitted.keys() == set(SYMBOLS)


def _dataset_failure(resources, config: dict) -> str:
    """Run training_dataset with `config`; it must fail, and this is its error message."""
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["bad"])
        result = defs.resolve_job_def("dataset_job").execute_in_process(
            instance=instance,
            resources=resources,
            run_config={**QUIET, "ops": {"training_dataset": {"config": {"symbols": SYMBOLS, **config}}}},
            partition_key="bad",
            raise_on_error=False,
        )
    assert not result.success
    return str(result.failure_data_for_node("training_dataset").error.message)


def test_training_dataset_names_the_missing_feature_partitions(materialized):
    message = _dataset_failure(materialized[1], {"end": "2026-01-04"})
    assert "2026-01-04" in message and "materialize `features`" in message


def test_training_dataset_refuses_a_malformed_day(materialized):
    assert "YYYY-MM-DD" in _dataset_failure(materialized[1], {"start": "2026-13-01"})
