"""The paper journal on SQLite and on PostgreSQL: a fill reported twice is counted once, equity follows
the fills, a checkpoint survives a new process, and a transaction broken half-way writes nothing."""

import pytest
import sqlalchemy as sa

from scalping_assets.backtest.incremental import EngineState, Pending
from scalping_assets.trading import journal as J
from scalping_assets.trading.broker import Fill, Order
from scalping_assets.trading.journal import Journal


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.sqlite'}"
    return request.getfixturevalue("pg_url").replace("postgresql://", "postgresql+psycopg2://", 1)


def _fill(order_id: str, pnl: float, broker: str = "paper") -> Fill:
    return Fill(
        order_id=order_id,
        broker=broker,
        contract_id=order_id,
        symbol="R_100",
        side=1,
        entry_epoch=100,
        entry_spot=1000.0,
        exit_epoch=110,
        exit_spot=1001.0,
        reason="tp",
        buy_price=10.0,
        sell_price=10.0 + pnl,
        commission=0.05,
        pnl=pnl,
    )


def test_fills_count_once_and_equity_follows_them(url):
    journal = Journal(url, capital=1_000.0)
    with journal.transaction() as c:
        assert journal.fill(c, _fill("R_100-1", 2.5), {"pnl_net": 2.5})
        assert journal.fill(c, _fill("R_100-2", -1.0))
    with journal.transaction() as c:
        assert not journal.fill(c, _fill("R_100-1", 2.5)), "the same (broker, order) again"
        assert journal.fill(c, _fill("R_100-1", 2.4, broker="deriv")), "another broker's fill of that order"
    again = Journal(url, capital=1_000.0)  # a new process reads the equity back
    with again.transaction() as c:
        again.fill(c, _fill("R_100-3", 0.5))
    equity = again.read(J.equity, broker="paper").sort_values("seq")
    assert equity["equity"].tolist() == [1_002.5, 1_001.5, 1_002.0]
    assert len(again.read(J.fills)) == 4


def test_a_checkpoint_survives_and_a_broken_transaction_writes_nothing(url):
    journal = Journal(url)
    state = EngineState(
        ticks=12, last_epoch=500, pending=[Pending(tick=11, epoch=500, side=-1, order_id="R_100-500", placed=True)]
    )
    order = Order(id="R_100-500", symbol="R_100", side=-1, signal_epoch=500, instrument="multiplier", stake=10)
    with journal.transaction() as c:
        journal.save_checkpoint(c, "R_100", "m", "3", 400, 500, state)
        journal.order(c, "deriv", order, "placed", "contract-1")
    with journal.transaction() as c:
        journal.fill(c, _fill("R_100-400", 2.0, broker="deriv"))
    with pytest.raises(RuntimeError, match="killed"), journal.transaction() as c:
        journal.save_checkpoint(c, "R_100", "m", "3", 400, 501, EngineState(ticks=13, last_epoch=501))
        journal.fill(c, _fill("R_100-500", 1.0, broker="deriv"))
        raise RuntimeError("killed mid-tick")
    first, last, restored, version = Journal(url).checkpoint("R_100")
    assert (first, last, version) == (400, 500, "3")
    assert restored == state
    assert journal.read(J.fills)["order_id"].tolist() == ["R_100-400"]
    with journal.transaction() as c:  # the equity the rolled-back fill added is gone from the cache too
        journal.fill(c, _fill("R_100-401", 1.0, broker="deriv"))
    assert journal.read(J.equity, broker="deriv").sort_values("seq")["equity"].tolist() == [10_002.0, 10_003.0]
    open_orders = journal.open_orders("deriv")
    assert open_orders[["order_id", "contract_id", "status"]].values.tolist() == [["R_100-500", "contract-1", "placed"]]
    with sa.create_engine(url).connect() as c:  # one schema on both databases
        assert set(sa.inspect(c).get_table_names()) >= {t.name for t in J.metadata.sorted_tables}
