"""Collected days drive the graph: the days `scalping collect` has completed become `ticks` partitions.

The collector stores only ticks up to the epoch through which it holds every tick (see
`market/collector.py`), so a stored tick on day d + 1 means day d is complete in the store. The sensor
requests `daily_job` (ticks, then features) for each such day not requested before, with the `ticks`
source `collected`: the asset reads the stored day (the checks flag a gap in it) and backfills a day
the collector never stored from Deriv's history. Days before the collector's first stored day are
not its to report: a partition backfill in the UI fills them from history. Then, for each such day the
service logged predictions of, the day's `monitoring_job`: its predictions are judged once its ticks
are in (with the simulator, `daily_monitoring_schedule` does it by the clock).

It runs only when the deployment's tick source is Deriv (`SCALPING_TICK_SOURCE=deriv`); with the
simulator, `daily_ticks_schedule` makes the days.
"""

from __future__ import annotations

import json
import time
from datetime import date, timedelta

import dagster as dg

from scalping_assets.automation import monitoring_job
from scalping_assets.market.store import TickStore, epoch_day
from scalping_assets.monitoring.predlog import day_files
from scalping_assets.partitions import DAILY, SYMBOLS, tick_partition
from scalping_assets.resources import TickStoreResource
from scalping_assets.schedules import daily_job
from scalping_assets.settings import Settings

MONITORING_CURSOR = "monitoring"  # the cursor's entry for the last day whose monitoring was requested
PENDING_CURSOR = "monitoring_pending"  # completed days whose prediction log is still being written
LOG_SETTLE_S = 5.0  # seconds a day's log files stay unchanged before it is consolidated
MAX_DAYS_PER_SYMBOL = 31  # requests per symbol and evaluation: a long outage is caught up over a few ticks


def completed_days(store: TickStore, symbol: str, after: date | None, first: date) -> list[date]:
    """Days of `symbol` the collector has completed in `store`, later than `after` and not before
    `first` (the partitions' first day), oldest first, at most `MAX_DAYS_PER_SYMBOL`."""
    stored = store.days(symbol)
    last_epoch = store.last_epoch(symbol)
    if not stored or last_epoch is None:
        return []
    through = epoch_day(last_epoch) - timedelta(days=1)  # the day of the newest tick is still being collected
    day = max(stored[0], first, after + timedelta(days=1) if after else first)
    days = []
    while day <= through and len(days) < MAX_DAYS_PER_SYMBOL:
        days.append(day)
        day += timedelta(days=1)
    return days


@dg.sensor(jobs=[daily_job, monitoring_job], minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.STOPPED)
def collected_days_sensor(context: dg.SensorEvaluationContext, tick_store: TickStoreResource):
    """Ticks and features of every day the collector completed, once each, then the day's monitoring
    (prediction log, drift; live performance follows it): the cursor holds the last day requested per
    symbol and for monitoring, the run keys make a repeat a no-op."""
    if Settings().tick_source != "deriv":
        return dg.SkipReason("SCALPING_TICK_SOURCE is simulator: daily_ticks_schedule makes the days")
    cursor: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    store, first = tick_store.store(), DAILY.start.date()
    requests, completed = [], set()
    for symbol in SYMBOLS.get_partition_keys():
        after = date.fromisoformat(cursor[symbol]) if symbol in cursor else None
        for day in completed_days(store, symbol, after, first):
            requests.append(
                dg.RunRequest(
                    run_key=f"collected:{day}:{symbol}",
                    job_name=daily_job.name,
                    partition_key=tick_partition(day.isoformat(), symbol),
                    run_config={"ops": {"ticks": {"config": {"source": "collected"}}}},
                )
            )
            cursor[symbol] = day.isoformat()
            completed.add(day)
    # A day's predictions are judged once its ticks are in: after the day's daily_job runs, by request
    # order. A day the service logged nothing for (it was not running, or nobody asked) has nothing to
    # judge; a day whose log files changed within LOG_SETTLE_S waits for the next evaluation: the
    # collector completes a day at its first tick past midnight, while the service may still be writing
    # the answers in flight to the day's last ticks, and a consolidation then would miss them.
    monitored = date.fromisoformat(cursor[MONITORING_CURSOR]) if MONITORING_CURSOR in cursor else None
    pending = set(cursor.get(PENDING_CURSOR, [])) | {d.isoformat() for d in completed if monitored is None or d > monitored}
    log, waiting = Settings().prediction_log_dir(), []
    for key in sorted(pending):
        day = date.fromisoformat(key)
        files = day_files(log, day)
        if files and time.time() - max(f.stat().st_mtime for f in files) < LOG_SETTLE_S:
            waiting.append(key)
            continue
        if files:
            requests.append(dg.RunRequest(run_key=f"monitoring:{day}", job_name=monitoring_job.name, partition_key=key))
        cursor[MONITORING_CURSOR] = max(key, cursor.get(MONITORING_CURSOR, key))
    cursor[PENDING_CURSOR] = waiting
    if not requests:
        return dg.SensorResult(skip_reason=f"no newly completed day in {store.root}", cursor=json.dumps(cursor, sort_keys=True))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))
