"""Model assets: one per model family, trained on `training_dataset` and tracked in MLflow, and a
comparison of all candidates on the same test rows."""

from pathlib import Path
from typing import Literal

import dagster as dg
import matplotlib.pyplot as plt
import numpy as np
from pydantic import Field

from scalping_assets.assets.display import rounded, table
from scalping_assets.features.dataset import Dataset, load_walk_forward
from scalping_assets.models.config import MODEL_KINDS, PROFILES, TrainConfig, profile_config
from scalping_assets.models.ensemble import ensemble_fit_predict, train_ensemble
from scalping_assets.models.families import family
from scalping_assets.models.pipeline import RAW_PREDICTIONS_ARTIFACT, Candidate, load_trained, train_candidate
from scalping_assets.models.walk_forward import (
    FitPredict,
    WalkForwardResult,
    log_walk_forward,
    model_fit_predict,
    walk_forward,
    walk_forward_png,
)
from scalping_assets.partitions import DATASETS
from scalping_assets.plotting import figure_png, markdown_image
from scalping_assets.records import CandidateRecord, DatasetRecord, ModelRecord, WalkForwardRecord
from scalping_assets.resources import MLflowResource

HEADLINE = ("accuracy", "log_loss", "brier", "f1_UP", "f1_DOWN")


class ModelConfig(dg.Config):
    profile: Literal[PROFILES] = Field(default="demo", description="demo: minutes on a laptop; full: the roadmap's sizes")
    seeds: list[int] = Field(
        default_factory=lambda: [0], min_length=1, description="one training per seed (the full profile: >= 3)"
    )
    epochs: int | None = Field(default=None, ge=1, description="override of the profile's epochs")
    max_train_windows: int | None = Field(default=None, ge=1, description="override of the profile's training sample")
    walk_forward: bool = Field(default=False, description="also refit and score on the dataset's walk-forward folds")


def candidate_record(c: Candidate) -> CandidateRecord:
    return CandidateRecord(
        name=c.name,
        kind=c.kind,
        run_id=c.run_id,
        version=c.version,
        model_uri=c.model_uri,
        registered_model=c.registered_name,
        config=c.config,
        metrics=c.metrics,
        edge=c.edge,
    )


def _model_output(
    model: str, candidates: list[Candidate], tracker, profile: str, dataset: Dataset, walks: list[WalkForwardResult]
) -> dg.MaterializeResult:
    """The asset's record, and the same for people to read."""
    record = ModelRecord(
        model=model,
        profile=profile,
        dataset_fingerprint=dataset.meta.fingerprint,
        candidates=[candidate_record(c) for c in candidates],
        walk_forward=[WalkForwardRecord(folds=w.records(), aggregate=w.aggregate()) for w in walks],
    )
    metadata = _candidate_metadata(candidates, tracker, profile, dataset)
    if walks:
        metadata |= _walk_forward_metadata(record.walk_forward, walks[0])
    return dg.MaterializeResult(value=record, metadata=metadata)


def _candidate_metadata(candidates: list[Candidate], tracker, profile: str, dataset: Dataset) -> dict:
    summary = [
        {
            "candidate": c.name,
            "seed": c.config.get("seed", 0),
            **{k: rounded(float(c.metrics[k]), 4) for k in HEADLINE},
            "edge_p_value": rounded(float(c.edge["p_value"]), 4),
            "wins_over_majority": int(c.edge["wins_over_majority"]),
            "losses_to_majority": int(c.edge["losses_to_majority"]),
            "version": c.version,
            "run_id": c.run_id,
        }
        for c in candidates
    ]
    accuracy = [c.metrics["accuracy"] for c in candidates]
    # URL metadata: a link the UI opens in a new tab, to the page MLflow renders the run's plots on.
    links = {f"mlflow_run_{c.name}": dg.MetadataValue.url(tracker.run_url(c.run_id)) for c in candidates}
    return {
        "test_accuracy_mean": dg.MetadataValue.float(float(np.mean(accuracy))),
        "test_accuracy_std": dg.MetadataValue.float(float(np.std(accuracy))),
        "majority_accuracy": dg.MetadataValue.float(candidates[0].edge["majority_accuracy"]),
        "edge_p_value": dg.MetadataValue.float(float(max(c.edge["p_value"] for c in candidates))),
        "registered_model": dg.MetadataValue.text(
            f"{candidates[0].registered_name} v{', v'.join(c.version for c in candidates)}"
        ),
        "mlflow_model": dg.MetadataValue.url(tracker.registered_model_url(candidates[0].registered_name)),
        **links,
        "candidates": table(summary),
        "profile": dg.MetadataValue.text(profile),
        "dataset_fingerprint": dg.MetadataValue.text(dataset.meta.fingerprint),
    }


