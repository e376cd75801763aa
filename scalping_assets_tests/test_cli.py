"""The `scalping` command a newcomer runs first."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import REPO_ROOT

SCALPING = str(Path(sys.executable).parent / "scalping")


def run(args, tmp_path):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
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


def test_symbols_lists_the_catalog(tmp_path):
    done = run(["symbols"], tmp_path)
    assert done.returncode == 0
    assert "CRASH300   crash_boom" in done.stdout and "RB100      range_break" in done.stdout
