"""Serving assets: the champion (and challenger) exported to ONNX, with parity recorded as checks."""

import dagster as dg
from pydantic import Field

from scalping_assets.features.dataset import Dataset
from scalping_assets.models.tracking import CHALLENGER, CHAMPION
from scalping_assets.partitions import DATASETS
from scalping_assets.records import DatasetRecord, ExportRecord, GateRecord
from scalping_assets.resources import FolderResource, MLflowResource
from serving.export import FP32_TOLERANCE, ExportError, ExportReport, export_version

PARITY_CHECK, INT8_CHECK = "fp32_parity", "int8_agreement"


class OnnxConfig(dg.Config):
    challenger: bool = Field(default=True, description="also export the challenger, when there is one")
    min_int8_agreement: float = Field(default=0.99, gt=0, le=1, description="INT8 is kept only at this class agreement or more")


@dg.asset(
    partitions_def=DATASETS,
    group_name="serving",
    io_manager_key="records",
    kinds={"onnx", "mlflow"},
    description="Champion (and challenger) as ONNX bundles with an INT8 variant where it pays, logged to their MLflow runs.",
    check_specs=[
        dg.AssetCheckSpec(
            PARITY_CHECK,
            asset="onnx_model",
            blocking=True,
            description=f"FP32 ONNX vs the trained model: max |Δprob| ≤ {FP32_TOLERANCE}",
        ),
        dg.AssetCheckSpec(
            INT8_CHECK,
            asset="onnx_model",
            description="INT8 vs FP32 class agreement on the test span, at least the configured share",
        ),
    ],
)
def onnx_model(
    context: dg.AssetExecutionContext,
    config: OnnxConfig,
    bundle_store: FolderResource,
    mlflow_store: MLflowResource,
    training_dataset: DatasetRecord,
    champion: GateRecord,
):  # unannotated: Dagster reads `-> MaterializeResult` on an asset with checks as an output of type Nothing
    tracker = mlflow_store.tracker()
    name = champion.registered_model
    dataset = Dataset.load(training_dataset.path)
    aliases = [CHAMPION, CHALLENGER] if config.challenger else [CHAMPION]
    versions = {alias: tracker.alias_version(name, alias) for alias in aliases}
    if versions[CHAMPION] is None:
        raise dg.Failure(f"{name} has no champion: no candidate has passed the gate yet, nothing to serve")
    reports: dict[str, ExportReport] = {}
    for alias, version in versions.items():
        if version is None:
            continue
        context.log.info(f"exporting {name} v{version} ({alias}) to ONNX")
        try:
            reports[alias] = export_version(
                tracker, name, version, dataset, bundle_store.folder(f"{name}/{version}"), config.min_int8_agreement
            )
        except ExportError as exc:
            raise dg.Failure(str(exc)) from exc
        context.log.info(f"{alias} v{version}: {reports[alias].summary()}")
    summaries = {f"{alias} v{r.manifest.version}": r.summary() for alias, r in reports.items()}
    worst_diff = max(r.fp32_max_abs_diff for r in reports.values())
    agreements = {k: s["int8_agreement"] for k, s in summaries.items() if s["int8_agreement"] is not None}
    champion_report = reports[CHAMPION]
    record = ExportRecord(
        registered_model=name,
        versions={alias: r.manifest.version for alias, r in reports.items()},
        bundles={alias: str(r.folder.resolve()) for alias, r in reports.items()},
        precision=champion_report.manifest.precision,
        exports=summaries,
    )
    return dg.MaterializeResult(
        value=record,
        metadata={
            "registered_model": dg.MetadataValue.text(name),
            "champion_version": dg.MetadataValue.text(champion_report.manifest.version),
            "challenger_version": dg.MetadataValue.text(
                reports[CHALLENGER].manifest.version if CHALLENGER in reports else "none"
            ),
            "precision": dg.MetadataValue.text(champion_report.manifest.precision),
            "bundle": dg.MetadataValue.path(str(champion_report.folder.resolve())),
            "exports": dg.MetadataValue.json(summaries),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=PARITY_CHECK,
                passed=worst_diff <= FP32_TOLERANCE,
                metadata={"max_abs_diff": worst_diff, "tolerance": FP32_TOLERANCE, "test_windows": champion_report.test_windows},
            ),
            dg.AssetCheckResult(
                check_name=INT8_CHECK,
                passed=all(a >= config.min_int8_agreement for a in agreements.values()),
                severity=dg.AssetCheckSeverity.WARN,  # a failing INT8 variant is dropped: FP32 is served
                metadata={
                    "agreement": dg.MetadataValue.json(agreements or "no quantisable part (trees only)"),
                    "min_agreement": config.min_int8_agreement,
                    "int8_kept": dg.MetadataValue.json({k: s["int8_kept"] for k, s in summaries.items()}),
                },
            ),
        ],
    )


SERVING_ASSETS = [onnx_model]
