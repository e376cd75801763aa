"""What a quant sees in the Dagster UI after `scalping demo`, asked through the UI's own GraphQL
endpoint: the demo's runs on each job's page and in the Overview timeline (they belong to the code
location of workspace.yaml), the ticks' history with its numeric metadata, the partitions filled."""

import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from datetime import date, timedelta
from pathlib import Path

from scalping_assets.market.store import TickStore
from scalping_assets.partitions import TICK_PARTITIONS
from scalping_assets.testing.dagster_ui import dagster_webserver

from .conftest import REPO_ROOT, service_unavailable

SCALPING = str(Path(sys.executable).parent / "scalping")
SYMBOL, DAYS = "SIG_AR1", [date(2026, 1, 1), date(2026, 1, 2)]  # the demo's default first day (SCALPING_START_DAY)
LOCATION = {"repositoryLocationName": "scalping_assets", "repositoryName": "__repository__"}


def job_runs(job: str) -> str:
    """The job's page (Jobs → job → Runs): runs of that job launched from this code location."""
    return f"""{{ pipelineOrError(params: {{pipelineName: "{job}", repositoryName: "__repository__",
        repositoryLocationName: "scalping_assets"}}) {{
      __typename ... on Pipeline {{ runs {{ runId status tags {{ key value }} }} }} }} }}"""


ALL_RUNS = """{ runsOrError { ... on Runs { results { runId jobName status
    repositoryOrigin { repositoryLocationName repositoryName } } } } }"""


def asset(name: str) -> str:
    return f"""{{ assetNodeOrError(assetKey: {{path: ["{name}"]}}) {{ ... on AssetNode {{
      partitionStats {{ numMaterialized numPartitions numFailed }}
      assetMaterializations {{ runId partition metadataEntries {{ label __typename
        ... on IntMetadataEntry {{ intValue }} ... on FloatMetadataEntry {{ floatValue }} }} }} }} }} }}"""


def test_the_ui_shows_the_demos_runs_on_the_jobs_pages_and_the_ticks_history(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)  # the demo and the UI share the SQLite instance
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    done = subprocess.run(
        [SCALPING, "demo", "--symbols", SYMBOL, "--days", str(len(DAYS)), "--data-dir", "out", "--skip-models"],
        cwd=tmp_path,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"[ticks_job 2/2] {SYMBOL} {DAYS[1]}: ok" in done.stdout

    with ExitStack() as stack:
        try:
            query = stack.enter_context(dagster_webserver(home, tmp_path / "webserver.log"))
        except RuntimeError as exc:
            service_unavailable(f"dagster-webserver did not start: {exc}")
        pages = {job: query(job_runs(job))["pipelineOrError"] for job in ("ticks_job", "features_job", "dataset_job")}
        everything = query(ALL_RUNS)["runsOrError"]["results"]
        ticks, features, dataset = (query(asset(name))["assetNodeOrError"] for name in ("ticks", "features", "training_dataset"))
        tick_partitions = TICK_PARTITIONS.get_num_partitions()

    keys = {f"{day}|{SYMBOL}" for day in DAYS}
    for job, page in pages.items():
        assert page["__typename"] == "Pipeline", page
        tags = [{t["key"]: t["value"] for t in run["tags"]} for run in page["runs"]]
        assert {run["status"] for run in page["runs"]} == {"SUCCESS"}, job
        assert {t["dagster/partition"] for t in tags} == ({"default"} if job == "dataset_job" else keys), job
    # Overview → Timeline groups runs by code location: every run of the demo has one.
    assert len(everything) == 2 * len(DAYS) + 1
    assert all(run["repositoryOrigin"] == LOCATION for run in everything), everything

    tick_runs = {run["runId"] for run in pages["ticks_job"]["runs"]}
    assert ticks["partitionStats"] == {"numMaterialized": len(DAYS), "numPartitions": tick_partitions, "numFailed": 0}
    assert {m["partition"] for m in ticks["assetMaterializations"]} == keys
    store = TickStore(tmp_path / "out" / "ticks")
    for m in ticks["assetMaterializations"]:
        assert m["runId"] in tick_runs  # the history links to a run on ticks_job's page
        numbers = {e["label"]: e["intValue"] for e in m["metadataEntries"] if e["__typename"] == "IntMetadataEntry"}
        day = date.fromisoformat(m["partition"].split("|")[0])
        frame = store.read_day(SYMBOL, day)
        assert numbers == {"rows": len(frame), "first_epoch": frame["epoch"].iloc[0], "last_epoch": frame["epoch"].iloc[-1]}
        start = int(
            TICK_PARTITIONS.get_partitions_def_for_dimension("date").time_window_for_partition_key(str(day)).start.timestamp()
        )
        assert start <= numbers["first_epoch"] < numbers["last_epoch"] < start + int(timedelta(days=1).total_seconds())
    assert features["partitionStats"]["numMaterialized"] == len(DAYS) and features["partitionStats"]["numFailed"] == 0
    assert dataset["partitionStats"] == {"numMaterialized": 1, "numPartitions": 1, "numFailed": 0}
