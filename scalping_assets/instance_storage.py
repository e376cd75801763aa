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
        }

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> DagsterStorage:
        url = os.environ.get(config_value["postgres_url_env"], "").strip()
        if url:
            return DagsterPostgresStorage(psycopg2_url(url), inst_data=inst_data)
        base_dir = config_value.get("sqlite_base_dir") or os.path.join(os.environ["DAGSTER_HOME"], "storage")
        return DagsterSqliteStorage.from_local(base_dir, inst_data=inst_data)
