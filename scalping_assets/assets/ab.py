"""The paper A/B of champion against challenger, decided once a day (`ab_decision`), and the canary
rollout it starts when the challenger wins (`canary_sensor`).

`ab_decision` reads both books of the paper journal (they trade the same ticks side by side), pairs
their P&L per period and takes the day's look of the anytime-valid test (`trading.sequential`): promote,
keep, or continue. Each look is an MLflow run (the running statistic as metrics, the chart). A promote
starts the canary (`trading.canary`): the challenger takes a growing share of the service's clients
and of the paper trader's venue orders while `canary_sensor` watches the live checks and rolls back or
completes on its own.
"""

import math
from datetime import UTC, date, timedelta

import dagster as dg
from pydantic import Field

from scalping_assets.assets.config import SpecConfig, spec_config
from scalping_assets.assets.display import rounded, table
from scalping_assets.models.tracking import CHALLENGER, CHAMPION, finite_metrics
from scalping_assets.partitions import DAILY
from scalping_assets.plotting import markdown_image
from scalping_assets.records import ABDecisionRecord
from scalping_assets.resources import MLflowResource
from scalping_assets.trading.ab import ABSpec, NoPairError, ab_looks
from scalping_assets.trading.canary import CanaryConfig, start_canary
from scalping_assets.trading.canary_state import read_canary
from scalping_assets.trading.journal import CHALLENGER_BOOK, CHAMPION_BOOK
from scalping_assets.trading.sequential import plot_looks

from .trading import PaperJournalResource


class _ABOptions(SpecConfig):
    start_canary: bool = Field(
        default=True, description="on a promote decision, start the canary rollout of the challenger (canary_sensor runs it)"
    )


ABDecisionConfig = spec_config(ABSpec, "ABDecisionConfig", base=_ABOptions)


@dg.asset(
    partitions_def=DAILY,
    group_name="trading",
    io_manager_key="records",
    kinds={"mlflow"},
    description=(
        "Champion against challenger on the paper journal's two books (the same ticks, side by side): the paired "
        "per-hour P&L difference, one look of an anytime-valid test (asymptotic confidence sequence) per day "
        "since the pair began, and the decision: promote (starts the canary), keep, or continue."
    ),
)
def ab_decision(
    context: dg.AssetExecutionContext, config: ABDecisionConfig, mlflow_store: MLflowResource, paper_journal: PaperJournalResource
):  # unannotated: a MaterializeResult annotation would type the output Nothing, not the record
    day = date.fromisoformat(context.partition_key)
    spec: ABSpec = config.to_spec()
    champion_book, challenger_book = paper_journal.journal(CHAMPION_BOOK), paper_journal.journal(CHALLENGER_BOOK)
    try:
        ab, looks, periods = ab_looks(champion_book, challenger_book, day, spec)
    except NoPairError as exc:
        raise dg.Failure(f"no A/B to judge on {day}: {exc} (run `scalping paper` with a challenger registered)") from exc
    last = looks[-1]
    tracker = mlflow_store.tracker()
    title = f"{ab.registered_model}: v{ab.challenger} (challenger) against v{ab.champion} (champion), through {day}"
    png = plot_looks(looks, title, spec.alpha)
    with tracker.run(
        f"ab v{ab.challenger} vs v{ab.champion} {day}",
        tags={
            "registered_model": ab.registered_model,
            "champion": ab.champion,
            "challenger": ab.challenger,
            "decision": last.decision,
        },
        description=last.why,
    ) as run:
        run.params(spec.model_dump(exclude={"canary"}) | {"symbols": ",".join(ab.symbols), "day": day.isoformat()})
        for step, look in enumerate(looks):
            run.metrics(
                finite_metrics(look.model_dump(include={"mean", "sd", "lower", "upper", "p_value", "periods"})), step=step
            )
        run.bytes(png, "ab/looks.png")
        run_id = run.run_id
    canary = None
    if last.decision == "promote" and config.start_canary:
        canary = _start_canary(context, tracker, ab.registered_model, ab.challenger, spec.canary)
    record = ABDecisionRecord(
        day=day,
        registered_model=ab.registered_model,
        champion=ab.champion,
        challenger=ab.challenger,
        symbols=ab.symbols,
        start=ab.start,
        periods=periods,
        looks=looks,
        decision=last.decision,
        why=last.why,
        config=spec.model_dump(),
        canary=canary,
    )
    rows = [
        {"day": lk.day, "periods": lk.periods, "mean": rounded(lk.mean), "lower": rounded(lk.lower), "upper": rounded(lk.upper),
         "p (always valid)": rounded(lk.p_value), "decision": lk.decision}
        for lk in looks[-14:]
    ]  # fmt: skip
    return dg.MaterializeResult(
        value=record,
        metadata={
            "decision": dg.MetadataValue.text(last.decision),
            "why": dg.MetadataValue.text(last.why),
            "champion": dg.MetadataValue.text(f"v{ab.champion}"),
            "challenger": dg.MetadataValue.text(f"v{ab.challenger}"),
            "periods": dg.MetadataValue.int(periods),
            "mean_difference": dg.MetadataValue.float(_finite(last.mean)),
            "sequence_lower": dg.MetadataValue.float(_finite(last.lower)),
            "sequence_upper": dg.MetadataValue.float(_finite(last.upper)),
            "p_value": dg.MetadataValue.float(last.p_value),
            "looks": table(rows),
            "chart": dg.MetadataValue.md(markdown_image(png, "running difference and its confidence sequence")),
            "mlflow_run": dg.MetadataValue.url(tracker.artifact_url(run_id, "ab/looks.png")),
            **({"canary": dg.MetadataValue.text(canary)} if canary else {}),
        },
    )


