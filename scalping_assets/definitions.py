"""The Dagster code location: assets, checks, jobs, schedules and resources."""

from typing import get_type_hints

import dagster as dg

from scalping_assets.assets.ab import AB_ASSETS, AB_JOBS, AB_SCHEDULES
from scalping_assets.assets.backtest import EVALUATION_ASSETS
from scalping_assets.assets.canary import CANARY_SENSORS
from scalping_assets.assets.config import checked_in_process_executor
from scalping_assets.assets.drift import DRIFT_ASSETS
from scalping_assets.assets.features import (
    dataset_class_balance,
    dataset_finite,
    dataset_splits_disjoint,
    features,
    features_defined_after_warmup,
    training_dataset,
)
from scalping_assets.assets.models import MODEL_ASSETS, model_comparison
from scalping_assets.assets.monitoring import MONITORING_ASSETS, MONITORING_CHECKS
from scalping_assets.assets.serving import SERVING_ASSETS
from scalping_assets.assets.ticks import ticks
from scalping_assets.assets.trading import TRADING_ASSETS, TRADING_JOBS, TRADING_SCHEDULES, PaperJournalResource
from scalping_assets.automation import MONITORING_JOBS, MONITORING_SCHEDULES, MONITORING_SENSORS
from scalping_assets.checks import tick_checks
from scalping_assets.collected import collected_days_sensor
from scalping_assets.resources import (
    DerivResource,
    FolderResource,
    FrameStoreResource,
    MLflowResource,
    RecordIOManager,
    SimulatorResource,
    TickStoreResource,
)
from scalping_assets.schedules import (
    champion_promoted_sensor,
    daily_job,
    daily_ticks_schedule,
    dataset_job,
    evaluation_job,
    features_job,
    models_job,
    serving_job,
    ticks_job,
)
from scalping_assets.settings import Settings
from scalping_assets.trading.journal import default_url


def _from(settings: Settings, field: str, value):
    """`value`, or the environment variable it came from: the UI then shows where it was set."""
    name = settings.env_var(field)
    if name is None:
        return value
    return dg.EnvVar.int(name) if isinstance(value, int) else dg.EnvVar(name)


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """Resources of a deployment: files under the data folder, the seeded simulator, Deriv and MLflow."""
    folder = lambda name: str(settings.folder(name))  # noqa: E731
    return {
        "tick_store": TickStoreResource(root=folder("ticks")),
        "simulator": SimulatorResource(seed=_from(settings, "seed", settings.seed)),
        "deriv": DerivResource(url=_from(settings, "deriv_url", settings.deriv_url)),
        "feature_store": FrameStoreResource(root=folder("features")),
        "dataset_store": FolderResource(root=folder("datasets")),
        "report_store": FolderResource(root=folder("reports")),
        "bundle_store": FolderResource(root=folder("bundles")),
        "records": RecordIOManager(root=folder("records")),
        "monitoring_store": FolderResource(root=folder("monitoring")),
        # The URL may hold a password: from the variable, which the UI names without showing it.
        "paper_journal": PaperJournalResource(
            url=dg.EnvVar("SCALPING_PAPER_DB") if settings.paper_db.get_secret_value() else default_url(settings.data_dir),
            bundle_cache=str(settings.bundle_cache_dir()),
        ),
        "mlflow_store": MLflowResource(
            tracking_uri=_from(settings, "tracking_uri", settings.mlflow_uri()),
            artifact_root=folder("mlartifacts"),
            ui_url=_from(settings, "mlflow_ui_url", settings.mlflow_ui_url),
        ),
    }


def asset_configs(assets: list[dg.AssetsDefinition]) -> dict[str, type[dg.Config]]:
    """{asset: its config class}, read from each asset function's `config` parameter."""
    hints = {a.op.name: get_type_hints(a.op.compute_fn.decorated_fn) for a in assets}
    return {name: h["config"] for name, h in hints.items() if isinstance(h.get("config"), type)}


ASSETS = [
    ticks,
    features,
    training_dataset,
    *MODEL_ASSETS,
    model_comparison,
    *EVALUATION_ASSETS,
    *SERVING_ASSETS,
    *MONITORING_ASSETS,
    *DRIFT_ASSETS,
    *TRADING_ASSETS,
    *AB_ASSETS,
]

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=[
        tick_checks,
        features_defined_after_warmup,
        dataset_finite,
        dataset_splits_disjoint,
        dataset_class_balance,
        *MONITORING_CHECKS,
    ],
    jobs=[
        ticks_job,
        features_job,
        daily_job,
        dataset_job,
        models_job,
        evaluation_job,
        serving_job,
        *MONITORING_JOBS,
        *TRADING_JOBS,
        *AB_JOBS,
    ],
    schedules=[daily_ticks_schedule, *MONITORING_SCHEDULES, *TRADING_SCHEDULES, *AB_SCHEDULES],
    sensors=[champion_promoted_sensor, collected_days_sensor, *MONITORING_SENSORS, *CANARY_SENSORS],
    resources=build_resources(Settings()),
    # Training uses every core already; steps running side by side would only fight over them.
    # A run whose config breaks a constraint is refused before its first step.
    executor=checked_in_process_executor(asset_configs(ASSETS)),
)