def _model_asset(kind: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{kind}_model",
        partitions_def=DATASETS,
        group_name="models",
        io_manager_key="records",
        kinds={family(kind).flavor, "mlflow"},
        description=f"{kind} classifier trained per seed, each an MLflow run and a registered model version.",
    )
    def model_asset(
        context: dg.AssetExecutionContext, config: ModelConfig, mlflow_store: MLflowResource, training_dataset: DatasetRecord
    ):
        dataset = Dataset.load(training_dataset.path)
        tracker = mlflow_store.tracker()
        parent = tracker.parent_run_id(context.run.run_id, f"dagster {context.run.run_id[:8]}")
        overrides = {
            k: v for k, v in (("epochs", config.epochs), ("max_train_windows", config.max_train_windows)) if v is not None
        }
        candidates = []
        for seed in config.seeds:
            train_config = profile_config(config.profile, kind, seed, **overrides)

            def progress(log, seed=seed, epochs=train_config.epochs):
                context.log.info(
                    f"{kind} seed {seed} epoch {log.epoch}/{epochs}: train loss {log.train_loss:.4f}, "
                    f"val loss {log.val_loss:.4f}, val accuracy {log.val_accuracy:.4f} ({log.samples_per_second:,.0f} windows/s)"
                )

            candidate = train_candidate(
                dataset, train_config, tracker, parent, progress, context.partition_key, training_dataset.path
            )
            context.log.info(f"{candidate.name}: test accuracy {candidate.metrics['accuracy']:.4f}, edge {candidate.edge}")
            candidates.append(candidate)
        walks = []
        if config.walk_forward:
            walks = [
                _walk_forward(
                    context,
                    training_dataset,
                    tracker,
                    parent,
                    c.name,
                    kind,
                    model_fit_predict(TrainConfig(**c.config)),
                )
                for c in candidates
            ]
        return _model_output(kind, candidates, tracker, config.profile, dataset, walks)

    return model_asset


def _walk_forward(
    context: dg.AssetExecutionContext,
    training_dataset: DatasetRecord,
    tracker,
    parent: str,
    name: str,
    kind: str,
    fit_predict: FitPredict,
) -> WalkForwardResult:
    try:
        folds = load_walk_forward(Path(training_dataset.path))
    except FileNotFoundError as exc:
        raise dg.Failure(str(exc)) from exc

    def announce(k: int, fold: Dataset) -> None:
        context.log.info(f"{name} walk-forward fold {k}/{len(folds)}: {fold.meta.rows['train']:,} training rows")

    result = walk_forward(folds, fit_predict, announce)
    log_walk_forward(tracker, name, result, parent, {"model_type": kind, "dataset_fingerprint": folds[-1].meta.fingerprint})
    summary = result.aggregate()
    context.log.info(
        f"{name} walk-forward: accuracy {summary['accuracy_mean']:.4f} ± {summary['accuracy_std']:.4f}, "
        f"excess over majority {summary['excess_accuracy_mean']:+.4f}, combined p {summary['combined_p_value']:.3g}"
    )
    return result


