import os
import uuid
from pathlib import Path

import pytest

from scalping_assets.market.symbols import catalog

# The tests materialize (day, symbol) partitions across the whole catalogue from the simulator's origin:
# their deployment tracks every symbol. Set before anything imports `scalping_assets.partitions`, and
# inherited by the subprocesses they start (`scalping demo`, the webserver); a developer's own
# SCALPING_SYMBOLS must not change what the suite tests.
os.environ["SCALPING_SYMBOLS"] = ",".join(catalog())
os.environ["SCALPING_START_DAY"] = "2026-01-01"

from scalping_assets.market.store import TickStore  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("SCALPING_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def service_unavailable(reason: str) -> None:
    """Skip when a server is absent, except in CI (SCALPING_REQUIRE_SERVICES=1), where it fails."""
    if os.environ.get("SCALPING_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture
def store(tmp_path) -> TickStore:
    return TickStore(tmp_path / "ticks")


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        service_unavailable(f"PostgreSQL at {PG_ADMIN_URL}: {exc}")
    admin.autocommit = True
    name = f"scalping_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def served_models(tmp_path_factory):
    """A small MLflow store with every model family trained on one SIG_AR1 day, the dataset they were
    trained on, and ONNX bundles of the xgboost (champion) and cnn (challenger) versions."""
    from .serving_helpers import train_served_models

    return train_served_models(tmp_path_factory.mktemp("served"))
