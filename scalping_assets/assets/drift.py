"""Drift asset: every served model version's logged feature rows and predictions of one UTC day against
its training span, as an Evidently report (the rules, and why the method is what it is, live in
`scalping_assets.monitoring.drift`)."""

import math
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
from pydantic import Field

from scalping_assets.assets.display import rounded, table
from scalping_assets.monitoring.drift import (
    CALENDAR_FEATURES,
    MAX_DRIFT_SHARE,
    MAX_REFERENCE_ROWS,
    METHOD,
    PREDICTION_METHOD,
    PREDICTION_THRESHOLD,
    THRESHOLD,
    ClassMethod,
    DriftInputError,
    DriftResult,
    NumericMethod,
    drift,
    live_rows,
    load_reference,
    record_snapshot,
)
from scalping_assets.monitoring.predlog import PredictionLogError, read_day, served_key
from scalping_assets.partitions import DAILY
from scalping_assets.records import DriftRecord, LivePerformanceRecord, PredictionLogRecord, RecordError
from scalping_assets.resources import FolderResource, MLflowResource, RecordIOManager

DRIFT_CHECK = "drift_share_within_threshold"
REPORT_FOLDER = "drift"  # under the monitoring store: <registered model>/<version>/<day>.html
WORKSPACE_FOLDER = "evidently"  # under the monitoring store: the Evidently workspace `make monitor` serves
ARTIFACT = "drift/{day}.html"  # in the version's training run


class DriftConfig(dg.Config):
    method: NumericMethod = Field(
        default=METHOD,
        description=(
            "per-feature distance: Wasserstein-1 over the reference's standard deviation, pinned (Evidently's own "
            "default switches to a KS p-value under 1,000 reference rows, and p-values flag every autocorrelated tick day)"
        ),
    )
    threshold: float = Field(
        default=THRESHOLD,
        gt=0,
        description="a feature drifted when its distance is at least this many reference standard deviations",
    )
    prediction_method: ClassMethod = Field(
        default=PREDICTION_METHOD, description="distance between the live and the test span's predicted-class distributions"
    )
    prediction_threshold: float = Field(default=PREDICTION_THRESHOLD, gt=0, description="prediction drift at or above this")
    max_drift_share: float = Field(
        default=MAX_DRIFT_SHARE,
        ge=0,
        le=1,
        description=(
            "the check fails when a version's share of drifted features exceeds this; with the default threshold it failed "
            "on none of 400 simulated stationary day logs (bench_drift: 95 % interval 0-0.9 %) and on all 36 after a "
            "volatility change"
        ),
    )
    min_rows: int = Field(
        default=200,
        ge=1,
        description="a version with fewer logged predictions that day is not judged (listed as skipped)",
    )
    max_reference_rows: int = Field(
        default=MAX_REFERENCE_ROWS,
        ge=1_000,
        description="training rows drawn (in the live symbol mix) for the comparison; the score does not depend on it",
    )
    exclude: list[str] = Field(
        default=list(CALENDAR_FEATURES),
        description="features not judged: the calendar differs from the training span's by construction",
    )
    workspace: str = Field(
        default="", description="Evidently workspace folder; empty: <monitoring store>/evidently, what `make monitor` serves"
    )


def _live_figures(records: RecordIOManager, day: date, name: str, version: str, latency: np.ndarray) -> dict[str, float]:
    """Latency from the log; live accuracy from `live_performance` when it judged the same day first."""
    figures = {"latency_p50_ms": float(np.percentile(latency, 50)), "latency_p99_ms": float(np.percentile(latency, 99))}
    key = ["live_performance", str(dg.MultiPartitionKey({"date": day.isoformat(), "served": served_key(name, version)}))]
    store = records.store()
    if store.exists(key):
        try:
            accuracy = store.load(key, LivePerformanceRecord).figures.get("accuracy")
        except RecordError:
            accuracy = None
        if isinstance(accuracy, int | float) and math.isfinite(accuracy):
            figures["accuracy"] = float(accuracy)
    return figures


def _record(day: date, name: str, version: str, result: DriftResult, html: Path, run_id: str, url: str, **more) -> DriftRecord:
    return DriftRecord(
        day=day,
        registered_model=name,
        version=version,
        method=result.method,
        threshold=result.threshold,
        reference_rows=result.reference_rows,
        current_rows=result.current_rows,
        scores=result.scores,
        drifted=result.drifted,
        drift_share=result.share,
        prediction_drift=result.prediction.summary() if result.prediction else {},
        html=str(html),
        prediction_method=result.prediction.method if result.prediction else "",
        run_id=run_id,
        report_url=url,
        excluded=result.excluded,
        symbols=result.mix,
        **more,
    )


def _verdict(record: DriftRecord, bound: float) -> str:
    judged = len(record.scores) + len([f for f in record.drifted if f not in record.scores])
    top = ", ".join(f"{f} {record.scores[f]:.2f}" if f in record.scores else f"{f} (undefined)" for f in record.drifted[:3])
    sign = "≤" if record.drift_share <= bound else ">"
    return (
        f"{served_key(record.registered_model, record.version)}: {len(record.drifted)}/{judged} features drifted "
        f"({record.drift_share:.1%} {sign} {bound:.0%})" + (f", most {top}" if top else "")
    )