def _walk_forward_metadata(walks: list[WalkForwardRecord], first: WalkForwardResult) -> dict:
    aggregates = [w.aggregate for w in walks]
    return {
        "walk_forward_accuracy_mean": dg.MetadataValue.float(float(np.mean([a["accuracy_mean"] for a in aggregates]))),
        "walk_forward_excess_accuracy": dg.MetadataValue.float(float(np.mean([a["excess_accuracy_mean"] for a in aggregates]))),
        "walk_forward": dg.MetadataValue.json([w.model_dump() for w in walks]),
        "walk_forward_chart": dg.MetadataValue.md(
            markdown_image(walk_forward_png(first, "walk-forward, first seed"), "walk-forward")
        ),
    }


BASE_MODEL_ASSETS = [_model_asset(kind) for kind in MODEL_KINDS]


class EnsembleConfig(dg.Config):
    folds: int = Field(default=2, ge=2, description="time blocks of the training span for out-of-fold predictions")
    max_oof_windows: int | None = Field(
        default=None, ge=1, description="held-out windows per block the stack is fitted on (a seeded sample); empty: all"
    )
    walk_forward: bool = Field(default=False, description="also refit bases and stack on the dataset's walk-forward folds")


def model_ins(assets: list[dg.AssetsDefinition], optional: bool) -> dict[str, dg.AssetIn]:
    """The records of model assets as inputs; optional ones are None until their asset is materialized."""
    return {a.key.path[-1]: dg.AssetIn(key=a.key, metadata={"optional": optional}) for a in assets}


@dg.asset(
    ins={"training_dataset": dg.AssetIn(), **model_ins(BASE_MODEL_ASSETS, optional=False)},
    partitions_def=DATASETS,
    group_name="models",
    io_manager_key="records",
    kinds={"sklearn", "mlflow"},
    description="Logistic-regression stack over the base models (first seeds), fitted on their out-of-fold predictions only.",
)
def ensemble_model(
    context: dg.AssetExecutionContext,
    config: EnsembleConfig,
    mlflow_store: MLflowResource,
    training_dataset: DatasetRecord,
    **base_models: ModelRecord,
) -> dg.MaterializeResult:
    dataset = Dataset.load(training_dataset.path)
    tracker = mlflow_store.tracker()
    records = [base_models[a.key.path[-1]] for a in BASE_MODEL_ASSETS]
    firsts = [record.candidates[0] for record in records]
    bases = [load_trained(tracker, TrainConfig(**c.config), c.model_uri) for c in firsts]
    logged = _logged_predictions(context, tracker, records, dataset)
    parent = tracker.parent_run_id(context.run.run_id, f"dagster {context.run.run_id[:8]}")
    candidate = train_ensemble(
        dataset,
        bases,
        tracker,
        parent,
        config.folds,
        on_fold=lambda i, c: context.log.info(f"fold {i + 1}/{config.folds}: fitting {c.kind} for out-of-fold predictions"),
        dataset_name=context.partition_key,
        dataset_source=training_dataset.path,
        max_oof_windows=config.max_oof_windows,
        logged=logged,
    )
    context.log.info(f"ensemble: test accuracy {candidate.metrics['accuracy']:.4f}, edge {candidate.edge}")
    walks = []
    if config.walk_forward:
        fit_predict = ensemble_fit_predict([b.config for b in bases], config.folds, config.max_oof_windows)
        walks = [_walk_forward(context, training_dataset, tracker, parent, "ensemble", "ensemble", fit_predict)]
    return _model_output("ensemble", [candidate], tracker, "stack", dataset, walks)


def _logged_predictions(
    context: dg.AssetExecutionContext, tracker, records: list[ModelRecord], dataset: Dataset
) -> list[dict[str, np.ndarray]] | None:
    """Each base's own predictions of `dataset`'s validation and test windows, as its training run logged
    them; None (the stack predicts them) when a base was trained on another dataset or its run predates
    the artifact."""
    stale = [r.model for r in records if r.dataset_fingerprint != dataset.meta.fingerprint]
    if stale:
        context.log.warning(f"{', '.join(stale)} trained on another version of the dataset: its predictions are made again")
        return None
    try:
        return [tracker.load_arrays(r.candidates[0].run_id, RAW_PREDICTIONS_ARTIFACT) for r in records]
    except FileNotFoundError as exc:
        context.log.info(f"{exc}: the bases predict the validation and test spans again")
        return None