def _finite(value: float) -> float:
    """NaN for an unbounded end: Dagster's float metadata plots NaN as a gap, not as infinity."""
    return value if math.isfinite(value) else math.nan


def _start_canary(context: dg.AssetExecutionContext, tracker, name: str, version: str, config: CanaryConfig) -> str:
    """Start the challenger's canary unless one of it runs or ended already (a decision is repeated
    by every later look, the rollout happens once)."""
    if tracker.alias_version(name, CHALLENGER) != version:
        return f"not started: v{version} is no longer {name}'s challenger"
    existing = read_canary(tracker, name)
    if existing is not None and existing.version == version:
        return f"v{version}'s canary {existing.status.replace('_', ' ')} (share {existing.share:.0%})"
    state = start_canary(tracker, name, config)
    context.log.info(f"canary of {name} v{version} started at {state.share:.0%} of the traffic")
    return f"started: v{version} at {state.share:.0%} (champion v{tracker.alias_version(name, CHAMPION)})"


ab_decision_job = dg.define_asset_job(
    "ab_decision_job", selection=[ab_decision], description="the day's look of the champion/challenger paper A/B"
)


@dg.schedule(
    job=ab_decision_job, cron_schedule="0 1 * * *", execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED
)
def daily_ab_decision_schedule(context: dg.ScheduleEvaluationContext, paper_journal: PaperJournalResource):
    """At 01:00 UTC: the look of the day that just ended, when the journal holds both books."""
    day = context.scheduled_execution_time.astimezone(UTC).date() - timedelta(days=1)
    books = paper_journal.journal().books()
    if CHALLENGER_BOOK not in books:
        return dg.SkipReason(f"the paper journal has no challenger book ({', '.join(books) or 'no book'}): no A/B")
    return dg.RunRequest(run_key=f"ab-decision:{day}", partition_key=day.isoformat())


AB_ASSETS = [ab_decision]
AB_JOBS = [ab_decision_job]
AB_SCHEDULES = [daily_ab_decision_schedule]
