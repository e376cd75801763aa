"""Monitoring assets: the service's prediction log consolidated per UTC day, and each served model
version's live performance that day beside its backtest (the rules live in `scalping_assets.monitoring`)."""

import math
import warnings
from datetime import date

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
from pydantic import Field

from scalping_assets.assets.display import rounded, table
from scalping_assets.monitoring.live import (
    DEGRADATION_TEST,
    LivePerformance,
    MonitoringError,
    judge_day,
    load_served_version,
    tick_span,
)
from scalping_assets.monitoring.predlog import consolidate_day, day_files, line_count, parse_served_key, read_day, served_key
from scalping_assets.partitions import DAILY, SERVED
from scalping_assets.plotting import markdown_image
from scalping_assets.records import LivePerformanceRecord, PredictionLogRecord
from scalping_assets.resources import FolderResource, MLflowResource, TickStoreResource
from scalping_assets.settings import Settings

# live_performance reads the prediction log of its partition's day through this beta mapping (silenced as
# partitions.py silences MultiPartitionMapping's).
warnings.filterwarnings(
    "ignore", message="Class `MultiToSingleDimensionPartitionMapping` is currently in beta", category=dg.BetaWarning
)

COMPLETE_CHECK = "prediction_log_complete"
DEGRADATION_CHECK = "no_significant_degradation"
LATENCY_CHECK = "latency_p99_within_target"
PARQUET_FOLDER = "predictions"  # under the monitoring store: <day>.parquet
# One day of one served version; the versions come and go with promotions, so they are added as the
# prediction log finds them.
LIVE_PARTITIONS = dg.MultiPartitionsDefinition({"date": DAILY, "served": SERVED})
DEFAULT_LATENCY_TARGET_MS = 100.0


class PredictionLogConfig(dg.Config):
    folder: str = Field(
        default="",
        description="the service's prediction log folder; empty: SCALPING_PREDICTION_LOG, else <data folder>/predictions",
    )


class CompletenessConfig(dg.Config):
    max_rejected_share: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description=(
            "share of a day's lines that may be rejected; the service writes valid lines, so more than a line cut "
            "off by a crash means a broken writer or disk"
        ),
    )


class LivePerformanceConfig(dg.Config):
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="level of the two-sided degradation test")
    min_trades: int = Field(
        default=20,
        ge=1,
        description="live trades below which the degradation check passes without a judgement (the test's size is off below ~20)",
    )
    latency_p99_target_ms: float = Field(
        default=DEFAULT_LATENCY_TARGET_MS,
        gt=0,
        description=(
            "the day's 99th percentile of logged latency may not exceed this (ms); the default is a tenth of the "
            "fastest indices' 1-second tick: the backtest fills at the next tick, so an answer must leave the client "
            "most of a tick to place its order"
        ),
    )
    lookahead_seconds: int = Field(
        default=3600,
        ge=60,
        description="ticks after the day's end read to resolve its last labels and close its last trades",
    )


def _models_table(frame: pd.DataFrame) -> dg.TableMetadataValue:
    """One row per served version of the day: what it answered, where, how fast."""
    rows = []
    for (name, version), rows_of in frame.groupby(["registered_model", "version"], sort=True):
        rows.append(
            {
                "served": served_key(name, version),
                "predictions": len(rows_of),
                "at_ticks": int(rows_of["epoch"].notna().sum()),
                "variants": ", ".join(sorted(rows_of["variant"].unique())),
                "symbols": ", ".join(sorted(rows_of["symbol"].unique())),
                "endpoints": ", ".join(sorted(rows_of["endpoint"].unique())),
                "latency_p50_ms": rounded(float(rows_of["latency_ms"].median()), 3),
            }
        )
    return table(rows)