MODEL_ASSETS = [*BASE_MODEL_ASSETS, ensemble_model]


def present_models(context: dg.AssetExecutionContext, records: dict[str, ModelRecord | None]) -> list[ModelRecord]:
    """The records of the materialized model assets; the others are logged and left out."""
    for name, record in records.items():
        if record is None:
            context.log.warning(f"{name} is not materialized; left out")
    present = [record for record in records.values() if record is not None]
    if not present:
        raise dg.Failure("no model asset is materialized yet")
    return present


def _comparison_png(rows: list[dict], majority: float) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=90)
    names = [r["model"] for r in rows]
    ax.bar(names, [r["accuracy_mean"] for r in rows], yerr=[r["accuracy_std"] for r in rows], color="#4477aa", capsize=4)
    ax.axhline(majority, color="crimson", linestyle="--", linewidth=1, label=f"majority class {majority:.4f}")
    low = min(majority, *(r["accuracy_mean"] - r["accuracy_std"] for r in rows))
    high = max(majority, *(r["accuracy_mean"] + r["accuracy_std"] for r in rows))
    ax.set_ylim(low - 0.02, high + 0.02)
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return figure_png(fig)


def comparison_rows(records: list[ModelRecord]) -> list[dict]:
    """One row per model: test accuracy (mean ± std over seeds), log-loss, Brier, worst edge p-value."""
    return [
        {
            "model": record.model,
            "seeds": len(record.candidates),
            "accuracy_mean": float(np.mean([c.metrics["accuracy"] for c in record.candidates])),
            "accuracy_std": float(np.std([c.metrics["accuracy"] for c in record.candidates])),
            "log_loss": float(np.mean([c.metrics["log_loss"] for c in record.candidates])),
            "brier": float(np.mean([c.metrics["brier"] for c in record.candidates])),
            "worst_p_value": float(max(c.edge["p_value"] for c in record.candidates)),
        }
        for record in records
    ]


@dg.asset(
    ins=model_ins(MODEL_ASSETS, optional=True),
    partitions_def=DATASETS,
    group_name="models",
    description="Every candidate on the same test rows: accuracy (mean ± std over seeds), log-loss, Brier, edge p-value.",
)
def model_comparison(
    context: dg.AssetExecutionContext, mlflow_store: MLflowResource, **models: ModelRecord | None
) -> dg.MaterializeResult:
    records = present_models(context, models)
    runs = [c.run_id for record in records for c in record.candidates]
    rows, majority = comparison_rows(records), records[0].candidates[0].edge["majority_accuracy"]
    # A standard deviation over one seed is no measure of spread: left empty rather than shown as 0.
    shown = [{k: None if k == "accuracy_std" and r["seeds"] < 2 else rounded(v, 4) for k, v in r.items()} for r in rows]
    best = max(rows, key=lambda r: r["accuracy_mean"])
    return dg.MaterializeResult(
        metadata={
            "comparison": table(shown),
            "best": dg.MetadataValue.text(
                f"{best['model']} ({best['accuracy_mean']:.4f}"
                + (f" ± {best['accuracy_std']:.4f} over {best['seeds']} seeds)" if best["seeds"] > 1 else ", one seed)")
            ),
            "best_accuracy": dg.MetadataValue.float(best["accuracy_mean"]),
            "majority_accuracy": dg.MetadataValue.float(majority),
            "chart": dg.MetadataValue.md(markdown_image(_comparison_png(rows, majority), "model comparison")),
            "mlflow_compare": dg.MetadataValue.url(mlflow_store.tracker().compare_url(runs)),
        }
    )
