"""The production rehearsal: the deployment's processes from deploy/, on PostgreSQL, through five faults."""

import psycopg2

from scalping_assets.testing.rehearsal import COLLECTED, Rehearsal

from .conftest import PG_ADMIN_URL, service_unavailable

FAULTS = ["daemon kill -9", "MLflow server kill -9", "service kill -9", "collector kill -9", "PostgreSQL connections"]


def test_the_stack_survives_each_fault_losing_no_tick_no_run_and_no_answer(tmp_path):
    try:
        psycopg2.connect(PG_ADMIN_URL, connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        service_unavailable(f"PostgreSQL at {PG_ADMIN_URL}: {exc}")
    outcome = Rehearsal(tmp_path / "rehearsal", postgres=PG_ADMIN_URL).run()
    print(f"\n{outcome.table()}")

    assert [f.fault for f in outcome.faults] == FAULTS
    failed = [f.row() for f in outcome.faults if not f.ok]
    assert not failed, failed
    # Each killed process was restarted once by the supervisor; the others never died.
    assert outcome.restarts == {"mlflow": 1, "code-server": 0, "webserver": 0, "daemon": 1, "service": 1, "collector": 1}, (
        outcome.restarts
    )
    # No run lost: the scheduled day, the training queued while the daemon was down, the sensor's export
    # and the run after PostgreSQL's connections ended all succeeded; nothing is left queued or started.
    assert set(outcome.runs) == {"SUCCESS"}, outcome.run_jobs
    jobs = [entry.split()[0] for entry in outcome.run_jobs]
    assert {"daily_job", "retrain_job", "serving_job", "ticks_job"} <= set(jobs), jobs
    # No tick lost or doubled across the collector's kill.
    assert set(outcome.ticks) == set(COLLECTED)
    assert all(r["lost"] == r["duplicated"] == r["wrong"] == 0 and r["stored"] > 0 for r in outcome.ticks.values()), outcome.ticks
    # No 5xx but while the service itself was down; most answers were served.
    bad = {kind: n for kind, n in outcome.predictions.items() if kind not in ("200", "refused in downtime", "5xx in downtime")}
    assert not bad, outcome.predictions
    assert outcome.predictions.get("200", 0) > 100, outcome.predictions
    assert outcome.served_version