@dg.asset(
    partitions_def=DAILY,
    group_name="monitoring",
    io_manager_key="records",
    kinds={"parquet"},
    description=(
        "The service's prediction log of one UTC day (every process's file) as one Parquet file; each line kept or "
        "rejected with its reason."
    ),
)
def prediction_log(
    context: dg.AssetExecutionContext, config: PredictionLogConfig, monitoring_store: FolderResource
) -> dg.MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    folder = config.folder or str(Settings().prediction_log_dir())
    target = monitoring_store.folder(PARQUET_FOLDER) / f"{day.isoformat()}.parquet"
    record = consolidate_day(folder, day, target)
    if record.models:
        # Each version that answered becomes a `served` partition of live_performance.
        context.instance.add_dynamic_partitions(SERVED.name, record.models)
    rejected = sum(record.rejected.values())
    context.log.info(f"{day}: {record.read} lines in {len(record.files)} files, {record.kept} kept, {rejected} rejected")
    reasons = [{"reason": r, "lines": n, "first": record.first_rejected.get(r, "")} for r, n in record.rejected.items()]
    return dg.MaterializeResult(
        value=record,
        metadata={
            "read": dg.MetadataValue.int(record.read),
            "kept": dg.MetadataValue.int(record.kept),
            "rejected": dg.MetadataValue.int(rejected),
            "rejected_reasons": table(reasons),
            "models": _models_table(read_day(record.path)),
            "files": dg.MetadataValue.int(len(record.files)),
            "log_folder": dg.MetadataValue.path(folder),
            "path": dg.MetadataValue.path(record.path),
        },
    )


@dg.asset_check(
    asset=prediction_log,
    name=COMPLETE_CHECK,
    partitions_def=DAILY,
    description=(
        "Every line of the day's log files, counted again, is a row of the Parquet file or rejected with a reason, "
        "and the rejected share is within the bound"
    ),
)
def prediction_log_complete(
    context: dg.AssetCheckExecutionContext, config: CompletenessConfig, prediction_log: PredictionLogRecord
) -> dg.AssetCheckResult:
    # Counted apart from the consolidation: the files' newlines, the Parquet footer's row count. A file
    # that grew or appeared since (today's log) fails it until the day is consolidated again.
    record = prediction_log
    files = [str(p) for p in day_files(record.folder, record.day)] if record.folder else record.files
    lines = sum(line_count(f) for f in files)
    rows = pq.read_metadata(record.path).num_rows
    rejected = sum(record.rejected.values())
    share = rejected / record.read if record.read else 0.0
    problems = []
    if files != record.files:
        problems.append(f"the day's files are now {len(files)}, {len(record.files)} were consolidated")
    if lines != record.read:
        problems.append(f"the files hold {lines:,} lines, {record.read:,} were read")
    if record.read != record.kept + rejected:
        problems.append(f"{record.read:,} read ≠ {record.kept:,} kept + {rejected:,} rejected")
    if rows != record.kept:
        problems.append(f"the Parquet file holds {rows:,} rows, {record.kept:,} were kept")
    if share > config.max_rejected_share:
        problems.append(f"{share:.2%} of lines rejected > {config.max_rejected_share:.2%}")
    said = f"{record.read:,} lines read = {record.kept:,} kept + {rejected:,} rejected ({share:.2%})"
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) if problems else f"{said}; the file holds {rows:,} rows",
        metadata={
            "lines": lines,
            "read": record.read,
            "kept": record.kept,
            "rejected": rejected,
            "parquet_rows": rows,
            "rejected_share": share,
            "max_rejected_share": config.max_rejected_share,
        },
    )


def _number(value) -> float:
    return math.nan if value is None else float(value)


# The side-by-side table: (figure, key, decimals), what decides first.
FIGURES = (
    ("trades", "trades", None),
    ("win rate", "win_rate", 4),
    ("win rate, 95 % low", "win_rate_ci_low", 4),
    ("win rate, 95 % high", "win_rate_ci_high", 4),
    ("expectancy", "expectancy", 4),
    ("net P&L", "total_pnl_net", 2),
    ("accuracy", "accuracy", 4),
    ("latency p50 ms", "latency_p50_ms", 3),
    ("latency p99 ms", "latency_p99_ms", 3),
)


