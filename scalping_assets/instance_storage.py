"""Dagster instance storage picked from the environment when the instance starts.

`dagster.yaml` cannot branch on an environment variable, so it names this class: PostgreSQL
(dagster-postgres) when the variable (default DAGSTER_PG_URL) holds a URL, else SQLite files.
"""

from __future__ import annotations

import os

from dagster import Field, StringSource
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClass
from dagster_postgres import DagsterPostgresStorage


def psycopg2_url(url: str) -> str:
    """Pin the driver dagster-postgres is built on: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg2://{rest}"
    return url


class EnvSelectedStorage(DagsterStorage, ConfigurableClass):
    """Never instantiated itself: `from_config_value` returns the Postgres or SQLite storage."""

    @classmethod
    def config_type(cls):
        return {
            # Dagster's own default: $DAGSTER_HOME/storage.
            "sqlite_base_dir": Field(StringSource, is_required=False),
            "postgres_url_env": Field(str, default_value="DAGSTER_PG_URL"),
            # A deployed instance (deploy/dagster/dagster.yaml) must not quietly keep its runs in files.
            "require_postgres": Field(bool, default_value=False),
        }

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> DagsterStorage:
        url = os.environ.get(config_value["postgres_url_env"], "").strip()
        if url:
            storage = DagsterPostgresStorage(psycopg2_url(url), inst_data=inst_data)
            for part in (storage.run_storage, storage.event_log_storage, storage.schedule_storage):
                _ping_pooled_connections(part)
            return storage
        if config_value["require_postgres"]:
            raise ValueError(
                f"{config_value['postgres_url_env']} is empty: this instance keeps its runs in PostgreSQL "
                "(postgresql://user:password@host:5432/db) and has no SQLite fallback"
            )
        base_dir = config_value.get("sqlite_base_dir") or os.path.join(os.environ["DAGSTER_HOME"], "storage")
        return DagsterSqliteStorage.from_local(base_dir, inst_data=inst_data)


def _ping_pooled_connections(storage) -> None:
    """The webserver keeps one pooled connection per storage (`optimize_for_webserver`, the others open
    one per query). A PostgreSQL restart or failover kills it, and the next request (a run launched
    from the UI) fails on it: the rehearsal's PostgreSQL fault. Testing it at checkout replaces it."""
    optimize = storage.optimize_for_webserver

    def optimize_and_ping(statement_timeout: int, pool_recycle: int, max_overflow: int) -> None:
        optimize(statement_timeout, pool_recycle, max_overflow)
        storage._engine.pool._pre_ping = True  # create_engine(pool_pre_ping=True), which Dagster does not pass

    storage.optimize_for_webserver = optimize_and_ping
