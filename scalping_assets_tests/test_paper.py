"""`scalping paper` on the local Deriv server: killed with SIGKILL while positions are open and started
again, it loses no trade and counts none twice; the journal then equals the batch replay of the same
ticks trade for trade (the parity asset's figures at 100 %); its metrics and progress say so. Champion
and challenger trade the same ticks side by side, each book equal to its own replay."""

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, date, datetime

import dagster as dg
import pandas as pd
import pytest

from scalping_assets.assets.trading import PaperJournalResource, daily_paper_parity_schedule, paper_parity
from scalping_assets.backtest.engine import ExecutionConfig
from scalping_assets.backtest.incremental import EngineState
from scalping_assets.backtest.promotion import crown
from scalping_assets.market.simulator import day_start_epoch
from scalping_assets.market.store import TickStore
from scalping_assets.models.tracking import CHALLENGER, CHAMPION
from scalping_assets.partitions import tick_partition
from scalping_assets.resources import MLflowResource, RecordIOManager, TickStoreResource
from scalping_assets.settings import Settings
from scalping_assets.testing.fake_contracts import Account
from scalping_assets.testing.fake_deriv import FakeDerivServer, ServerThread
from scalping_assets.trading import journal as J
from scalping_assets.trading.deriv_broker import DerivBroker
from scalping_assets.trading.journal import Journal, JournalError
from scalping_assets.trading.lineup import Lineup
from scalping_assets.trading.paper import PaperDesk, PaperMetrics, PaperTrader, warmup_seconds
from scalping_assets.trading.parity import day_parity, replay_start
from serving.bundle import OnnxPredictor

SYMBOL = "SIG_AR1"
DAY = date(2026, 1, 3)  # the day after the models' training day
START = day_start_epoch(DAY) + 3 * 3600
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SCALE = 40  # server seconds per wall second
# Long holds and two slots: a position is open most of the time, so the kill falls on one.
EXECUTION = ExecutionConfig(min_confidence=0.4, max_positions=2, max_hold_ticks=25, take_profit=2, stop_loss=3)


def _pandas(journal: Journal):
    return {name: journal.read(table) for name, table in (("signals", J.signals), ("fills", J.fills), ("orders", J.orders))}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s:.0f} s")
        time.sleep(0.2)


