"""Serving assets: the champion (and challenger) exported to ONNX, with parity recorded as checks."""

import dagster as dg
from pydantic import Field

from scalping_assets.assets.display import rounded, table
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
            description=(
                "A served INT8 variant agrees with FP32 on the test span's classes at least the configured share "
                "(one below it is dropped and FP32 served)"
            ),
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
    # What the check guards is what is served: an INT8 variant under the bar is dropped and FP32 served,
    # which is the rule working, not a failure.
    served_int8 = {k: a for k, a in agreements.items() if summaries[k]["int8_kept"]}
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
            "exports": table(
                [
                    {"model": k, "precision": e["precision"], "fp32_max_abs_diff": e["fp32_max_abs_diff"]}
                    | {"int8_agreement": rounded(e["int8_agreement"], 4), "int8_kept": e["int8_kept"]}
                    | {"fp32_p50_us": rounded(e["latency_us"]["fp32"]["p50"], 1), "test_windows": e["test_windows"]}
                    for k, e in summaries.items()
                ]
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=PARITY_CHECK,
                passed=worst_diff <= FP32_TOLERANCE,
                metadata={"max_abs_diff": worst_diff, "tolerance": FP32_TOLERANCE, "test_windows": champion_report.test_windows},
            ),
            dg.AssetCheckResult(
                check_name=INT8_CHECK,
                passed=all(a >= config.min_int8_agreement for a in served_int8.values()),
                severity=dg.AssetCheckSeverity.WARN,
                description=_int8_verdict(summaries, config.min_int8_agreement),
                metadata={
                    "min_agreement": config.min_int8_agreement,
                    "variants": table(
                        [
                            {"model": k, "served": e["precision"], "int8_agreement": rounded(e["int8_agreement"], 4)}
                            for k, e in summaries.items()
                        ]
                    ),
                },
            ),
        ],
    )


SERVING_ASSETS = [onnx_model]


def _int8_verdict(summaries: dict[str, dict], min_agreement: float) -> str:
    """Per exported model, which precision is served and why, for the check's line in the UI."""
    said = []
    for model, e in summaries.items():
        if e["int8_agreement"] is None:
            said.append(f"{model}: FP32 (no quantisable part)")
        elif e["int8_kept"]:
            said.append(f"{model}: INT8 ({e['int8_agreement']:.2%} agreement with FP32)")
        elif e["int8_agreement"] < min_agreement:
            said.append(f"{model}: FP32 (INT8 dropped at {e['int8_agreement']:.2%} < {min_agreement:.0%} agreement)")
        else:
            said.append(f"{model}: FP32 (INT8 agrees at {e['int8_agreement']:.2%} but is not faster)")
    return "; ".join(said)