def _side_by_side(result: LivePerformance) -> dg.TableMetadataValue:
    def cell(summary, key, decimals):
        value = summary.get(key)
        return value if decimals is None or value is None else rounded(float(value), decimals)

    return table(
        [
            {"figure": name, "live": cell(result.figures, key, d), "backtest": cell(result.backtest, key, d)}
            for name, key, d in FIGURES
        ]
    )


def _per_symbol(result: LivePerformance) -> dg.TableMetadataValue:
    rows = []
    for s in result.symbols:
        live, bt = result.per_symbol.get(s, {}), result.backtest_per_symbol.get(s, {})
        rows.append(
            {
                "symbol": s,
                "live_trades": live.get("trades"),
                "backtest_trades": bt.get("trades"),
                "live_win_rate": rounded(live.get("win_rate"), 4),
                "backtest_win_rate": rounded(bt.get("win_rate"), 4),
                "live_expectancy": rounded(live.get("expectancy"), 4),
                "backtest_expectancy": rounded(bt.get("expectancy"), 4),
                "compared": s in result.test.symbols,
            }
        )
    return table(rows)


def degradation_verdict(result: LivePerformance, alpha: float, min_trades: int) -> str:
    """One sentence for the check's line: the figures compared, and what the test says of them."""
    t = result.test
    live, backtest = f"{t.live_win_rate:.3f} (n = {t.live_trades:,})", f"{t.backtest_win_rate:.3f} (n = {t.backtest_trades:,})"
    sizes = f"live {live} vs backtest {backtest}"
    if t.p_value is None:
        return (
            f"nothing to compare: no symbol has trades both live ({result.figures['trades']} trades) "
            f"and in the backtest ({result.backtest['trades']} trades)"
        )
    if t.live_trades < min_trades:
        few = f"too few live trades to judge ({t.live_trades} < min_trades {min_trades})"
        return f"{few}: {sizes}, p = {t.p_value:.3g}, for information"
    if t.p_value >= alpha:
        return f"no significant change: {sizes}, p = {t.p_value:.3g} ≥ {alpha}"
    if result.degraded:
        return f"degraded: {sizes}, p = {t.p_value:.3g} < {alpha}"
    return (
        f"live wins significantly more often than its backtest: {sizes}, p = {t.p_value:.3g} < {alpha}; not a "
        "degradation, but the backtest no longer describes the live trades"
    )


