"""The live loop end to end (issue 17), with its real parts: the local Deriv server plays SIG_AR1 with
its volatility 20 % higher from 2026-01-04 on; the collector stores the feed, a client streams it to a
real `bentoml serve`, and the code location's sensors do the rest on their own. The day before the
change (the control) passes every check and alerts nobody; the changed day fails the drift check, the
webhook gets one alert, the retrain trains on the last two collected days, and the service serves the
new version without a /reload.

One run of `python -m scalping_assets.testing.live_demo` (a few minutes), in a process of its own: the
code location reads the demo's settings when it is imported.
"""

import json
from types import SimpleNamespace

import pytest

from scalping_assets.testing.live_demo import run_in_subprocess

CONTROL, CHANGED = "2026-01-03", "2026-01-04"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    done, report = run_in_subprocess(tmp_path_factory.mktemp("live") / "demo", "--timeout", "900", timeout_s=1500)
    assert report is not None, f"no report (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return SimpleNamespace(rc=done.returncode, out=done.stdout, report=report)


def _runs(report: dict, job: str, partition: str = "") -> list[dict]:
    return [r for r in report["launched"] if r["job"] == job and r["partition"].startswith(partition)]


def _failing(report: dict) -> list[dict]:
    return [a for a in report["alerts"] if a["text"].startswith(("Check failing", "Run failing"))]


def test_the_loop_closes_on_its_own(live):
    report = live.report
    assert live.rc == 0 and report["closed"], f"{report['problem']}\n{live.out[-3000:]}"
    assert report["served"] != report["initial"]
    assert report["final_answers"].get(report["served"], 0) > 0, "the tail day's ticks are answered by the new version"
    assert set(report["final_answers"]) <= {report["served"], "warming up"}
    assert not report["feed"]["errors"], report["feed"]["errors"]


def test_the_control_day_passes_every_check_and_alerts_nobody(live):
    report = live.report
    for job in ("daily_job", "monitoring_job", "live_job"):
        (run,) = _runs(report, job, CONTROL)
        assert run["success"] and run["checks"], (job, run)
        assert all(c["passed"] for c in run["checks"].values()), (job, run["checks"])
    assert not [a for a in _failing(report) if CONTROL in json.dumps(a)], "no alert names the control day"


def test_the_change_fails_the_drift_check_only_and_alerts_once(live):
    report = live.report
    (ticks,) = _runs(report, "daily_job", CHANGED)
    assert ticks["success"], "a 20 % volatility rise is inside the quality check's band: the day enters the datasets"
    (monitoring,) = _runs(report, "monitoring_job", CHANGED)
    failed = {name for name, c in monitoring["checks"].items() if not c["passed"]}
    assert failed == {"drift_share_within_threshold"}, monitoring["checks"]
    (failing,) = _failing(report)
    assert failing["text"].startswith("Check failing: drift_share_within_threshold on drift_report"), failing["text"]
    assert CHANGED in json.dumps(failing), "the alert names the day"


def test_the_retrain_learns_the_last_two_days_and_its_champion_is_served(live):
    report = live.report
    (retrain,) = _runs(report, "retrain_job")
    assert retrain["sensor"] == "retrain_sensor" and retrain["partition"] == f"rolling-{CHANGED}" and retrain["success"]
    (export,) = _runs(report, "serving_job", f"rolling-{CHANGED}")
    assert export["sensor"] == "champion_promoted_sensor" and export["success"]
    (promoted,) = [a for a in report["alerts"] if a["text"].startswith(f"Retrain rolling-{CHANGED} promoted")]
    assert f"v{report['served']}" in promoted["text"]
    (switch,) = report["follows"]
    assert f"{{'champion': '{report['initial']}'}} -> {{'champion': '{report['served']}'}}" in switch
