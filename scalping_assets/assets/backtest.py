"""Evaluation assets: an out-of-sample backtest of every candidate, and the promotion gate."""

import math
from pathlib import Path

import dagster as dg
import numpy as np
from pydantic import Field

from scalping_assets.assets.config import SpecConfig, spec_config
from scalping_assets.assets.models import MODEL_ASSETS, model_ins, present_models
from scalping_assets.backtest.engine import ExecutionConfig
from scalping_assets.backtest.evaluation import EvaluationSpan, evaluate_candidates
from scalping_assets.backtest.instruments import UnknownCostError, instrument_terms
from scalping_assets.backtest.promotion import GateCandidate, GateCriteria, promote
from scalping_assets.backtest.runs import log_report
from scalping_assets.features.dataset import DatasetMeta
from scalping_assets.partitions import DATASETS
from scalping_assets.plotting import markdown_image
from scalping_assets.records import BacktestRecord, BacktestResult, DatasetRecord, GateRecord, ModelRecord
from scalping_assets.resources import FolderResource, MLflowResource, TickStoreResource

TABLE_COLUMNS = (
    "trades",
    "win_rate",
    "expectancy",
    "profit_factor",
    "sharpe_annualised",
    "max_drawdown_pct",
    "p_value_vs_random",
    "deflated_sharpe",
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


def _table(results: list[BacktestResult]) -> dg.TableMetadataValue:
    """One row per candidate and symbol, and one for all its symbols together."""
    columns = [dg.TableColumn("candidate"), dg.TableColumn("version"), dg.TableColumn("symbol")]
    columns += [*(dg.TableColumn(c, "float") for c in TABLE_COLUMNS), dg.TableColumn("significant", "bool")]
    records = [
        dg.TableRecord(
            {
                "candidate": r.candidate.name,
                "version": r.candidate.version,
                "symbol": symbol,
                **{c: None if summary[c] is None else round(float(summary[c]), 5) for c in TABLE_COLUMNS},
                "significant": bool(summary["significant"]),
            }
        )
        for r in results
        for symbol, summary in {**r.per_symbol, "all": r.summary}.items()
    ]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


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
        html = log_report(tracker, candidate.run_id, e.pooled, folder)
        results.append(
            BacktestResult(
                candidate=candidate,
                summary=_json_summary(e.pooled.summary()),
                per_symbol={s: _json_summary(r.summary()) for s, r in e.per_symbol.items()},
                verdict=e.pooled.verdict,
                html=str(html),
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
    verdicts = "\n".join(
        f"- **{r.candidate.name}** (v{r.candidate.version}): {r.verdict} [report]({Path(r.html).resolve().as_uri()})"
        for r in results
    )
    best_plots = "\n\n".join(markdown_image(png, name) for name, png in plots[best.candidate.name].items())
    return dg.MaterializeResult(
        value=record,
        metadata={
            "comparison": _table(results),
            "verdicts": dg.MetadataValue.md(verdicts),
            "trials": dg.MetadataValue.int(counted.effective),
            "trial_count": dg.MetadataValue.json(counted.metadata()),
            "span": dg.MetadataValue.json({"start": start, "end": end, "symbols": symbols}),
            "execution": dg.MetadataValue.json(execution.model_dump()),
            f"plots_{best.candidate.name}": dg.MetadataValue.md(best_plots),
            "candidates": dg.MetadataValue.json([r.model_dump(mode="json") for r in results]),
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
    reasons = dg.MetadataValue.table(
        records=[dg.TableRecord({"candidate": c, "symbol": s, "cleared": not r, "reasons": "; ".join(r)}) for c, s, r in rows],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("candidate"),
                dg.TableColumn("symbol"),
                dg.TableColumn("cleared", "bool"),
                dg.TableColumn("reasons"),
            ]
        ),
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
    return dg.MaterializeResult(
        value=record,
        metadata={
            "decision": dg.MetadataValue.text(decision.message),
            "promoted": dg.MetadataValue.bool(decision.promoted),
            "registered_model": dg.MetadataValue.text(name),
            "champion_version": dg.MetadataValue.text(decision.champion or "none"),
            "previous_version": dg.MetadataValue.text(decision.previous or "none"),
            "challenger_version": dg.MetadataValue.text(decision.challenger or "none"),
            "gate": reasons,
            "criteria": dg.MetadataValue.json(criteria.model_dump()),
        },
    )


EVALUATION_ASSETS = [backtest_report, champion]
