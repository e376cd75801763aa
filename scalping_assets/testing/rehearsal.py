"""The production stack rehearsed on this machine without Docker, with faults (`make rehearsal`).

    python -m scalping_assets.testing.rehearsal --work-dir data/rehearsal

The processes `deploy/compose.yaml` runs, started natively from the same files and variables
(`deploy/.env.example` names them): `deploy/mlflow/serve.sh` (MLflow on PostgreSQL, basic auth,
proxied artifacts); `dagster code-server`, `dagster-webserver` and `dagster-daemon` with
`deploy/dagster/dagster.yaml` as the instance (PostgreSQL storage, the queued run coordinator) and
`deploy/dagster/workspace.yaml`; `bentoml serve` reading the MLflow server; `scalping collect` against
the local Deriv server. A supervisor restarts whatever dies, as Compose's `restart: unless-stopped`.

The scenario, bounded at every wait:

1. The operator's toggles (GraphQL, as the UI sends them): daily_ticks_schedule and
   champion_promoted_sensor on. The daemon runs the schedule (SCALPING_DAILY_CRON: every minute here)
   for yesterday's partition of the training symbol.
2. Fault: the daemon is killed, and a training run is submitted while it is down (dataset, XGBoost,
   backtest and gate): it waits in the queue and starts once the daemon is back.
3. The gate promotes, champion_promoted_sensor (in the daemon) exports the champion, the service follows
   the registry to it. A client predicts from then on.
4. Faults, one at a time: MLflow killed (the service keeps answering from its loaded bundle), the service
   killed (refused connections while it is down, nothing else), the collector killed (it backfills the
   gap), every PostgreSQL connection of the stack terminated (the next run still succeeds).
5. Audit: every run succeeded and none is left queued; every tick the server sent is stored once; no
   prediction answered 5xx outside the service's own downtime. One row per fault says what happened.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import psycopg2
from dagster._grpc.client import DagsterGrpcClient  # what the webserver and the daemon load a location with

from ..market.store import TickStore
from ..partitions import tick_partition
from ..records import GateRecord, RecordStore
from .fake_deriv import FakeDerivServer, ServerThread
from .server_process import REPO_ROOT, free_port
from .supervisor import Process, Supervisor
from .tick_audit import audit

DEPLOY = REPO_ROOT / "deploy"
BIN = Path(sys.executable).parent
TRAIN_SYMBOL = "SIG_AR1"  # a planted, learnable signal: the gate can promote a champion trained on one day
COLLECTED = ["1HZ100V", "R_100"]  # one-second and two-second feeds, collected live through the faults
LOCATION, REPOSITORY = "scalping_assets", "__repository__"
TRAINED = ["training_dataset", "xgboost_model", "backtest_report", "champion"]
SMALL_XGBOOST = {"max_train_windows": 6_000}
# A third of the day is the test span: the gate's lower bound on the annualised Sharpe ratio needs hours.
SPLIT = {"train": 0.5, "validation": 0.15, "test": 0.35}
ADMIN = "admin"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
SWITCH_TRIES, SWITCH_HOLD_S = 5, 3.0


class RehearsalFailed(RuntimeError):
    """A step of the scenario did not happen in its time; the message names it."""


@dataclass
class FaultOutcome:
    fault: str
    down_s: float  # from the kill to the process serving again (0 for PostgreSQL's connections)
    what: str
    ok: bool  # the stack did what it must under this fault

    def row(self) -> str:
        return f"{self.fault:<24} {self.down_s:>6.1f}  {'ok' if self.ok else 'FAILED':<6}  {self.what}"


@dataclass
class Outcome:
    faults: list[FaultOutcome] = field(default_factory=list)
    runs: dict[str, int] = field(default_factory=dict)  # status -> runs
    run_jobs: list[str] = field(default_factory=list)  # "job status" per run, oldest first
    ticks: dict[str, dict[str, int]] = field(default_factory=dict)
    predictions: dict[str, int] = field(default_factory=dict)  # "200", "5xx in downtime", ...
    served_version: str = ""
    restarts: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def table(self) -> str:
        lines = [f"{'fault':<24} {'down s':>6}  {'':<6}  what happened", *(f.row() for f in self.faults)]
        lines.append(f"runs: {self.runs}  ({'; '.join(self.run_jobs)})")
        lines.append(
            "ticks: "
            + ", ".join(
                f"{s} {r['stored']} stored, {r['lost']} lost, {r['duplicated']} duplicated" for s, r in self.ticks.items()
            )
        )
        lines.append(
            f"predictions: {self.predictions}; served {self.served_version}; restarts {self.restarts}; {self.elapsed_s:.0f} s"
        )
        return "\n".join(lines)


def create_databases(postgres: str, prefix: str) -> dict[str, str]:
    """Fresh databases, as the Compose stack's init script creates them: {role: URL}. `postgres` is a
    URL of the server's maintenance database, with a user that may create databases."""
    names = {role: f"{prefix}_{role}" for role in ("dagster", "mlflow", "mlflow_auth")}
    statements = [f'CREATE DATABASE "{name}"' for name in names.values()]
    _admin(postgres, *statements)
    base = postgres.rsplit("/", 1)[0]
    return {role: f"{base}/{name}" for role, name in names.items()}


