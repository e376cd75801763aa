"""Paper trading against its backtest: `paper_parity`, one (day, symbol) of the paper journal joined
with the batch replay of the same recorded ticks and model version (the rules: `trading.parity`)."""

from datetime import UTC, date, timedelta

import dagster as dg
import matplotlib.pyplot as plt
import numpy as np
from pydantic import Field

from scalping_assets.assets.display import rounded, table
from scalping_assets.backtest.engine import ExecutionConfig
from scalping_assets.market.simulator import day_start_epoch
from scalping_assets.partitions import TICK_PARTITIONS, tick_partition
from scalping_assets.plotting import figure_png, markdown_image
from scalping_assets.records import PaperParityRecord
from scalping_assets.resources import MLflowResource, TickStoreResource
from scalping_assets.trading import journal as J
from scalping_assets.trading.journal import CHAMPION_BOOK, Journal
from scalping_assets.trading.paper import warmup_seconds
from scalping_assets.trading.parity import LOOKAHEAD_SECONDS, DayParity, day_parity, replay_start
from serving.bundle import OnnxPredictor
from serving.registry import BundleRegistry

PARITY_CHECK = "paper_matches_backtest"
DAY = 86_400


class PaperJournalResource(dg.ConfigurableResource):
    """The paper trader's journal (`scalping paper`): SCALPING_PAPER_DB, else SQLite under the data folder."""

    url: str
    bundle_cache: str = "data/serving-cache"  # where a version's bundle is fetched to

    def journal(self, book: str = CHAMPION_BOOK) -> Journal:
        return Journal(self.url, book=book)


class PaperParityConfig(dg.Config):
    book: str = Field(default=CHAMPION_BOOK, description="the journal's book: champion, or challenger (traded beside it)")
    min_trade_match: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="share of the day's trades (paper and backtest) that must agree in entry, exit and reason",
    )


def _plot(parity: DayParity) -> bytes:
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for frame, label, column in ((parity.backtest_trades, "backtest replay", "pnl_net"), (parity.paper_fills, "paper", "pnl")):
        frame = frame.sort_values("exit_epoch")
        hours = (frame["exit_epoch"].to_numpy() % DAY) / 3600
        ax.step(hours, np.cumsum(frame[column].to_numpy()), where="post", label=f"{label} ({len(frame)} trades)")
    ax.set_xlabel("hour of the day (UTC, exit)")
    ax.set_ylabel("cumulative net P&L")
    ax.set_title(f"{parity.symbol} v{parity.version}: paper against its backtest replay")
    ax.legend()
    return figure_png(fig)