def test_killed_and_restarted_the_paper_trader_loses_no_trade_and_counts_none_twice(served_models, tmp_path):
    bundle = served_models.export("xgboost").folder
    predictor = OnnxPredictor(bundle)
    (tmp_path / "execution.json").write_text(EXECUTION.model_dump_json())
    url = f"sqlite:///{tmp_path / 'journal.sqlite'}"
    server = FakeDerivServer(seed=7, start=START, time_scale=SCALE, strict=True)
    with ServerThread(server) as thread:
        command = [sys.executable, "-m", "scalping_assets.cli", "paper", "--bundle", str(bundle)]
        command += ["--execution", str(tmp_path / "execution.json"), "--url", thread.url, "--symbols", SYMBOL]
        command += ["--journal", url, "--data-dir", str(tmp_path), "--progress-interval", "1"]
        first = subprocess.Popen([*command, "--duration", "300"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        journal = Journal(url)
        try:

            def trading_with_an_open_position() -> bool:
                saved = journal.checkpoint(SYMBOL)
                return saved is not None and bool(saved[2].positions) and len(journal.read(J.fills)) >= 5

            _wait(trading_with_an_open_position, 180, "the first process did not trade with a position open")
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
        _, killed_at, state, _ = journal.checkpoint(SYMBOL)
        open_at_kill = {p.order_id for p in state.positions}
        fills_at_kill = len(journal.read(J.fills))
        time.sleep(2)  # about 80 server ticks go by with no trader running
        port = _free_port()
        second = subprocess.Popen(
            [*command, "--duration", "10", "--metrics-port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        _wait(lambda: journal.checkpoint(SYMBOL)[1] > killed_at + 200, 120, "the second process did not trade on")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 0, out[-3000:]
        first_epoch, last_epoch, _, _ = journal.checkpoint(SYMBOL)
        epochs, quotes = server.between(
            SYMBOL, replay_start(first_epoch, first_epoch, warmup_seconds(predictor, SYMBOL)), last_epoch
        )
    assert server.schema_violations == []
    assert "from history" in out and "stopped: paper" in out
    assert f'scalping_paper_ticks_total{{book="champion",symbol="{SYMBOL}"}}' in metrics
    assert "scalping_paper_tick_to_decision_seconds_bucket" in metrics

    rows = _pandas(journal)
    fills = rows["fills"]
    assert fills_at_kill < len(fills[fills["broker"] == "paper"])
    assert open_at_kill <= set(fills["order_id"]), "a position open at the kill was never closed"
    # The ticks missed while nothing ran were traded from history, so the journal has no hole: it is
    # the batch replay of every tick from the first, trade for trade and signal for signal.
    ticks = pd.DataFrame({"epoch": epochs, "quote": quotes})
    parity = day_parity(
        predictor, EXECUTION, SYMBOL, ticks, first_epoch, (first_epoch, last_epoch + 1), rows["signals"], fills, rows["orders"]
    )
    f = parity.figures
    assert f["trades_backtest"] >= 20, f
    assert f["signal_match"] == 1.0 and f["trade_match"] == 1.0, parity.mismatches[:5]
    # Each trade's P&L equal to the bit; the sums differ only by their order of addition.
    assert f["abs_pnl_diff_max"] == 0.0 and f["pnl_ratio"] == pytest.approx(1.0, rel=1e-12)
    assert [m for m in parity.mismatches] == []
    print(json.dumps(f, indent=1, default=float))

    # The same through the paper_parity asset, as the Dagster UI runs it: ticks from the store, the
    # version's bundle from MLflow, the execution from the journal's session.
    store = TickStore(tmp_path / "ticks")
    store.write_day(SYMBOL, DAY, ticks[ticks["epoch"] >= day_start_epoch(DAY)])
    resources = {
        "tick_store": TickStoreResource(root=str(tmp_path / "ticks")),
        "mlflow_store": MLflowResource(
            tracking_uri=served_models.tracker.tracking_uri, artifact_root=str(served_models.root / "artifacts")
        ),
        "paper_journal": PaperJournalResource(url=url, bundle_cache=str(tmp_path / "cache")),
        "records": RecordIOManager(root=str(tmp_path / "records")),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [paper_parity], partition_key=tick_partition(DAY.isoformat(), SYMBOL), resources=resources, instance=instance,
            run_config=QUIET,
        )  # fmt: skip
    assert result.success
    record = result.asset_value("paper_parity")
    assert record.figures["trade_match"] == 1.0 and record.figures["pnl_ratio"] == pytest.approx(1.0, rel=1e-12)
    check = result.get_asset_check_evaluations()[0]
    assert check.passed and "0 mismatches, 0 unexplained" in check.description


def test_champion_and_challenger_trade_the_same_ticks_side_by_side_each_equal_to_its_replay(served_models, tmp_path):
    """Both variants, one connection: every tick reaches both books, each journaled apart, and each
    book's journal is its own model's batch replay of those ticks, signal for signal and trade for trade."""
    variants = {"champion": "xgboost", "challenger": "cnn"}
    predictors = {book: OnnxPredictor(served_models.export(kind).folder) for book, kind in variants.items()}
    journal = Journal(f"sqlite:///{tmp_path / 'j.sqlite'}")
    with pytest.raises(ValueError, match="R_100: not cleared by the promotion gate"):
        PaperTrader(predictors["champion"], EXECUTION, journal, ["R_100"])
    # By default a version trades its cleared symbols among the tracked ones, all of them if none is tracked.
    assert (
        predictors["champion"].manifest.traded(["R_100", SYMBOL]) == [SYMBOL] == predictors["champion"].manifest.traded(["R_100"])
    )
    metrics = PaperMetrics()
    books = [PaperTrader(p, EXECUTION, journal.other_book(b), [SYMBOL], metrics=metrics) for b, p in predictors.items()]
    server = FakeDerivServer(seed=7, start=START, time_scale=SCALE)
    with ServerThread(server) as thread:
        desk = PaperDesk(thread.url, books, progress_interval_s=0.5)

        async def run():
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(8, stop.set)
            return await desk.run(stop)

        stats = asyncio.run(run())
        saved = {b.book: b.journal.checkpoint(SYMBOL) for b in books}
        first_epoch = min(s[0] for s in saved.values())
        last_epoch = max(s[1] for s in saved.values())
        epochs, quotes = server.between(
            SYMBOL,
            replay_start(first_epoch, first_epoch, max(warmup_seconds(p, SYMBOL) for p in predictors.values())),
            last_epoch,
        )
    assert journal.books() == ["challenger", "champion"]
    # The same ticks: both started on the same first live tick and stopped on the same last one.
    assert saved["champion"][:2] == saved["challenger"][:2]
    assert stats["champion"].ticks == stats["challenger"].ticks and stats["champion"].ticks > stats["champion"].replayed > 1_000
    ticks = pd.DataFrame({"epoch": epochs, "quote": quotes})
    for book in books:
        rows = _pandas(book.journal)
        parity = day_parity(
            book.predictor, EXECUTION, SYMBOL, ticks, saved[book.book][0], (first_epoch, last_epoch + 1),
            rows["signals"], rows["fills"], rows["orders"],
        )  # fmt: skip
        f = parity.figures
        print(
            book.book,
            book.version,
            json.dumps({k: f[k] for k in ("signals_paper", "trades_paper", "trade_match")}, default=float),
        )
        assert f["trades_paper"] >= 5 and f["signal_match"] == 1.0 and f["trade_match"] == 1.0, parity.mismatches[:5]
        assert set(rows["signals"]["version"]) == {book.version}
    value = metrics.registry.get_sample_value
    for book in books:
        assert value("scalping_paper_ticks_total", {"book": book.book, "symbol": SYMBOL}) == stats[book.book].ticks
        assert value("scalping_paper_tick_to_decision_seconds_count", {"book": book.book}) > 100
        assert value("scalping_paper_trades_total", {"book": book.book, "broker": "paper"}) == stats[book.book].fills["paper"] > 0
        assert f"paper {book.book}" in book.progress() and "decision p99" in book.progress()


def test_venue_orders_are_split_between_the_books_by_the_canary_share(served_models, tmp_path):
    predictor = OnnxPredictor(served_models.export("xgboost").folder)
    journal = Journal(f"sqlite:///{tmp_path / 'j.sqlite'}")
    books = [PaperTrader(predictor, EXECUTION, journal.other_book(b), [SYMBOL]) for b in ("champion", "challenger")]
    orders = [f"{SYMBOL}-{START + i}" for i in range(4_000)]
    for share, tolerance in ((0.0, 0), (0.1, 0.02), (0.5, 0.03), (1.0, 0)):
        for book in books:
            book.challenger_share = share
        placed = {b.book: {o for o in orders if b.places(o)} for b in books}
        # Each opportunity goes to exactly one book, and the challenger's part is the share.
        assert placed["champion"].isdisjoint(placed["challenger"]) and placed["champion"] | placed["challenger"] == set(orders)
        assert abs(len(placed["challenger"]) / len(orders) - share) <= tolerance
    # Sticky: an order the challenger placed at 10 % is still the challenger's at 50 %.
    books[1].challenger_share = 0.1
    at_10 = {o for o in orders if books[1].places(o)}
    books[1].challenger_share = 0.5
    assert all(books[1].places(o) for o in at_10)


def test_a_journal_of_the_older_layout_is_refused_naming_the_file_and_left_as_it_is(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE paper_checkpoints (symbol TEXT PRIMARY KEY, version TEXT)")
        db.execute("INSERT INTO paper_checkpoints VALUES ('R_100', '3')")
    with pytest.raises(JournalError, match="old.sqlite: a paper journal of an older layout"):
        Journal(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT * FROM paper_checkpoints").fetchall() == [("R_100", "3")]


def test_the_daily_parity_schedule_requests_each_symbol_the_journal_traded_that_day(tmp_path):
    url = f"sqlite:///{tmp_path / 'j.sqlite'}"
    journal = Journal(url)
    with journal.transaction() as c:
        journal.save_checkpoint(c, SYMBOL, "m", "1", START, START + 7_200, EngineState())
        journal.save_checkpoint(c, "R_100", "m", "1", START - 5 * 86_400, START - 4 * 86_400, EngineState())
    resources = {"paper_journal": PaperJournalResource(url=url)}

    def requests(at: datetime):
        with dg.build_schedule_context(scheduled_execution_time=at, resources=resources) as context:
            return daily_paper_parity_schedule(context)

    [request] = requests(datetime(2026, 1, 4, 0, 45, tzinfo=UTC))
    assert request.partition_key == tick_partition(DAY.isoformat(), SYMBOL)
    assert "no trading on 2026-01-05" in requests(datetime(2026, 1, 6, 0, 45, tzinfo=UTC)).skip_message


VENUE_CASES = {
    # The venue settles a Rise/Fall contract on its own after its ticks.
    "rise_fall": ExecutionConfig(instrument="rise_fall", max_hold_ticks=5, min_confidence=0.4, max_positions=2, stake=10),
    # Sigma barriers are no money amounts: the broker sells the contract when the engine exits.
    "multiplier": ExecutionConfig(
        min_confidence=0.4, max_positions=2, max_hold_ticks=10, take_profit=2, stop_loss=3, stake=1_000
    ),
}


@pytest.mark.parametrize("case", sorted(VENUE_CASES))
def test_a_deriv_virtual_account_fills_the_paper_traders_orders_and_parity_explains_every_difference(
    served_models, tmp_path, monkeypatch, case
):
    execution = VENUE_CASES[case]
    predictor = OnnxPredictor(served_models.export("xgboost").folder)
    token = secrets.token_hex(16)  # the account's token, made here, passed through the environment only
    monkeypatch.setenv("DERIV_TOKEN", token)
    # 10 ticks a second: a buy and a sell reach the venue well within a tick, as on Deriv's 1 s feed.
    server = FakeDerivServer(seed=7, start=START, time_scale=10, strict=True, accounts={token: Account.numbered(1)})
    journal = Journal(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    with ServerThread(server) as thread:
        broker = DerivBroker.from_env(thread.url)
        trader = PaperTrader(predictor, execution, journal, [SYMBOL], [broker])

        async def session():
            await broker.connect()
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(30, stop.set)
            try:
                await PaperDesk(thread.url, [trader]).run(stop)
                await asyncio.sleep(2)  # contracts still open at the venue settle or stay open
                trader.collect_venue_fills()
            finally:
                await broker.disconnect()

        asyncio.run(session())
        first_epoch, last_epoch, _, _ = journal.checkpoint(SYMBOL)
        epochs, quotes = server.between(
            SYMBOL, replay_start(first_epoch, first_epoch, warmup_seconds(predictor, SYMBOL)), last_epoch
        )
    assert server.schema_violations == []
    rows = _pandas(journal)
    parity = day_parity(
        predictor,
        execution,
        SYMBOL,
        pd.DataFrame({"epoch": epochs, "quote": quotes}),
        first_epoch,
        (first_epoch, last_epoch + 1),
        rows["signals"],
        rows["fills"],
        rows["orders"],
    )
    assert parity.figures["trade_match"] == 1.0, "paper equals the backtest replay"
    venue = parity.venues["deriv"]
    print(case, json.dumps(venue, default=float), {m["why"] for m in parity.mismatches})
    assert venue["trades_paper"] >= 10 and venue["trades_deriv"] >= 10, venue
    assert [m for m in parity.mismatches if m["why"] == "unexplained"] == []
    # Orders both filled: the same entry tick but where the order reached the simulated venue after
    # its next tick (explained above), and the trades made alike pay the same to the cent.
    assert venue["entry_match"] >= 0.9 and venue["trades_matched"] >= 10, venue
    assert venue["abs_pnl_diff_max_matched"] <= 0.005 + 1e-9, venue


def test_the_desk_follows_the_registry_a_crowned_challenger_trades_on_in_the_champions_book(served_models, tmp_path, monkeypatch):
    """A canary completes while the desk trades: within its follow interval the champion's book trades
    the new champion from its checkpoint (no tick lost between the versions) and the challenger's book
    is gone, with no restart."""
    tracker = served_models.tracker
    name = "scalping-paper-follow"
    first = tracker.register(served_models.candidates["xgboost"].model_uri, name, {})
    crowned = tracker.register(served_models.candidates["cnn"].model_uri, name, {})  # both runs hold a bundle
    served_models.export("cnn")
    tracker.set_alias(name, CHAMPION, first)
    tracker.set_alias(name, CHALLENGER, crowned)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.tracking_uri)
    journal = Journal(f"sqlite:///{tmp_path / 'j.sqlite'}")
    lineup = Lineup(Settings(data_dir=tmp_path), journal, model=name, symbols=[SYMBOL], execution=lambda *_: EXECUTION)
    server = FakeDerivServer(seed=7, start=START, time_scale=SCALE)
    with ServerThread(server) as thread:
        desk = PaperDesk(thread.url, lineup.books(), lineup=lineup, follow_interval_s=0.5)
        assert [(b.book, b.version) for b in desk.books] == [("champion", first), ("challenger", crowned)]

        def complete() -> None:  # what the canary does when its last step held
            crown(tracker, name, crowned)
            tracker.delete_alias(name, CHALLENGER)

        async def run():
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.call_later(5, complete)
            loop.call_later(12, stop.set)
            return await desk.run(stop)

        asyncio.run(run())
        signals = journal.read(J.signals).sort_values("epoch")
        epochs, _ = server.between(SYMBOL, int(signals["epoch"].min()), int(signals["epoch"].max()))
    assert [(b.book, b.version) for b in desk.books] == [("champion", crowned)]
    before, after = signals[signals["version"] == first], signals[signals["version"] == crowned]
    assert len(before) > 50 and len(after) > 50 and before["epoch"].max() < after["epoch"].min()
    # The new book played on from the old one's checkpoint: the server ticks between the last signal of
    # the old version and the first of the new are only those without a signal, not the rebuild's time.
    skipped = ((epochs > before["epoch"].max()) & (epochs < after["epoch"].min())).sum()
    assert skipped <= 2, f"{skipped} ticks between the versions"
    assert journal.other_book("challenger").read(J.signals)["epoch"].max() < after["epoch"].min() + 2 * SCALE
