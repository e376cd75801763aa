"""The Dagster code location: assets, checks, jobs, schedules and resources."""

import os

import dagster as dg

from scalping_assets.assets.backtest import EVALUATION_ASSETS
from scalping_assets.assets.features import (
    dataset_class_balance,
    dataset_finite,
    dataset_splits_disjoint,
    features,
    features_defined_after_warmup,
    labels,
    training_dataset,
)
from scalping_assets.assets.models import MODEL_ASSETS, model_comparison
from scalping_assets.assets.serving import SERVING_ASSETS
from scalping_assets.assets.ticks import ticks
from scalping_assets.checks import tick_checks
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
    daily_labels_schedule,
    daily_ticks_schedule,
    dataset_job,
    evaluation_job,
    features_job,
    labels_job,
    models_job,
    serving_job,
    ticks_job,
)


def build_resources(
    data_dir: str | None = None, seed: int | None = None, deriv_url: str | None = None
) -> dict[str, dg.ConfigurableResource]:
    """Resources of the embedded default deployment: local files, seeded simulator, Deriv from the environment."""
    data_dir = data_dir or os.environ.get("SCALPING_DATA_DIR", "data")
    seed = int(os.environ.get("SCALPING_SEED", "7")) if seed is None else seed
    return {
        "tick_store": TickStoreResource(root=os.path.join(data_dir, "ticks")),
        "simulator": SimulatorResource(seed=seed),
        "deriv": DerivResource(url=deriv_url or ""),
        "feature_store": FrameStoreResource(root=os.path.join(data_dir, "features")),
        "label_store": FrameStoreResource(root=os.path.join(data_dir, "labels")),
        "dataset_store": FolderResource(root=os.path.join(data_dir, "datasets")),
        "report_store": FolderResource(root=os.path.join(data_dir, "reports")),
        "bundle_store": FolderResource(root=os.path.join(data_dir, "bundles")),
        "records": RecordIOManager(root=os.path.join(data_dir, "records")),
        "mlflow_store": MLflowResource(
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{os.path.abspath(os.path.join(data_dir, 'mlflow.db'))}",
            artifact_root=os.path.join(data_dir, "mlartifacts"),
        ),
    }


defs = dg.Definitions(
    assets=[ticks, features, labels, training_dataset, *MODEL_ASSETS, model_comparison, *EVALUATION_ASSETS, *SERVING_ASSETS],
    asset_checks=[tick_checks, features_defined_after_warmup, dataset_finite, dataset_splits_disjoint, dataset_class_balance],
    jobs=[ticks_job, features_job, daily_job, labels_job, dataset_job, models_job, evaluation_job, serving_job],
    schedules=[daily_ticks_schedule, daily_labels_schedule],
    sensors=[champion_promoted_sensor],
    resources=build_resources(),
    # Training uses every core already; steps running side by side would only fight over them.
    executor=dg.in_process_executor,
)
