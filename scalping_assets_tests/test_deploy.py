"""The deployment files under deploy/, checked without Docker or a cluster: the Kubernetes manifests
against the API's schemas, compose.yaml against the Compose spec (both offline, with every network
connection refused), and the mistakes a schema cannot see: a variable .env.example does not name, a
secret with a value, a variable no process reads, an alert on a metric the service does not export,
Kubernetes manifests that drifted from compose.yaml."""

from __future__ import annotations

import inspect
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow.environment_variables
import pytest
import yaml
from dagster import DagsterInstance
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

import serving.metrics
from scalping_assets.settings import Settings
from scalping_assets.testing.bentoml_server import bentoml_server
from scalping_assets.trading.paper import PaperMetrics

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
# The oldest Kubernetes release the manifests must apply to (kubernetes-validate bundles its schemas).
KUBERNETES_VERSION = "1.33.0"
# Services that run the project's or the prediction service's image, with the processes' settings.
PROJECT_SERVICES = ("mlflow", "code-server", "dagster-webserver", "dagster-daemon", "service", "collector", "paper", "evidently")
# compose service -> the Kubernetes Deployment running the same process (the code server: the Helm chart).
K8S_DEPLOYMENTS = {
    "mlflow": "mlflow",
    "service": "scalping-service",
    "collector": "scalping-collector",
    "paper": "scalping-paper",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|WEBHOOK")

# Run a module's command line with every connection refused: whatever it validates against must be
# bundled, not fetched.
OFFLINE = """
import runpy, socket, sys
def refuse(*args, **kwargs):
    raise OSError("network access during an offline validation")
socket.socket.connect = socket.socket.connect_ex = socket.create_connection = socket.getaddrinfo = refuse
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def offline(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", OFFLINE, module, *args], capture_output=True, text=True, timeout=120)


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())  # merge keys (<<) resolved


def env_example() -> dict[str, str]:
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def manifests() -> list[tuple[Path, dict]]:
    return [
        (path, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "dagster-values.yaml"  # Helm values, not a manifest
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def helm_values() -> dict:
    return yaml.safe_load((K8S / "dagster-values.yaml").read_text())


def deployment(name: str) -> dict:
    (found,) = [doc for _, doc in manifests() if doc["kind"] == "Deployment" and doc["metadata"]["name"] == name]
    return found


def env_names(container: dict) -> set[str]:
    """Every variable a container gets: `env` and the keys of the ConfigMaps and Secrets in `envFrom`."""
    sources = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in manifests() if doc["kind"] in ("ConfigMap", "Secret")}
    names = {item["name"] for item in container.get("env", [])}
    for source in container.get("envFrom", []):
        kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
        doc = sources[kind, ref["name"]]
        names |= set(doc.get("data") or doc.get("stringData") or {})
    return names


def variables_read() -> set[str]:
    """The variables the code reads: Settings' aliases, MLflow's own, the deploy scripts' and configs'."""
    names = {alias for field in Settings.model_fields.values() for alias in field.validation_alias.choices if alias.isupper()}
    names |= {v.name for v in vars(mlflow.environment_variables).values() if hasattr(v, "name") and hasattr(v, "get")}
    names |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", (DEPLOY / "mlflow" / "serve.sh").read_text()))
    for config in ("dagster.yaml", "workspace.yaml"):
        text = (DEPLOY / "dagster" / config).read_text()
        names |= set(re.findall(r"\benv: ([A-Z][A-Z0-9_]*)", text)) | set(re.findall(r"_env: ([A-Z][A-Z0-9_]*)", text))
    if "DAGSTER_HOME" in inspect.getsource(DagsterInstance.get):  # Dagster's own: where dagster.yaml is
        names.add("DAGSTER_HOME")
    return names


# -- schemas ---------------------------------------------------------------------------------------


def test_kubernetes_manifests_are_valid_offline():
    files = [str(path) for path in sorted(K8S.glob("*.yaml")) if path.name != "dagster-values.yaml"]
    result = offline("kubernetes_validate", "--strict", "--kubernetes-version", KUBERNETES_VERSION, *files)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.findall(r"passed for resource (\S+)", result.stdout + result.stderr)
    assert len(passed) == len(manifests()) >= 10, result.stdout + result.stderr
    kinds = {doc["kind"] for _, doc in manifests()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "Secret", "ConfigMap", "PersistentVolumeClaim"} <= kinds


def test_compose_file_is_valid_offline():
    result = offline("check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validation done" in result.stdout


def test_the_offline_guard_refuses_the_network():
    """What makes the two validations above offline: a schema that would have to be fetched fails."""
    result = offline(
        "check_jsonschema",
        "--schemafile",
        "https://json.schemastore.org/github-workflow.json",
        "--no-cache",
        str(DEPLOY / "compose.yaml"),
    )
    assert result.returncode != 0
    assert "network access during an offline validation" in result.stdout + result.stderr


# -- variables and secrets -------------------------------------------------------------------------


def test_env_example_names_exactly_the_variables_compose_uses():
    text = (DEPLOY / "compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    used |= {secret["environment"] for secret in compose()["secrets"].values() if "environment" in secret}
    named = set(env_example())
    assert not used - named, f"used by compose.yaml, missing from .env.example: {sorted(used - named)}"
    assert not named - used, f"in .env.example, used nowhere in compose.yaml: {sorted(named - used)}"


def test_no_secret_has_a_value():
    secret_fields = {
        alias
        for field in Settings.model_fields.values()
        if "SecretStr" in str(field.annotation)
        for alias in field.validation_alias.choices
        if alias.isupper()
    }
    example = env_example()
    secrets = {name for name in example if SECRET_NAME.search(name) or name in secret_fields}
    assert {"POSTGRES_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "SCALPING_API_KEY"} <= secrets
    assert {name: example[name] for name in secrets if example[name].strip()} == {}
    # compose.yaml gives no secret a default: each is required (:?) or empty when unset (:-).
    defaults = re.findall(r"\$\{([A-Z][A-Z0-9_]*):?-([^}]+)\}", (DEPLOY / "compose.yaml").read_text())
    assert [name for name, default in defaults if name in secrets] == []
    for path, doc in manifests():
        if doc["kind"] == "Secret":
            assert {k: v for k, v in doc["stringData"].items() if v} == {}, f"{path.name}: {doc['metadata']['name']}"


def test_every_project_variable_compose_and_kubernetes_pass_is_read():
    read = variables_read()
    passed = {
        (service, name)
        for service, spec in compose()["services"].items()
        if service in PROJECT_SERVICES
        for name in spec.get("environment", {})
    }
    passed |= {
        (f"k8s {doc['metadata']['name']}", name)
        for _, doc in manifests()
        if doc["kind"] in ("ConfigMap", "Secret")
        for name in doc.get("data") or doc.get("stringData")
    }
    unread = sorted(
        (where, name) for where, name in passed if name.startswith(("SCALPING_", "MLFLOW_", "DAGSTER_")) and name not in read
    )
    assert unread == []
    assert {name for _, name in passed} >= {"SCALPING_DATA_DIR", "MLFLOW_TRACKING_URI", "DAGSTER_PG_URL"}


# -- alert rules -----------------------------------------------------------------------------------

PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "histogram_quantile", "by", "without",
    "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "bool", "offset", "absent",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: what is left without strings, label matchers, label lists,
    ranges, numbers and the language's own words."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    return {word for word in re.findall(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr) if word not in PROMQL_WORDS}


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def series(families) -> set[str]:
    """The series names of metric families (a labelled metric has no sample before its first use)."""
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> set[str]:
    """What Prometheus can scrape: a real `bentoml serve` of the service (BentoML's request metrics, after
    a few requests) and the service's and the paper trader's own metric objects."""
    folder = tmp_path_factory.mktemp("service")
    env = {"SCALPING_DATA_DIR": str(folder), "SCALPING_WORKERS": "1", "SCALPING_FOLLOW_INTERVAL": "0", "SCALPING_API_KEY": ""}
    env |= {"MLFLOW_TRACKING_URI": ""}  # a store of its own under the folder, whatever this shell points at
    with bentoml_server(env, folder / "server.log") as url:
        assert httpx.get(f"{url}/readyz").status_code == 503  # no champion: readiness says so
        httpx.post(f"{url}/info", json={})
        scrape = httpx.get(f"{url}/metrics").text
    names = {sample.name for family in text_string_to_metric_families(scrape) for sample in family.samples}
    names |= series(f for m in vars(serving.metrics).values() if isinstance(m, MetricWrapperBase) for f in m.describe())
    names |= series(PaperMetrics().registry.collect())
    return names | {"up"}  # Prometheus's own series per target


def test_alert_rules_name_only_metrics_that_are_exported(exported):
    assert {"bentoml_service_request_total", "bentoml_service_request_duration_seconds_bucket"} <= exported
    assert {"scalping_prediction_errors_total", "scalping_predictions_total"} <= exported
    rules = [
        rule for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"] for rule in group["rules"]
    ]
    named = {rule["alert"]: metric_names(rule["expr"]) for rule in rules}
    assert all(named.values()), f"a rule names no metric: {named}"
    assert {alert: sorted(names - exported) for alert, names in named.items() if names - exported} == {}
    used = set().union(*named.values())
    assert {"up", "bentoml_service_request_total", "scalping_prediction_errors_total"} <= used  # down, errors, readiness


def test_alert_and_scrape_jobs_match_compose():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert set(re.findall(r'job="([^"]+)"', alerts)) <= set(jobs)
    services = compose()["services"]
    for job in jobs.values():
        for target in job["static_configs"][0]["targets"]:
            host, port = target.split(":")
            assert host in services, f"{job['job_name']} scrapes {host}, not a compose service"
    assert jobs["scalping-service"]["static_configs"][0]["targets"] == ["service:3000"]  # BentoML's port
    key_file = jobs["scalping-service"]["http_headers"]["X-API-Key"]["files"][0]
    assert key_file == "/run/secrets/scalping_api_key" and "scalping_api_key" in services["prometheus"]["secrets"]
    paper = shlex.split(services["paper"]["command"])
    port = jobs["scalping-paper"]["static_configs"][0]["targets"][0].split(":")[1]
    assert paper[paper.index("--metrics-port") + 1] == port
    assert paper[paper.index("--metrics-host") + 1] == "0.0.0.0"  # loopback, the default, is unreachable for Prometheus


# -- Kubernetes against compose --------------------------------------------------------------------


def argv(command: str | list[str]) -> list[str]:
    """A compose command with a required ${VAR:?...} as Kubernetes writes it, $(VAR), and optional extras dropped."""
    words = shlex.split(command) if isinstance(command, str) else command
    words = [re.sub(r"\$\{([A-Z0-9_]+):\?[^}]*\}", r"$(\1)", word) for word in words]
    return [word for word in words if not re.fullmatch(r"\$\{[A-Z0-9_]+:-\}", word)]


def required(service: dict) -> set[str]:
    """The variables compose always sets for a service (not an optional ${VAR:-}, empty by default)."""
    return {name for name, value in service["environment"].items() if not re.fullmatch(r"\$\{[A-Z0-9_]+:-\}", str(value))}


def test_kubernetes_runs_what_compose_runs():
    services, example, values = compose()["services"], env_example(), helm_values()
    (code,) = values["dagster-user-deployments"]["deployments"]
    project_image = f"{code['image']['repository']}:{code['image']['tag']}"
    assert project_image.rsplit("/", 1)[-1] == example["SCALPING_IMAGE"]
    # The code server: the same module, port, settings and data folder.
    compose_code = services["code-server"]
    assert code["codeServerArgs"] == compose_code["command"][3:5]
    assert (
        str(code["port"])
        == compose_code["command"][-1]
        == services["dagster-webserver"]["environment"]["DAGSTER_CODE_SERVER_PORT"]
    )
    helm_env = env_names(
        {"envFrom": [{"configMapRef": c} for c in code["envConfigMaps"]] + [{"secretRef": s} for s in code["envSecrets"]]}
    )
    missing = {name for name in required(compose_code) if not name.startswith("DAGSTER_")} - helm_env  # the chart's
    assert missing == set(), f"the code server gets these in compose.yaml, not from the Helm values: {sorted(missing)}"
    assert [m["mountPath"] for m in code["volumeMounts"]] == ["/data"] == [compose_code["environment"]["SCALPING_DATA_DIR"]]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    for service, name in K8S_DEPLOYMENTS.items():
        (container,) = deployment(name)["spec"]["template"]["spec"]["containers"]
        image = example["SCALPING_SERVICE_IMAGE"] if service == "service" else example["SCALPING_IMAGE"]
        assert container["image"].rsplit("/", 1)[-1] == image, name
        if service != "service":  # the Bento's own entrypoint serves it
            assert container["command"] == argv(services[service]["command"]), name
        missing = required(services[service]) - env_names(container)
        assert missing == set(), f"{name} lacks what compose.yaml gives {service}: {sorted(missing)}"
        if service != "mlflow":
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/data" in mounts and "data:/data" in services[service]["volumes"], name


def test_one_collector_and_one_paper_trader():
    for name in ("scalping-collector", "scalping-paper"):
        spec = deployment(name)["spec"]
        assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}, name
    for service in ("collector", "paper"):
        assert "deploy" not in compose()["services"][service]  # no replicas: one container each


def test_service_probes_and_autoscaling():
    (container,) = deployment("scalping-service")["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (hpa,) = [doc for _, doc in manifests() if doc["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "scalping-service"
    assert container["resources"]["requests"]["cpu"]  # utilization is measured against the request
    healthcheck = " ".join(compose()["services"]["service"]["healthcheck"]["test"])
    assert "livez" in healthcheck and "readyz" in healthcheck