@dg.asset(
    partitions_def=TICK_PARTITIONS,
    group_name="trading",
    io_manager_key="records",
    kinds={"sqlite", "onnx"},
    description=(
        "One day of one symbol's paper trading joined with the batch replay of the same recorded ticks and model "
        "version: signal, entry and exit-reason match, |ΔP&L|, tracking error, paper/backtest P&L; a venue "
        "broker's fills (Deriv virtual account) against the paper fills."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            PARITY_CHECK,
            asset="paper_parity",
            description="Paper and backtest agree on the day's trades (entry, exit, reason) at least at min_trade_match",
        )
    ],
)
def paper_parity(
    context: dg.AssetExecutionContext,
    config: PaperParityConfig,
    tick_store: TickStoreResource,
    mlflow_store: MLflowResource,
    paper_journal: PaperJournalResource,
):  # unannotated: a MaterializeResult annotation would type the output Nothing, not the record

    keys = context.partition_key.keys_by_dimension
    day, symbol = date.fromisoformat(keys["date"]), keys["symbol"]
    journal = paper_journal.journal(config.book)
    saved = journal.checkpoint(symbol)
    lo = day_start_epoch(day)
    hi = lo + DAY
    if saved is None or saved[0] >= hi or saved[1] < lo:
        where = f"the paper journal ({paper_journal.url.split('://')[0]}, book {config.book})"
        raise dg.Failure(f"{where} holds no paper trading of {symbol} on {day}")
    first_epoch, last_epoch, _, _ = saved
    signals = journal.read(J.signals, symbol=symbol)
    day_signals = signals[(signals["epoch"] >= lo) & (signals["epoch"] < hi)]
    if day_signals.empty:
        raise dg.Failure(f"no signal of {symbol} journaled on {day}: nothing to compare")
    versions = day_signals["version"].value_counts()
    version = str(versions.index[0])
    if len(versions) > 1:
        context.log.warning(f"{symbol} on {day} traded several versions ({dict(versions)}): comparing v{version}'s")
    checkpoint_model = journal.read(J.checkpoints, symbol=symbol)["registered_model"].iloc[0]
    session = journal.latest_session(checkpoint_model, version)
    if session is None:
        raise dg.Failure(f"no paper session of {checkpoint_model} v{version} in the journal")
    execution = ExecutionConfig.model_validate_json(session["execution"])
    registry = BundleRegistry(mlflow_store.tracking_uri, paper_journal.bundle_cache)
    try:
        predictor = OnnxPredictor(registry.fetch(checkpoint_model, version), registered=(checkpoint_model, version))
    except LookupError as exc:
        raise dg.Failure(str(exc)) from exc
    start = replay_start(first_epoch, lo, warmup_seconds(predictor, symbol))
    ticks = tick_store.store().read(symbol, start, min(hi + LOOKAHEAD_SECONDS, last_epoch + 1))
    if ticks.empty:
        raise dg.Failure(f"no ticks of {symbol} stored from {start} for {day}: run `scalping collect` beside the paper trader")
    fills = journal.read(J.fills)
    fills = fills[fills["symbol"] == symbol]
    orders = journal.read(J.orders)
    parity = day_parity(
        predictor, execution, symbol, ticks, first_epoch, (lo, hi), day_signals, fills, orders[orders["symbol"] == symbol]
    )
    f = parity.figures
    unexplained = [m for m in parity.mismatches if m["why"] == "unexplained"]
    record = PaperParityRecord(
        day=day,
        symbol=symbol,
        registered_model=checkpoint_model,
        version=version,
        figures=f,
        venues=parity.venues,
        mismatches=parity.mismatches,
        execution=execution.model_dump(),
    )
    passed = not (f["trade_match"] < config.min_trade_match)  # NaN (no trade on either side) passes
    why_counts: dict[str, int] = {}
    for m in parity.mismatches:
        why_counts[m["why"]] = why_counts.get(m["why"], 0) + 1
    rows = [{"figure": k, "paper vs backtest": rounded(v, 6)} for k, v in f.items()]
    venue_rows = [{"broker": b, **{k: rounded(v, 6) for k, v in figures.items()}} for b, figures in parity.venues.items()]
    return dg.MaterializeResult(
        value=record,
        metadata={
            "parity": table(rows),
            **({"venues": table(venue_rows)} if venue_rows else {}),
            "mismatches": table([{"why": k, "count": v} for k, v in why_counts.items()] or [{"why": "none", "count": 0}]),
            "trade_match": dg.MetadataValue.float(float(np.nan_to_num(f["trade_match"], nan=1.0))),
            "signal_match": dg.MetadataValue.float(float(np.nan_to_num(f["signal_match"], nan=1.0))),
            "pnl_ratio": dg.MetadataValue.float(float(np.nan_to_num(f["pnl_ratio"]))),
            "tracking_error": dg.MetadataValue.float(float(f["tracking_error"])),
            "trades_paper": dg.MetadataValue.int(int(f["trades_paper"])),
            "pnl": dg.MetadataValue.md(markdown_image(_plot(parity), "paper vs backtest cumulative P&L")),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=PARITY_CHECK,
                passed=passed,
                severity=dg.AssetCheckSeverity.WARN,
                description=(
                    f"{f['trades_matched']} of the day's trades agree ({rounded(f['trade_match'], 4)}); "
                    f"{len(parity.mismatches)} mismatches, {len(unexplained)} unexplained"
                ),
                metadata={"trade_match": float(np.nan_to_num(f["trade_match"], nan=1.0)), "unexplained": len(unexplained)},
            )
        ],
    )


paper_parity_job = dg.define_asset_job(
    "paper_parity_job",
    selection=[paper_parity],
    partitions_def=TICK_PARTITIONS,
    description="paper trading against the backtest replay of the same day, one symbol",
)


@dg.schedule(
    job=paper_parity_job, cron_schedule="45 0 * * *", execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED
)
def daily_paper_parity_schedule(context: dg.ScheduleEvaluationContext, paper_journal: PaperJournalResource):
    """At 00:45 UTC: the day that just ended, for every symbol the paper journal traded on it."""
    day = context.scheduled_execution_time.astimezone(UTC).date() - timedelta(days=1)
    lo = day_start_epoch(day)
    saved = paper_journal.journal().read(J.checkpoints)
    traded = sorted(saved[(saved["first_epoch"] < lo + DAY) & (saved["last_epoch"] >= lo)]["symbol"])
    if not traded:
        return dg.SkipReason(f"the paper journal holds no trading on {day}")
    return [
        dg.RunRequest(run_key=f"paper-parity:{day}:{symbol}", partition_key=tick_partition(day.isoformat(), symbol))
        for symbol in traded
    ]


TRADING_ASSETS = [paper_parity]
TRADING_JOBS = [paper_parity_job]
TRADING_SCHEDULES = [daily_paper_parity_schedule]
