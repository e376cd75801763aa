"""Evaluation assets: an out-of-sample backtest of every candidate, and the promotion gate."""

import math
from pathlib import Path

import dagster as dg
import numpy as np
from pydantic import Field

from scalping_assets.assets.config import SpecConfig, spec_config
from scalping_assets.assets.display import iso, rounded, settings_table, table
from scalping_assets.assets.models import MODEL_ASSETS, model_ins, present_models
from scalping_assets.backtest.engine import ExecutionConfig
from scalping_assets.backtest.evaluation import EvaluationSpan, evaluate_candidates
from scalping_assets.backtest.instruments import UnknownCostError, instrument_terms
from scalping_assets.backtest.promotion import GateCandidate, GateCriteria, promote
from scalping_assets.backtest.runs import log_backtest
from scalping_assets.features.dataset import DatasetMeta
from scalping_assets.partitions import DATASETS
from scalping_assets.plotting import markdown_image
from scalping_assets.records import BacktestRecord, BacktestResult, DatasetRecord, GateRecord, ModelRecord
from scalping_assets.resources import FolderResource, MLflowResource, TickStoreResource

# The comparison table's columns after candidate and symbol: (column, summary key, scale, decimals),
# what decides first; percentages as percent.
TABLE_COLUMNS = (
    ("trades", "trades", None, None),
    ("expectancy", "expectancy", 1, 4),
    ("p_vs_random", "p_value_vs_random", 1, 4),
    ("deflated_sharpe", "deflated_sharpe", 1, 3),
    ("significant", "significant", None, None),
    ("win_rate_%", "win_rate", 100, 1),
    ("long_%", "long_pct", 1, 1),
    ("net_pnl", "total_pnl_net", 1, 2),
    ("sharpe_annual_lower_95", "sharpe_annualised_lower", 1, 2),
    ("max_drawdown_%", "max_drawdown_pct", 1, 2),
)
WARMUP_SECONDS = 3600  # ticks before the test span that set the RMS move of sigma barriers


class _BacktestOptions(SpecConfig):
    symbols: list[str] = Field(default_factory=list, description="symbols to trade (empty: every symbol of the dataset)")
    draws: int = Field(default=200, ge=10, description="draws of the random-trader baseline")
    seed: int = 0
    max_hold_ticks: int | None = Field(
        default=None, ge=1, description="timeout in ticks; empty: the ticks the dataset's target looks ahead"
    )

    def execution(self, target_lookahead: int) -> ExecutionConfig:
        # The default exit is the label's own horizon: the model was trained to call that move.
        fields = self.model_dump(include=set(ExecutionConfig.model_fields))
        return ExecutionConfig(**fields | {"max_hold_ticks": self.max_hold_ticks or target_lookahead})


# The execution fields are ExecutionConfig's own, constraints included, so the UI's config form and
# the engine cannot drift apart.
BacktestConfig = spec_config(ExecutionConfig, "BacktestConfig", exclude={"max_hold_ticks"}, base=_BacktestOptions)
GateConfig = spec_config(GateCriteria, "GateConfig")


def _json_summary(summary: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if math.isfinite(v) else None) for k, v in summary.items()}  # JSON has no NaN


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _cell(summary: dict[str, float | None], key: str, scale: float | None, decimals: int | None):
    value = summary.get(key)
    if value is None:
        return None
    if key == "significant":
        return bool(value)
    if key == "trades":
        return int(value)
    return rounded(float(value) * scale, decimals)


def _table(results: list[BacktestResult]) -> dg.TableMetadataValue:
    """One row per candidate and symbol, and one for all its symbols together."""
    return table(
        [
            {
                "candidate": r.candidate.name,
                "symbol": symbol,
                **{column: _cell(summary, key, scale, decimals) for column, key, scale, decimals in TABLE_COLUMNS},
                "version": r.candidate.version,
            }
            for r in results
            for symbol, summary in {**r.per_symbol, "all": r.summary}.items()
        ]
    )


