"""The `scalping` command a newcomer runs first."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import REPO_ROOT

SCALPING = str(Path(sys.executable).parent / "scalping")


def run(args, tmp_path, **variables):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), **variables}
    env.pop("DAGSTER_PG_URL", None)
    return subprocess.run([SCALPING, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_demo_materializes_checks_and_summarises(tmp_path):
    # The models' part of the demo is covered by test_model_assets.
    done = run(
        ["demo", "--symbols", "R_10,stpRNG", "--days", "2", "--start", "2026-02-01", "--data-dir", "out", "--skip-models"],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "[ticks_job 4/4] stpRNG 2026-02-02: ok" in done.stdout
    assert "[features_job 4/4] stpRNG 2026-02-02: ok" in done.stdout
    assert "2026-02-01  R_10         43200" in done.stdout
    assert "training_dataset default: R_10, stpRNG 2026-02-02 .. 2026-02-02" in done.stdout
    assert "check dataset_splits_disjoint: passed" in done.stdout and "check dataset_finite: passed" in done.stdout
    assert "259,200 ticks in 4 partitions" in done.stdout and "all blocking checks passed" in done.stdout
    assert (tmp_path / "out" / "datasets" / "default" / "meta.json").exists()
    assert sorted(p.name for p in (tmp_path / "out" / "features" / "R_10").iterdir()) == [
        "2026-02-01.parquet",
        "2026-02-02.parquet",
    ]
    assert sorted(p.name for p in (tmp_path / "out" / "ticks" / "stpRNG").iterdir()) == [
        "2026-02-01.parquet",
        "2026-02-02.parquet",
    ]
    assert (tmp_path / "home" / "storage" / "history" / "runs.db").exists()  # the runs are there for the UI


def test_demo_rejects_bad_symbols_before_doing_anything(tmp_path):
    done = run(["demo", "--symbols", "R_10,NOPE", "--data-dir", "out"], tmp_path)
    assert done.returncode == 2
    assert "unknown symbol 'NOPE'; valid symbols: R_10" in done.stderr
    done = run(["demo", "--symbols", "RB200", "--data-dir", "out"], tmp_path)
    assert done.returncode == 2 and "RB200 has no published generation formula" in done.stderr
    assert not (tmp_path / "out").exists()


def test_demo_stays_within_the_tracked_partitions(tmp_path):
    # The demo's runs are runs of the code location's (day, symbol) partitions: SCALPING_SYMBOLS from SCALPING_START_DAY.
    tracked = {"SCALPING_SYMBOLS": "R_100,SIG_AR1", "SCALPING_START_DAY": "2026-01-10"}
    done = run(["demo", "--symbols", "R_10,SIG_AR1", "--data-dir", "out"], tmp_path, **tracked)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "R_10 is not tracked: the (day, symbol) partitions hold SCALPING_SYMBOLS=R_100,SIG_AR1; add R_10 there" in done.stderr
    done = run(["demo", "--symbols", "SIG_AR1", "--start", "2026-01-05", "--data-dir", "out"], tmp_path, **tracked)
    assert done.returncode == 2
    assert "--start 2026-01-05 is before the first tracked day, SCALPING_START_DAY=2026-01-10" in done.stderr
    assert "or set SCALPING_START_DAY=2026-01-05" in done.stderr
    done = run(["demo", "--symbols", "SIG_AR1", "--start", "2099-01-01", "--data-dir", "out"], tmp_path, **tracked)
    assert done.returncode == 2 and "2099-01-03 has not ended yet (UTC)" in done.stderr
    done = run(["demo", "--help"], tmp_path, **tracked)
    assert "those the simulator generates, of R_100,SIG_AR1" in " ".join(done.stdout.split())
    assert "(default SCALPING_START_DAY, 2026-01-10)" in " ".join(done.stdout.split())
    assert not (tmp_path / "out").exists()


def test_symbols_lists_the_catalog(tmp_path):
    done = run(["symbols"], tmp_path)
    assert done.returncode == 0
    assert "CRASH300   crash_boom" in done.stdout and "RB100      range_break" in done.stdout


def test_rollback_says_what_there_is_to_roll_back(tmp_path):
    from scalping_assets.models.tracking import CHAMPION, PREVIOUS, Tracker

    model = "scalping-SIG_AR1-h10"
    done = run(["rollback", "--model", model, "--data-dir", "out"], tmp_path)
    assert done.returncode == 1 and f"no MLflow store at {tmp_path / 'out' / 'mlflow.db'}" in done.stderr
    (tmp_path / "out").mkdir()
    tracker = Tracker(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    tracker.client.create_registered_model(model)
    first = str(tracker.client.create_model_version(model, source=str(tmp_path)).version)
    tracker.set_alias(model, CHAMPION, first)

    done = run(["rollback", "--model", model, "--data-dir", "out"], tmp_path)  # right after the first promotion
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"no previous version to roll back to: version {first} is the only champion so far" in done.stderr
    done = run(["rollback", "--model", "scalping-R_100-h10", "--data-dir", "out"], tmp_path)
    assert done.returncode == 1 and f"has no champion to roll back (models with a champion: {model})" in done.stderr

    second = str(tracker.client.create_model_version(model, source=str(tmp_path)).version)
    tracker.set_alias(model, CHAMPION, second)
    tracker.set_alias(model, PREVIOUS, first)
    done = run(["rollback", "--model", model, "--data-dir", "out"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"version {first} is champion again; version {second} is now previous" in done.stdout
    assert (tracker.alias_version(model, CHAMPION), tracker.alias_version(model, PREVIOUS)) == (first, second)
