"""Backfills run partitions side by side: the run queue's limit comes from SCALPING_MAX_CONCURRENT."""

import os
import shutil

import dagster as dg
import pytest

from scalping_assets.run_queue import SettingsRunCoordinator

from .conftest import REPO_ROOT


@pytest.fixture
def dagster_home(tmp_path, monkeypatch):
    shutil.copy(REPO_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    monkeypatch.delenv("SCALPING_MAX_CONCURRENT", raising=False)
    return tmp_path


def _limit() -> int:
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_coordinator, SettingsRunCoordinator)
        return instance.run_coordinator.get_run_queue_config().max_concurrent_runs


def test_the_run_queue_runs_as_many_partitions_as_configured(dagster_home, monkeypatch):
    assert _limit() == os.cpu_count()
    monkeypatch.setenv("SCALPING_MAX_CONCURRENT", "3")
    assert _limit() == 3
    monkeypatch.setenv("SCALPING_MAX_CONCURRENT", "0")
    with pytest.raises(ValueError, match="max_concurrent"):
        _limit()