def drop_databases(postgres: str, urls: list[str]) -> None:
    _admin(postgres, *(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)' for url in urls))


def terminate_connections(postgres: str, urls: list[str]) -> int:
    """Every connection to these databases ends now (a PostgreSQL restart, a failover); how many."""
    names = [url.rsplit("/", 1)[1] for url in urls]
    (count,) = _admin(
        postgres,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
        args=(names,),
    )
    return int(count)


def _admin(postgres: str, *statements: str, args: tuple = ()) -> tuple:
    """Statements outside a transaction (CREATE DATABASE cannot run in one); the last one's first row."""
    connection = psycopg2.connect(postgres, connect_timeout=10)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement, args or None)
            return cursor.fetchone() if cursor.description else ()
    finally:
        connection.close()


class Stack:
    """The deployment's processes under one supervisor, with the variables Compose gives them."""

    def __init__(self, work: Path, deriv_url: str, seed: int, databases: dict[str, str]) -> None:
        self.work = work
        self.secret = secrets.token_urlsafe(18)  # the MLflow admin's password, made for this run only
        self.db = databases
        self.ports = {name: free_port() for name in ("mlflow", "code", "webserver", "service")}
        home = work / "dagster-home"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEPLOY / "dagster" / "dagster.yaml", home / "dagster.yaml")  # $DAGSTER_HOME/dagster.yaml, as mounted
        self.mlflow_url = f"http://127.0.0.1:{self.ports['mlflow']}"
        self.service_url = f"http://127.0.0.1:{self.ports['service']}"
        self.webserver_url = f"http://127.0.0.1:{self.ports['webserver']}"
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        self.env = {
            "PATH": f"{BIN}:/usr/bin:/bin",
            "HOME": str(work),
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_URL": self.db["dagster"],
            "SCALPING_MAX_CONCURRENT": "2",
            "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
            "DAGSTER_CODE_SERVER_PORT": str(self.ports["code"]),
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_TRACKING_USERNAME": ADMIN,
            "MLFLOW_TRACKING_PASSWORD": self.secret,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "SCALPING_DATA_DIR": str(work / "data"),
            "SCALPING_SEED": str(seed),
            "SCALPING_SYMBOLS": TRAIN_SYMBOL,  # the partitions; the collector is given its own symbols
            "SCALPING_START_DAY": str(yesterday - timedelta(days=1)),
            "SCALPING_DAILY_CRON": "* * * * *",
            "SCALPING_FOLLOW_INTERVAL": "2",
            "SCALPING_WORKERS": "1",
            "SCALPING_SERVICE_URL": self.service_url,
            "DERIV_WS_URL": deriv_url,
        }
        self.supervisor = Supervisor()

    def process(self, name: str, command: list[str], ready: str | Callable[[], bool] | None = None, **env: str) -> Process:
        url, check = (ready, None) if isinstance(ready, str) or ready is None else (None, ready)
        log = self.work / "logs" / f"{name}.log"
        return self.supervisor.add(Process(name, command, {**self.env, **env}, log, ready_url=url, ready_check=check))

    def _code_server_ready(self) -> bool:
        """The code location loaded and listed over gRPC (Compose's health check asks the same)."""
        try:
            DagsterGrpcClient(port=self.ports["code"], host="127.0.0.1").list_repositories()
            return True
        except Exception:  # noqa: BLE001 -- any failure means not yet
            return False

    def start(self, since: int) -> None:
        mlflow = {
            "MLFLOW_BACKEND_STORE_URI": self.db["mlflow"].replace("postgresql://", "postgresql+psycopg2://"),
            "MLFLOW_ARTIFACTS_DESTINATION": str(self.work / "mlflow-artifacts"),
            "MLFLOW_AUTH_DATABASE_URI": self.db["mlflow_auth"].replace("postgresql://", "postgresql+psycopg2://"),
            "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.secret,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": str(self.ports["mlflow"]),
            "MLFLOW_WORKERS": "1",  # two cores: one process restarts in a third of the time of four
        }
        workspace = str(DEPLOY / "dagster" / "workspace.yaml")
        self.process("mlflow", [str(DEPLOY / "mlflow" / "serve.sh")], f"{self.mlflow_url}/health", **mlflow)
        code = ["dagster", "code-server", "start", "-m", "scalping_assets.definitions", "--location-name", LOCATION]
        code_server = self.process(
            "code-server", [*code, "-h", "127.0.0.1", "-p", str(self.ports["code"])], self._code_server_ready
        )
        serve = ["bentoml", "serve", "serving.service:Scalping", "--host", "127.0.0.1", "--port", str(self.ports["service"])]
        self.process("service", serve, f"{self.service_url}/livez")
        collect = ["scalping", "collect", "--symbols", ",".join(COLLECTED), "--since", str(since), "--flush-interval", "1"]
        self.process("collector", [*collect, "--silence-timeout", "5", "--progress-interval", "30"])
        self.supervisor.run()
        # The webserver and the daemon load the location from the code server: after it, as Compose's
        # depends_on (service_healthy) orders them.
        code_server.wait_ready(240)
        webserver = ["dagster-webserver", "-w", workspace, "-h", "127.0.0.1", "-p", str(self.ports["webserver"])]
        self.process("webserver", webserver, f"{self.webserver_url}/server_info")
        self.process("daemon", ["dagster-daemon", "run", "-w", workspace])
        for process in self.supervisor.processes.values():
            process.wait_ready(180)

    # -- the operator's side: the webserver's GraphQL, as the UI sends it -----------------------------

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        answer = httpx.post(f"{self.webserver_url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
        body = answer.json()
        if body.get("errors"):
            raise RehearsalFailed(f"GraphQL: {body['errors']}")
        return body["data"]

    def toggle(self, kind: str, name: str, on: bool) -> None:
        """A schedule's or a sensor's switch in the UI."""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, f"{kind}Name": name}
        if kind == "schedule":
            mutation = "startSchedule(scheduleSelector: $selector)" if on else "stopRunningSchedule(id: $id)"
        else:
            mutation = "startSensor(sensorSelector: $selector)" if on else "stopSensor(id: $id)"
        if on:
            declared, variables = f"$selector: {kind.capitalize()}Selector!", {"selector": selector}
        else:
            declared, variables = "$id: String!", {"id": self._state(kind, selector)["id"]}
        wanted, status = "RUNNING" if on else "STOPPED", ""
        # The daemon writes a schedule's whole state back after each tick: a switch turned while it was
        # ticking is undone. Turned again until it holds for a while, as a person would.
        for _ in range(SWITCH_TRIES):
            self.graphql(f"mutation({declared}) {{ result: {mutation} {{ __typename }} }}", variables)
            time.sleep(SWITCH_HOLD_S)
            status = self._state(kind, selector)["status"]
            if status == wanted:
                return
        raise RehearsalFailed(
            f"{kind} {name} is {status} after the UI's switch was turned {'on' if on else 'off'} {SWITCH_TRIES} times"
        )

    def _state(self, kind: str, selector: dict) -> dict:
        """The instigator state the daemon reads: {"id", "status"}."""
        field_name = "scheduleOrError" if kind == "schedule" else "sensorOrError"
        argument = "scheduleSelector" if kind == "schedule" else "sensorSelector"
        data = self.graphql(
            f"query($selector: {kind.capitalize()}Selector!) {{ found: {field_name}({argument}: $selector) "
            f"{{ __typename ... on {kind.capitalize()} {{ {kind}State {{ id status }} }} ... on PythonError {{ message }} }} }}",
            {"selector": selector},
        )
        if f"{kind}State" not in data["found"]:  # the location did not load, or has no such instigator
            raise RehearsalFailed(f"{kind} {selector[f'{kind}Name']}: {data['found']}")
        return data["found"][f"{kind}State"]

    def add_dataset(self, partition: str) -> None:
        data = self.graphql(
            "mutation($repo: RepositorySelector!, $key: String!) { addDynamicPartition(repositorySelector: $repo, "
            'partitionsDefName: "dataset", partitionKey: $key) { __typename } }',
            {"repo": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}, "key": partition},
        )
        if data["addDynamicPartition"]["__typename"] != "AddDynamicPartitionSuccess":
            raise RehearsalFailed(f"dataset partition {partition}: {data['addDynamicPartition']['__typename']}")

    def submit(self, job: str, partition: str | dg.MultiPartitionKey, ops: dict, assets: list[str] | None = None) -> str:
        """A run launched as the UI's launchpad launches it: queued, then started by the daemon."""
        tags = {"dagster/partition": str(partition)}
        if isinstance(partition, dg.MultiPartitionKey):  # and one tag per dimension, as the launchpad sets them
            tags |= {f"dagster/partition/{dim}": key for dim, key in partition.keys_by_dimension.items()}
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job}
        if assets:
            selector["assetSelection"] = [{"path": [name]} for name in assets]
        data = self.graphql(
            "mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename "
            "... on LaunchRunSuccess { run { runId } } ... on PythonError { message } "
            "... on RunConfigValidationInvalid { errors { message } } } }",
            {
                "params": {
                    "selector": selector,
                    "runConfigData": {"ops": ops},
                    "executionMetadata": {"tags": [{"key": key, "value": value} for key, value in tags.items()]},
                }
            },
        )
        launched = data["launchRun"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise RehearsalFailed(f"{job} {partition}: {launched}")
        return launched["run"]["runId"]


class Predictions:
    """A client predicting all along, every answer kept with its time (status, or 0: no connection)."""

    def __init__(self, url: str, symbol: str, epochs: list[int], quotes: list[float]) -> None:
        self.url, self.body = (
            f"{url}/predict/ticks",
            {"symbol": symbol, "epochs": epochs, "quotes": quotes, "client_id": "rehearsal"},
        )
        self.answers: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="predictions", daemon=True)

    def __enter__(self) -> Predictions:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(0.1):
                try:
                    status = client.post(self.url, json=self.body).status_code
                except httpx.TransportError:
                    status = 0
                self.answers.append((time.monotonic(), status))

    def since(self, t: float) -> Counter:
        return Counter(status for at, status in self.answers if at >= t)


