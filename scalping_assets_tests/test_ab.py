"""The `ab_decision` asset on a paper journal whose two books traded side by side: a planted better
challenger is promoted (and its canary started in the registry), equal books continue, a journal
without a challenger book fails naming what is missing; the daily schedule asks for the day that ended."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from scalping_assets.assets.ab import ab_decision, daily_ab_decision_schedule
from scalping_assets.assets.trading import PaperJournalResource
from scalping_assets.backtest.engine import ExecutionConfig
from scalping_assets.backtest.incremental import EngineState
from scalping_assets.features.dataset import DatasetSpec
from scalping_assets.market.simulator import day_start_epoch
from scalping_assets.models.tracking import CHALLENGER, CHAMPION, Tracker
from scalping_assets.monitoring.live import ServedVersion
from scalping_assets.resources import MLflowResource, RecordIOManager
from scalping_assets.trading.ab import ab_looks, versioned_fills
from scalping_assets.trading.broker import Fill, Order
from scalping_assets.trading.canary_state import read_canary
from scalping_assets.trading.journal import CHALLENGER_BOOK, CHAMPION_BOOK, Journal
from scalping_assets.trading.paper_band import PaperBandCheck
from scalping_assets.trading.sequential import SequentialConfig

FIRST = date(2026, 3, 2)
SYMBOLS = ("R_100", "SIG_AR1")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def write_book(journal: Journal, model: str, version: str, days: int, edge: float, seed: int, start_hour: int = 5) -> None:
    """A book's journal as the paper trader writes it: per symbol a trade every 2 minutes from
    `start_hour` of the first day, each a signal, a paper order and a paper fill of net P&L ~ N(edge, 1)."""
    rng = np.random.default_rng(seed)
    start = day_start_epoch(FIRST) + start_hour * 3600
    end = day_start_epoch(FIRST) + days * 86_400
    with journal.transaction() as c:
        for symbol in SYMBOLS:
            epochs = np.arange(start, end - 60, 120)
            pnl = rng.normal(edge, 1.0, len(epochs))
            for epoch, value in zip(epochs.tolist(), pnl.tolist(), strict=True):
                order = Order(
                    id=Order.id_of(symbol, epoch), symbol=symbol, side=1, signal_epoch=epoch, instrument="multiplier", stake=10
                )
                journal.signal(c, symbol, epoch, version, 1, (0.1, 0.2, 0.7))
                journal.order(c, "paper", order, "filled", entry_epoch=epoch + 1)
                fill = Fill(
                    order_id=order.id, broker="paper", contract_id=order.id, symbol=symbol, side=1, entry_epoch=epoch + 1,
                    entry_spot=100.0, exit_epoch=epoch + 30, exit_spot=100.0, reason="timeout", buy_price=10.0,
                    sell_price=10.0 + value, commission=0.0, pnl=value,
                )  # fmt: skip
                journal.fill(c, fill, {"pnl_net": value})
            journal.save_checkpoint(c, symbol, model, version, start, int(epochs[-1]) + 60, EngineState())
    journal.start_session(model, version, SYMBOLS, "{}", ["paper"])


@dataclass
class Registry:
    root: Path
    tracker: Tracker
    name: str
    champion: str
    challenger: str


@pytest.fixture
def registry(tmp_path):
    """A real MLflow registry (SQLite) with two versions of one model: champion and challenger. The A/B
    reads the journal and moves aliases; it loads no model, so the versions hold none."""
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "artifacts"))
    with tracker.run("trained") as run:
        run_id = run.run_id
    name = "scalping-ab-test"
    tracker.client.create_registered_model(name)
    champion, challenger = (
        str(tracker.client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id).version) for _ in range(2)
    )
    tracker.set_alias(name, CHAMPION, champion)
    tracker.set_alias(name, CHALLENGER, challenger)
    return Registry(tmp_path, tracker, name, champion, challenger)


def _materialize(registry: Registry, url: str, day: date, **config):
    resources = {
        "mlflow_store": MLflowResource(
            tracking_uri=registry.tracker.tracking_uri, artifact_root=str(registry.root / "artifacts")
        ),
        "paper_journal": PaperJournalResource(url=url),
        "records": RecordIOManager(root=str(registry.root / "records")),
    }
    run_config = QUIET | {"ops": {"ab_decision": {"config": config}}}
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [ab_decision], partition_key=day.isoformat(), resources=resources, instance=instance, run_config=run_config,
            raise_on_error=False,
        )  # fmt: skip


def test_a_better_challenger_is_promoted_and_its_canary_started(registry, tmp_path):
    tracker, name, champion, challenger = registry.tracker, registry.name, registry.champion, registry.challenger
    url = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    journal = Journal(url)
    write_book(journal, name, champion, days=4, edge=0.0, seed=1)
    write_book(journal.other_book(CHALLENGER_BOOK), name, challenger, days=4, edge=0.15, seed=2)
    result = _materialize(registry, url, FIRST + timedelta(days=3))
    assert result.success
    record = result.asset_value("ab_decision")
    print(
        *(
            f"{lk.day} {lk.periods} {lk.mean:+.3f} [{lk.lower:+.3f}, {lk.upper:+.3f}] p={lk.p_value:.3g} {lk.decision}"
            for lk in record.looks
        ),
        sep="\n",
    )
    assert (record.champion, record.challenger, record.symbols) == (champion, challenger, list(SYMBOLS))
    assert [lk.day for lk in record.looks] == [(FIRST + timedelta(days=i)).isoformat() for i in range(4)]
    # From 05:00 of the first day: 19 whole hours, then 24 a day; the books stopped a minute before the
    # last day ended, so its last hour is not whole.
    assert [lk.periods for lk in record.looks] == [19, 43, 67, 90] and record.periods == 90
    assert record.decision == "promote" and record.looks[-1].lower > 0
    canary = read_canary(tracker, name)
    assert canary is not None and canary.status == "running" and canary.version == challenger and canary.share > 0
    assert record.canary.startswith(f"started: v{challenger}")
    # The look's MLflow run: the running statistic per look, the chart.
    [run] = tracker.search_runs(f"tags.registered_model = '{name}' and tags.decision = 'promote'")
    assert run.data.metrics["p_value"] == pytest.approx(record.looks[-1].p_value)
    materialization = result.asset_materializations_for_node("ab_decision")[0]
    assert {"decision", "why", "looks", "chart", "p_value", "mlflow_run"} <= set(materialization.metadata)

    # A later look repeats the decision and does not start the rollout again.
    again = _materialize(registry, url, FIRST + timedelta(days=3)).asset_value("ab_decision")
    assert again.decision == "promote" and again.canary.startswith(f"v{challenger}'s canary running")


def test_equal_books_continue_and_the_pairing_is_by_hour_on_the_same_ticks(registry, tmp_path):
    name, champion, challenger = registry.name, registry.champion, registry.challenger
    journal = Journal(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    write_book(journal, name, champion, days=3, edge=0.0, seed=3)
    write_book(journal.other_book(CHALLENGER_BOOK), name, challenger, days=3, edge=0.0, seed=4)
    config = SequentialConfig()
    ab, looks, periods = ab_looks(journal, journal.other_book(CHALLENGER_BOOK), FIRST + timedelta(days=2), config)
    assert [lk.decision for lk in looks] == ["continue"] * 3
    assert 0 < looks[-1].p_value <= 1 and looks[-1].lower < 0 < looks[-1].upper
    # The first look's mean is the hourly difference of the two books' P&L, computed here directly.
    fills = {b: versioned_fills(journal.other_book(b)) for b in (CHAMPION_BOOK, CHALLENGER_BOOK)}
    first_hour = -(-ab.start // 3600) * 3600
    day_end = day_start_epoch(FIRST) + 86_400

    def hourly(frame):
        inside = frame[(frame["exit_epoch"] >= first_hour) & (frame["exit_epoch"] < day_end)]
        return inside.groupby((inside["exit_epoch"] - first_hour) // 3600)["pnl"].sum()

    direct = (hourly(fills[CHALLENGER_BOOK]) - hourly(fills[CHAMPION_BOOK])).mean()
    assert looks[0].mean == pytest.approx(direct, rel=1e-12)
    assert periods == 19 + 24 + 23


def test_without_a_challenger_book_the_decision_fails_naming_what_is_missing(registry, tmp_path):
    name, champion = registry.name, registry.champion
    url = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    write_book(Journal(url), name, champion, days=1, edge=0.0, seed=5)
    result = _materialize(registry, url, FIRST)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert (
        "the challenger book" in failure.step_failure_data.error.message
        and "has no signal" in failure.step_failure_data.error.message
    )

    resources = {"paper_journal": PaperJournalResource(url=url)}

    def requests(at: datetime):
        with dg.build_schedule_context(scheduled_execution_time=at, resources=resources) as context:
            return daily_ab_decision_schedule(context)

    assert "no challenger book" in requests(datetime(2026, 3, 3, 1, tzinfo=UTC)).skip_message
    write_book(Journal(url).other_book(CHALLENGER_BOOK), name, "99", days=1, edge=0.0, seed=6)
    assert requests(datetime(2026, 3, 3, 1, tzinfo=UTC)).partition_key == "2026-03-02"


def test_a_config_out_of_range_is_refused_naming_the_field(registry, tmp_path):
    result = _materialize(registry, f"sqlite:///{tmp_path / 'j.sqlite'}", FIRST, alpha=1.5, canary={"steps": [0.5, 0.1]})
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message + str(failure.step_failure_data.error.cause)
    assert "alpha" in message and "less than 1" in message and "steps must increase" in message, message


def _served(version: str, expectancy: float, sharpe_per_trade: float) -> ServedVersion:
    """A version's backtest figures as MLflow holds them (`backtest/...` metrics of its backtest run)."""
    metrics = {"backtest/trades": 5_000.0, "backtest/win_rate": 0.55, "backtest/expectancy": expectancy}
    metrics |= {"backtest/total_pnl_net": 5_000 * expectancy, "backtest/sharpe_per_trade": sharpe_per_trade}
    spec = DatasetSpec(symbols=list(SYMBOLS), start=FIRST, end=FIRST)
    return ServedVersion("m", version, "run", "backtest-run", spec, ExecutionConfig(), metrics, 0.5)


def test_the_paper_band_check_breaches_when_the_challenger_trades_below_its_backtest(tmp_path):
    journal = Journal(f"sqlite:///{tmp_path / 'journal.sqlite'}").other_book(CHALLENGER_BOOK)
    write_book(journal, "m", "2", days=1, edge=0.0, seed=7)  # earns nothing per trade, sd 1
    since = float(day_start_epoch(FIRST) + 20 * 3600)  # the step's last 4 hours: about 240 trades
    # Backtested at 0.2 a trade with sd 1 (Sharpe 0.2): 240 trades should make 48 ± 3·15.5.
    check = PaperBandCheck(journal, _served("2", 0.2, 0.2))
    why = check.breach(since)
    assert why is not None and "below its backtest band" in why and "v2" in why, why
    # The same trades against a backtest of 0.01 a trade with sd 2: 2.4 ± 3·31, within the band.
    assert PaperBandCheck(journal, _served("2", 0.01, 0.005)).breach(since) is None
    # Too few trades since the step began judge nothing; another version's trades are not counted.
    assert check.breach(float(day_start_epoch(FIRST) + 86_400 - 300)) is None
    assert PaperBandCheck(journal, _served("3", 0.2, 0.2)).breach(since) is None