@dg.asset(
    partitions_def=LIVE_PARTITIONS,
    ins={
        "prediction_log": dg.AssetIn(partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="date"))
    },
    group_name="monitoring",
    io_manager_key="records",
    kinds={"mlflow"},
    description=(
        "One served version's logged predictions of one day resolved against the ticks that followed (accuracy) and "
        "traded by the backtest engine with its backtest's execution (win rate, expectancy), beside its backtest."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            DEGRADATION_CHECK,
            asset="live_performance",
            description=f"The live win rate does not differ significantly from the backtest's ({DEGRADATION_TEST}); "
            "passes without a judgement under min_trades",
        ),
        dg.AssetCheckSpec(
            LATENCY_CHECK,
            asset="live_performance",
            description=f"The day's p99 logged latency is within the target (default {DEFAULT_LATENCY_TARGET_MS:g} ms)",
        ),
    ],
)
def live_performance(
    context: dg.AssetExecutionContext,
    config: LivePerformanceConfig,
    tick_store: TickStoreResource,
    mlflow_store: MLflowResource,
    prediction_log: PredictionLogRecord,
):  # unannotated: see prediction_log
    keys = context.partition_key.keys_by_dimension
    day = date.fromisoformat(keys["date"])
    try:
        name, version = parse_served_key(keys["served"])
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    frame = read_day(prediction_log.path)
    mine = frame[(frame["registered_model"] == name) & (frame["version"] == version)].reset_index(drop=True)
    tracker = mlflow_store.tracker()
    try:
        served = load_served_version(tracker, name, version)
    except MonitoringError as exc:
        raise dg.Failure(str(exc)) from exc
    start, end = tick_span(day, config.lookahead_seconds)
    store = tick_store.store()
    ticks = {s: store.read(s, start, end) for s in sorted(mine["symbol"].unique())}
    for symbol, t in ticks.items():
        if t.empty:
            context.log.warning(f"no ticks of {symbol} stored around {day}: its predictions stay unresolved")
    result = judge_day(day, mine, ticks, served, config.alpha, config.min_trades)
    test = result.test
    record = LivePerformanceRecord(
        day=day,
        registered_model=name,
        version=version,
        predictions=len(mine),
        resolved=int(result.figures["resolved"]),
        figures=result.figures,
        backtest=result.backtest,
        backtest_scope=result.backtest_scope,
        degradation_p_value=test.p_value,
        degraded=result.degraded,
        symbols=result.symbols,
        per_symbol=result.per_symbol,
        backtest_per_symbol=result.backtest_per_symbol,
        test=DEGRADATION_TEST,
        alpha=config.alpha,
        compared_symbols=test.symbols,
        training_run_id=served.training_run_id,
        backtest_run_id=served.backtest_run_id,
        execution=served.execution.model_dump(),
    )
    f = result.figures
    p99 = f["latency_p99_ms"]
    verdict = degradation_verdict(result, config.alpha, config.min_trades)
    context.log.info(f"{name} v{version} on {day}: {verdict}")
    latency_ok = p99 is None or p99 <= config.latency_p99_target_ms
    return dg.MaterializeResult(
        value=record,
        metadata={
            "side_by_side": _side_by_side(result),
            "per_symbol": _per_symbol(result),
            "degradation": dg.MetadataValue.md(f"**{DEGRADATION_TEST}**: {verdict}"),
            # Numbers the Plots tab charts across materializations.
            "live_win_rate": dg.MetadataValue.float(_number(f["win_rate"])),
            "backtest_win_rate": dg.MetadataValue.float(_number(result.backtest["win_rate"])),
            "live_accuracy": dg.MetadataValue.float(_number(f["accuracy"])),
            "trades": dg.MetadataValue.int(int(f["trades"])),
            "latency_p99_ms": dg.MetadataValue.float(_number(p99)),
            "degradation_p_value": dg.MetadataValue.float(_number(test.p_value)),
            "predictions": dg.MetadataValue.int(len(mine)),
            "resolved": dg.MetadataValue.int(int(f["resolved"])),
            "pnl": dg.MetadataValue.md(markdown_image(result.plot, "live cumulative P&L vs the backtest's expectancy")),
            "mlflow_version": dg.MetadataValue.url(tracker.model_version_url(name, version)),
            "mlflow_backtest": dg.MetadataValue.url(tracker.run_url(served.backtest_run_id)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=DEGRADATION_CHECK,
                passed=not result.degraded,
                severity=dg.AssetCheckSeverity.WARN,
                description=verdict,
                metadata={
                    "p_value": _number(test.p_value),
                    "alpha": config.alpha,
                    "live_trades": test.live_trades,
                    "backtest_trades": test.backtest_trades,
                    "live_win_rate": _number(rounded(test.live_win_rate, 6)),
                    "backtest_win_rate": _number(rounded(test.backtest_win_rate, 6)),
                    "min_trades": config.min_trades,
                    "test": DEGRADATION_TEST,
                },
            ),
            dg.AssetCheckResult(
                check_name=LATENCY_CHECK,
                passed=latency_ok,
                description=(
                    "no prediction logged"
                    if p99 is None
                    else f"p99 {p99:.2f} ms {'≤' if latency_ok else '>'} target {config.latency_p99_target_ms:g} ms "
                    f"over {len(mine):,} predictions (p50 {f['latency_p50_ms']:.2f} ms)"
                ),
                metadata={"latency_p99_ms": _number(p99), "target_ms": config.latency_p99_target_ms, "predictions": len(mine)},
            ),
        ],
    )


MONITORING_ASSETS = [prediction_log, live_performance]
# live_performance's two checks come with it (its check_specs): they judge what it just computed.
MONITORING_CHECKS = [prediction_log_complete]