class Rehearsal:
    def __init__(self, work: Path, seed: int = 7, postgres: str = DEFAULT_POSTGRES) -> None:
        self.work, self.seed, self.postgres = work, seed, postgres
        self.outcome = Outcome()
        self.downtime: list[tuple[float, float]] = []  # the service's own (kill, ready again)

    def run(self) -> Outcome:
        started = time.monotonic()
        now = int(time.time())
        fake = FakeDerivServer(seed=self.seed, start=now)
        databases = create_databases(self.postgres, f"rehearsal_{secrets.token_hex(4)}")
        try:
            with ServerThread(fake) as deriv:
                stack = Stack(self.work, deriv.url, self.seed, databases)
                # The harness reads the runs from the same PostgreSQL (the variable deploy/dagster/dagster.yaml names).
                os.environ["DAGSTER_PG_URL"] = databases["dagster"]
                try:
                    stack.start(since=now - 60)
                    self._scenario(stack)
                    self.outcome.restarts = {n: p.starts - 1 for n, p in stack.supervisor.processes.items()}
                    stack.supervisor.stop("collector")  # a clean stop flushes what it holds
                    store = TickStore(Path(stack.env["SCALPING_DATA_DIR"]) / "ticks")
                    self.outcome.ticks = {s: audit(fake, store, s, now - 60) for s in COLLECTED}
                    self._audit_runs(stack)
                finally:
                    stack.supervisor.stop_all()
        finally:
            drop_databases(self.postgres, list(databases.values()))
        self.outcome.elapsed_s = time.monotonic() - started
        return self.outcome

    def _scenario(self, stack: Stack) -> None:
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        instance = dg.DagsterInstance.from_config(stack.env["DAGSTER_HOME"])  # reads the same PostgreSQL
        stack.toggle("schedule", "daily_ticks_schedule", on=True)
        stack.toggle("sensor", "champion_promoted_sensor", on=True)
        daily = self._wait_run(instance, "daily_job", timeout_s=150)
        # Off again: a schedule's run key is unique per tick only, and it ticks every minute here.
        stack.toggle("schedule", "daily_ticks_schedule", on=False)
        if self._finished(instance, daily, 240) != "SUCCESS":
            raise RehearsalFailed(f"the daily run {daily} failed")

        # The daemon dies; a training run submitted meanwhile waits in the queue.
        kill = self._kill(stack, "daemon")
        partition = f"rehearsal-{yesterday}"
        stack.add_dataset(partition)
        dataset = {"symbols": [TRAIN_SYMBOL], "start": str(yesterday), "end": str(yesterday), "split": SPLIT}
        ops = {"training_dataset": {"config": dataset}, "xgboost_model": {"config": SMALL_XGBOOST}}
        training = stack.submit("retrain_job", partition, ops, TRAINED)
        queued = instance.get_run_by_id(training).status.value
        restarted = self._restarted(stack, "daemon", kill)
        started_after = self._left_queue(instance, training, 120) - kill[0]
        status = self._finished(instance, training, 600)
        what = (
            f"the training run submitted meanwhile was {queued}, left the queue {started_after:.0f} s after the kill, "
            f"ended {status}"
        )
        self.outcome.faults.append(FaultOutcome("daemon kill -9", restarted, what, queued == "QUEUED" and status == "SUCCESS"))
        if status != "SUCCESS":
            raise RehearsalFailed(f"training run {training} ended {status}")
        gate = RecordStore(Path(stack.env["SCALPING_DATA_DIR"]) / "records").load(["champion", partition], GateRecord)
        if not gate.promoted:
            raise RehearsalFailed(f"the gate promoted no champion, nothing to export or serve: {gate.message}")

        export = self._wait_run(instance, "serving_job", timeout_s=180)
        if self._finished(instance, export, 300) != "SUCCESS":
            raise RehearsalFailed(f"export run {export} failed")
        self.outcome.served_version = self._served(stack, timeout_s=90)
        window = TickStore(Path(stack.env["SCALPING_DATA_DIR"]) / "ticks").read_day(TRAIN_SYMBOL, yesterday).tail(3_000)
        with Predictions(
            stack.service_url, TRAIN_SYMBOL, window["epoch"].astype(int).tolist(), window["quote"].tolist()
        ) as client:
            time.sleep(3)
            self._mlflow_fault(stack, client)
            self._service_fault(stack, client)
            self._collector_fault(stack)
            self._postgres_fault(stack, instance, client, yesterday)
            time.sleep(2)
        self._judge_predictions(client)

    # -- the faults ---------------------------------------------------------------------------------

    def _mlflow_fault(self, stack: Stack, client: Predictions) -> None:
        kill = self._kill(stack, "mlflow")
        time.sleep(5)  # the service's registry follower finds it gone meanwhile
        back = self._restarted(stack, "mlflow", kill)
        down = client.since(kill[0])
        answered = down.pop(200, 0)
        what = f"the service answered {answered} predictions 200 while MLflow was down; other answers {dict(down) or 'none'}"
        self.outcome.faults.append(FaultOutcome("MLflow server kill -9", back, what, answered > 0 and not down))

    def _service_fault(self, stack: Stack, client: Predictions) -> None:
        kill = self._kill(stack, "service")
        self._restarted(stack, "service", kill)
        version = self._served(stack, timeout_s=120)
        back = time.monotonic()
        self.downtime.append((kill[0], back))
        what = f"answers until it served {version} again: {dict(client.since(kill[0]))} (0: connection refused)"
        # What it answered meanwhile is judged with every other prediction (`Outcome.predictions`).
        self.outcome.faults.append(FaultOutcome("service kill -9", back - kill[0], what, version == self.outcome.served_version))

    def _collector_fault(self, stack: Stack) -> None:
        kill = self._kill(stack, "collector")
        back = self._restarted(stack, "collector", kill)
        time.sleep(6)  # it reconnects and backfills the gap from the server's history
        what = "restarted; it backfills the gap from the server's history (judged by the tick audit)"
        self.outcome.faults.append(FaultOutcome("collector kill -9", back, what, True))

    def _postgres_fault(self, stack: Stack, instance: dg.DagsterInstance, client: Predictions, yesterday: date) -> None:
        at = time.monotonic()
        ended = terminate_connections(self.postgres, list(stack.db.values()))
        run = stack.submit("ticks_job", tick_partition(str(yesterday - timedelta(days=1)), TRAIN_SYMBOL), {})
        status = self._finished(instance, run, 240)
        search = httpx.get(
            f"{stack.mlflow_url}/api/2.0/mlflow/registered-models/search", auth=(ADMIN, stack.secret), timeout=30
        ).status_code
        alive = {n: p.alive for n, p in stack.supervisor.processes.items()}
        what = (
            f"{ended} connections terminated; the next run {status}; MLflow search {search}; "
            f"processes alive {sum(alive.values())}/{len(alive)}; predictions since {dict(client.since(at))}"
        )
        ok = status == "SUCCESS" and search == 200 and all(alive.values())
        self.outcome.faults.append(FaultOutcome("PostgreSQL connections", 0.0, what, ok))

    # -- waiting and judging ------------------------------------------------------------------------

    @staticmethod
    def _kill(stack: Stack, name: str) -> tuple[float, int]:
        """kill -9 `name`; (when, its starts so far): what `_restarted` waits from."""
        starts = stack.supervisor.processes[name].starts
        stack.supervisor.kill9(name)
        return time.monotonic(), starts

    @staticmethod
    def _restarted(stack: Stack, name: str, kill: tuple[float, int], timeout_s: float = 180) -> float:
        """Seconds from the kill until the supervisor's next `name` serves."""
        killed, starts = kill
        process = stack.supervisor.processes[name]
        while process.starts == starts or not process.alive:
            if time.monotonic() - killed > timeout_s:
                raise RehearsalFailed(f"{name} was not restarted within {timeout_s:.0f} s")
            time.sleep(0.2)
        process.wait_ready(timeout_s)
        return time.monotonic() - killed

    def _wait_run(self, instance: dg.DagsterInstance, job: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runs = instance.get_runs(dg.RunsFilter(job_name=job), limit=1)
            if runs:
                return runs[0].run_id
            time.sleep(1)
        raise RehearsalFailed(f"no {job} run was requested within {timeout_s:.0f} s (is the daemon running it?)")

    def _left_queue(self, instance: dg.DagsterInstance, run_id: str, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if instance.get_run_by_id(run_id).status != dg.DagsterRunStatus.QUEUED:
                return time.monotonic()
            time.sleep(0.5)
        raise RehearsalFailed(f"run {run_id} still queued {timeout_s:.0f} s after the daemon was killed")

    def _finished(self, instance: dg.DagsterInstance, run_id: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = instance.get_run_by_id(run_id).status.value
            if status in TERMINAL:
                return status
            time.sleep(1)
        raise RehearsalFailed(f"run {run_id} did not end within {timeout_s:.0f} s")

    def _served(self, stack: Stack, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        info = {}
        while time.monotonic() < deadline:
            try:
                info = httpx.post(f"{stack.service_url}/info", json={}, timeout=5).json()
                champion = info.get("models", {}).get("champion")
                if champion:
                    return f"{champion['registered_model']} v{champion['version']}"
            except (httpx.TransportError, json.JSONDecodeError):
                pass
            time.sleep(1)
        raise RehearsalFailed(f"the service serves no champion after {timeout_s:.0f} s: {info.get('problems')}")

    def _judge_predictions(self, client: Predictions) -> None:
        counts: Counter = Counter()
        for at, status in client.answers:
            down = any(start <= at <= end for start, end in self.downtime)
            kind = "200" if status == 200 else ("refused" if status == 0 else f"{status // 100}xx")
            counts[f"{kind}{' in downtime' if down and status != 200 else ''}"] += 1
        self.outcome.predictions = dict(counts)

    def _audit_runs(self, stack: Stack) -> None:
        instance = dg.DagsterInstance.from_config(stack.env["DAGSTER_HOME"])
        runs = list(reversed(instance.get_runs()))
        self.outcome.runs = dict(Counter(run.status.value for run in runs))
        self.outcome.run_jobs = [f"{run.job_name} {run.status.value}" for run in runs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("data/rehearsal"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="a URL of the server's maintenance database (%(default)s)")
    args = parser.parse_args(argv)
    shutil.rmtree(args.work_dir, ignore_errors=True)
    outcome = Rehearsal(args.work_dir.resolve(), args.seed, args.postgres).run()
    print(outcome.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
