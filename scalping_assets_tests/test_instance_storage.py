"""The repository's dagster.yaml: SQLite by default, a real PostgreSQL when DAGSTER_PG_URL is set."""

import shutil

import dagster as dg
import psycopg2
import pytest

from scalping_assets.definitions import build_resources, defs
from scalping_assets.market.quality import TICK_CHECKS
from scalping_assets.partitions import tick_partition
from scalping_assets.settings import Settings

from .conftest import REPO_ROOT

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture
def dagster_home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    return home


def _materialize(instance: dg.DagsterInstance, data_dir: str) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("ticks_job").execute_in_process(
        partition_key=tick_partition("2026-01-02", "JD50"),
        instance=instance,
        resources=build_resources(Settings(data_dir=data_dir)),
        run_config=QUIET,
    )


def test_default_storage_is_sqlite_under_dagster_home(dagster_home, tmp_path):
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert _materialize(instance, str(tmp_path / "data")).success
        assert instance.get_latest_materialization_event(dg.AssetKey("ticks")) is not None
    assert (dagster_home / "storage" / "history" / "runs.db").exists()


@pytest.mark.postgres
def test_materialization_against_postgres(dagster_home, tmp_path, pg_url, monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_URL", pg_url)
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        result = _materialize(instance, str(tmp_path / "data"))
        assert result.success
        assert (
            instance.get_latest_materialization_event(dg.AssetKey("ticks")).asset_materialization.partition == "2026-01-02|JD50"
        )
    # Read back from the database itself, not through Dagster.
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchone() == ("SUCCESS",)
        cur.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'", (result.run_id,)
        )
        assert cur.fetchone() == (1,)
        cur.execute("SELECT check_name, execution_status FROM asset_check_executions WHERE run_id = %s", (result.run_id,))
        assert dict(cur.fetchall()) == {name: "SUCCEEDED" for name in TICK_CHECKS}
    assert not (dagster_home / "storage" / "history" / "runs.db").exists()