@dg.asset(
    ins={"training_dataset": dg.AssetIn(), **model_ins(MODEL_ASSETS, optional=True)},
    partitions_def=DATASETS,
    group_name="evaluation",
    io_manager_key="records",
    kinds={"mlflow", "html"},
    description="Tick-by-tick backtest of every candidate's test-span predictions with costs, against a random trader.",
)
def backtest_report(
    context: dg.AssetExecutionContext,
    config: BacktestConfig,
    tick_store: TickStoreResource,
    report_store: FolderResource,
    mlflow_store: MLflowResource,
    training_dataset: DatasetRecord,
    **models: ModelRecord | None,
) -> dg.MaterializeResult:
    name = context.partition_key
    meta = DatasetMeta.model_validate_json((Path(training_dataset.path) / "meta.json").read_text())
    unknown = sorted(set(config.symbols) - set(meta.spec.symbols))
    if unknown:
        raise dg.Failure(f"symbols {unknown} are not in dataset {name!r} ({meta.spec.symbols})")
    execution = config.execution(meta.spec.target_lookahead)
    # A symbol whose Deriv cost figures are unknown is not backtested (nor cleared): zero costs would flatter it.
    not_costed = {}
    for symbol in config.symbols or meta.spec.symbols:
        try:
            instrument_terms(symbol, execution)
        except UnknownCostError as exc:
            not_costed[symbol] = str(exc)
            context.log.warning(f"{symbol} not backtested: {exc}")
    symbols = [s for s in config.symbols or meta.spec.symbols if s not in not_costed]
    if not symbols:
        raise dg.Failure(f"no symbol of {name!r} has known {execution.instrument} costs: {not_costed}")
    start, end = meta.boundaries[1], meta.spec.end_epoch
    store = tick_store.store()
    span = EvaluationSpan(
        ticks={s: store.read(s, start - WARMUP_SECONDS, end) for s in symbols},
        start=start,
        end=end,
        execution=execution,
        draws=config.draws,
        seed=config.seed,
    )
    tracker = mlflow_store.tracker()
    folder = report_store.folder(name)
    candidates = [c for record in present_models(context, models) for c in record.candidates]
    # Re-runs of one experiment are one trial, and correlated trials count as fewer (backtest/trials.py);
    # every candidate is deflated over the same trials, its own Sharpe ratio included.
    counted, evaluated = evaluate_candidates(
        tracker,
        [(c.name, c.run_id) for c in candidates],
        span,
        cache=Path(report_store.root) / "_trial_signals",
        log=context.log.info,
    )
    trials = counted.effective
    results, plots = [], {}
    for candidate, e in zip(candidates, evaluated, strict=True):
        logged = log_backtest(tracker, candidate.run_id, e.pooled, folder, e.per_symbol)
        results.append(
            BacktestResult(
                candidate=candidate,
                summary=_json_summary(e.pooled.summary()),
                per_symbol={s: _json_summary(r.summary()) for s, r in e.per_symbol.items()},
                verdict=e.pooled.verdict,
                html=str(logged.html),
                run_id=logged.run_id,
                report_url=logged.report_url,
            )
        )
        plots[candidate.name] = e.pooled.plots
    record = BacktestRecord(
        dataset=name,
        symbols=symbols,
        not_costed=not_costed,
        start=start,
        end=end,
        execution=execution.model_dump(),
        trials=trials,
        results=results,
    )
    best = max(results, key=lambda r: -np.inf if r.summary["expectancy"] is None else r.summary["expectancy"])
    verdicts = "\n".join(f"- **{r.candidate.name}** (v{r.candidate.version}): {r.verdict}" for r in results)
    # URL metadata opens in a new tab: each report rendered in MLflow's artifact view (a file:// link
    # would be blanked by the UI's sanitizer), beside the run's plots.
    reports = {f"report_{r.candidate.name}": dg.MetadataValue.url(r.report_url) for r in results}
    best_plots = "\n\n".join(markdown_image(png, name) for name, png in plots[best.candidate.name].items())
    return dg.MaterializeResult(
        value=record,
        metadata={
            "comparison": _table(results),
            "verdicts": dg.MetadataValue.md(verdicts),
            **reports,
            # Numbers the Plots tab charts across materializations.
            "significant_candidates": dg.MetadataValue.int(sum(bool(r.summary["significant"]) for r in results)),
            "best_expectancy": dg.MetadataValue.float(_number(best.summary["expectancy"])),
            "best_deflated_sharpe": dg.MetadataValue.float(_number(best.summary["deflated_sharpe"])),
            "test_span_hours": dg.MetadataValue.float(round((end - start) / 3600, 2)),
            "trials": dg.MetadataValue.int(counted.effective),
            "trial_count": table([{k: rounded(v, 3) for k, v in counted.metadata().items()}]),
            "span": table([{"from": iso(start), "to": iso(end), "symbols": ", ".join(symbols)}]),
            "execution": settings_table(execution.model_dump()),
            f"plots_{best.candidate.name}": dg.MetadataValue.md(best_plots),
        },
    )