@dg.asset(
    partitions_def=DAILY,
    ins={"prediction_log": dg.AssetIn()},
    group_name="monitoring",
    io_manager_key="records",
    kinds={"evidently", "mlflow"},
    description=(
        "Every served version's logged raw feature rows and predicted classes of one UTC day against its training span "
        "(Evidently: per-feature normed Wasserstein distance, share of drifted features, predicted-class drift); the "
        "HTML logged to the version's training run, the snapshot to the local Evidently workspace (make monitor)."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            DRIFT_CHECK,
            asset="drift_report",
            description=f"Every judged version's share of drifted features is at most max_drift_share ({MAX_DRIFT_SHARE:g})",
        )
    ],
)
def drift_report(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    mlflow_store: MLflowResource,
    monitoring_store: FolderResource,
    records: dg.ResourceParam[RecordIOManager],
    prediction_log: PredictionLogRecord,
):  # unannotated: Dagster reads `-> MaterializeResult` on an asset with checks as an output of type Nothing
    day = date.fromisoformat(context.partition_key)
    try:
        log = read_day(prediction_log.path)
    except PredictionLogError as exc:
        raise dg.Failure(str(exc)) from exc
    tracker = mlflow_store.tracker()
    workspace = Path(config.workspace) if config.workspace else monitoring_store.folder(WORKSPACE_FOLDER)
    judged: list[DriftRecord] = []
    skipped: dict[str, str] = {}
    results: dict[str, DriftResult] = {}
    versions = log.groupby(["registered_model", "version"], sort=True).size().sort_values(ascending=False, kind="stable")
    for (name, version), rows in versions.items():
        served = served_key(name, version)
        if rows < config.min_rows:
            skipped[served] = f"{rows} predictions < min_rows {config.min_rows}"
            continue
        mine = log[(log["registered_model"] == name) & (log["version"] == version)]
        figures = _live_figures(records, day, name, version, mine["latency_ms"].to_numpy(np.float64))
        try:
            reference = load_reference(tracker, name, version)
            live = live_rows(mine, reference.feature_names, prediction_log.path)
            result = drift(
                reference.features,
                live,
                config.method,
                config.threshold,
                features=reference.feature_names,
                reference_predictions=reference.predictions,
                prediction_method=config.prediction_method,
                prediction_threshold=config.prediction_threshold,
                exclude=config.exclude,
                max_reference_rows=config.max_reference_rows,
                live=figures,
                day=day,
                labels={"version": version, "day": day.isoformat()},
            )
        except DriftInputError as exc:
            raise dg.Failure(str(exc)) from exc
        html = result.html()
        path = monitoring_store.folder(REPORT_FOLDER) / name / version / f"{day.isoformat()}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
        artifact = ARTIFACT.format(day=day.isoformat())
        tracker.reopen(reference.run_id).bytes(html.encode(), artifact)
        snapshot = record_snapshot(workspace, name, result)
        url = tracker.artifact_url(reference.run_id, artifact)
        judged.append(_record(day, name, version, result, path, reference.run_id, url, live=figures, snapshot_id=snapshot))
        results[served] = result
        context.log.info(_verdict(judged[-1], config.max_drift_share))
    if not judged:
        raise dg.Failure(
            f"nothing to judge on {day}: {len(log):,} logged predictions in {prediction_log.path}"
            + (f"; {'; '.join(f'{k}: {v}' for k, v in skipped.items())}" if skipped else "")
        )
    main = judged[0].model_copy(update={"others": judged[1:], "skipped": skipped})
    within = all(r.drift_share <= config.max_drift_share for r in judged)
    prediction = main.prediction_drift
    return dg.MaterializeResult(
        value=main,
        metadata={
            "registered_model": dg.MetadataValue.text(main.registered_model),
            "version": dg.MetadataValue.text(main.version),
            # Numbers the Plots tab charts across days.
            "drift_share": dg.MetadataValue.float(main.drift_share),
            "drifted_features": dg.MetadataValue.int(len(main.drifted)),
            "prediction_drift": dg.MetadataValue.float(float(prediction.get("score", math.nan))),
            "features": table(
                [
                    {"feature": r["feature"], "score": rounded(r["score"], 4), "drifted": r["drifted"]}
                    for r in results[served_key(main.registered_model, main.version)].table()
                ]
            ),
            "versions": _versions_table(judged, skipped),
            "method": dg.MetadataValue.text(f"{main.method} ≥ {main.threshold:g} (share bound {config.max_drift_share:g})"),
            "reference_rows": dg.MetadataValue.int(main.reference_rows),
            "current_rows": dg.MetadataValue.int(main.current_rows),
            "report": dg.MetadataValue.path(main.html),
            "mlflow_report": dg.MetadataValue.url(main.report_url),
            "workspace": dg.MetadataValue.path(str(workspace)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=DRIFT_CHECK,
                passed=within,
                severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(_verdict(r, config.max_drift_share) for r in judged),
                metadata={
                    "max_drift_share": config.max_drift_share,
                    "worst_drift_share": max(r.drift_share for r in judged),
                    "threshold": config.threshold,
                    "method": config.method,
                    "versions": len(judged),
                },
            )
        ],
    )


def _versions_table(judged: list[DriftRecord], skipped: dict[str, str]) -> dg.TableMetadataValue:
    rows = [
        {
            "served": served_key(r.registered_model, r.version),
            "predictions": r.current_rows,
            "drift_share": rounded(r.drift_share, 4),
            "drifted": ", ".join(r.drifted[:5]) + (" …" if len(r.drifted) > 5 else ""),
            "prediction_drift": rounded(r.prediction_drift.get("score"), 4),
            "report": r.report_url or "",
        }
        for r in judged
    ]
    rows += [
        {
            "served": k,
            "predictions": None,
            "drift_share": None,
            "drifted": f"not judged: {why}",
            "prediction_drift": None,
            "report": "",
        }
        for k, why in skipped.items()
    ]
    return table(rows)


DRIFT_ASSETS = [drift_report]
# The check is declared on the asset (check_specs): wiring the asset wires it. Listed for the
# Definitions' and the tests' sake.
DRIFT_CHECKS = [dg.AssetCheckKey(a.key, spec.name) for a in DRIFT_ASSETS for spec in a.check_specs]