@dg.asset(
    partitions_def=DATASETS,
    group_name="evaluation",
    io_manager_key="records",
    kinds={"mlflow"},
    description="Promotion gate: the best candidate meeting the criteria with a significant edge becomes the MLflow champion.",
)
def champion(
    context: dg.AssetExecutionContext, config: GateConfig, mlflow_store: MLflowResource, backtest_report: BacktestRecord
) -> dg.MaterializeResult:
    results = backtest_report.results
    tracker = mlflow_store.tracker()
    registered = {r.candidate.registered_model for r in results}
    if len(registered) != 1:
        raise dg.Failure(
            f"the candidates belong to {len(registered)} registered models ({sorted(registered)}): gate one dataset at a time"
        )
    name = registered.pop()
    criteria = config.to_spec()
    candidates = [GateCandidate(name=r.candidate.name, version=r.candidate.version, per_symbol=r.per_symbol) for r in results]
    decision = promote(tracker, name, candidates, criteria)
    context.log.info(decision.message)
    for candidate, by_symbol in decision.failures.items():
        for symbol, reasons in by_symbol.items():
            context.log.info(f"{candidate} on {symbol}: {'cleared' if not reasons else 'failed: ' + '; '.join(reasons)}")
    rows = [(c, s, r) for c, by_symbol in decision.failures.items() for s, r in by_symbol.items()]
    versions = {r.candidate.name: r.candidate.version for r in results}
    reasons = table(
        [
            {"candidate": c, "symbol": s, "cleared": not r, "reasons": "; ".join(r) or "all met", "version": versions[c]}
            for c, s, r in rows
        ]
    )
    record = GateRecord(
        registered_model=name,
        promoted=decision.promoted,
        champion=decision.champion,
        previous=decision.previous,
        challenger=decision.challenger,
        failures=decision.failures,
        cleared=decision.cleared,
        message=decision.message,
    )
    links = {"mlflow_model": dg.MetadataValue.url(tracker.registered_model_url(name))}
    if decision.champion:
        links["mlflow_champion"] = dg.MetadataValue.url(tracker.model_version_url(name, decision.champion))
    return dg.MaterializeResult(
        value=record,
        metadata={
            "decision": dg.MetadataValue.text(decision.message),
            **links,
            "promoted": dg.MetadataValue.bool(decision.promoted),
            "registered_model": dg.MetadataValue.text(name),
            "champion_version": dg.MetadataValue.text(decision.champion or "none"),
            "previous_version": dg.MetadataValue.text(decision.previous or "none"),
            "challenger_version": dg.MetadataValue.text(decision.challenger or "none"),
            "gate": reasons,
            "criteria": settings_table(criteria.model_dump()),
            "cleared_pairs": dg.MetadataValue.int(sum(not r for _, _, r in rows)),
        },
    )


EVALUATION_ASSETS = [backtest_report, champion]
