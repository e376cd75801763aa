"""The paper trader's journal: signals, orders, fills and equity, and each symbol's checkpoint.

One SQL schema (SQLAlchemy Core) on PostgreSQL when a URL is configured (`SCALPING_PAPER_DB`), a
SQLite file under the data folder otherwise. What makes a restart lose nothing and count nothing twice:

- **One transaction per tick.** The tick's signal, the orders it placed, the entries it filled, the
  paper fills it closed and the symbol's checkpoint (the last epoch and the engine's whole state) are
  written together. A process killed mid-tick leaves the journal at the previous tick; the restarted
  process reads the checkpoint and replays every later tick from Deriv's history, which the engine
  turns into the same decisions (it is deterministic), written exactly once.
- **Keys.** A fill is keyed by (broker, order id) and an order id is the symbol and its signal epoch:
  a venue's fill reported again after a restart is recognised, not counted twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..backtest.incremental import EngineState
from .broker import Fill, Order

metadata = sa.MetaData()
CHAMPION_BOOK, CHALLENGER_BOOK = "champion", "challenger"


def BOOK() -> sa.Column:  # noqa: N802 (read as a column of the table definitions below)
    """The book a row belongs to: the champion's and the challenger's trading, side by side on the same
    ticks, are journaled apart (each its own checkpoints, orders, fills and equity)."""
    return sa.Column("book", sa.String, primary_key=True)


sessions = sa.Table(
    "paper_sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("book", sa.String, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),  # wall clock, seconds
    sa.Column("registered_model", sa.String, nullable=False),
    sa.Column("version", sa.String, nullable=False),
    sa.Column("symbols", sa.String, nullable=False),
    sa.Column("execution", sa.Text, nullable=False),  # the ExecutionConfig as JSON
    sa.Column("brokers", sa.String, nullable=False),
)
checkpoints = sa.Table(
    "paper_checkpoints",
    metadata,
    BOOK(),
    sa.Column("symbol", sa.String, primary_key=True),
    sa.Column("registered_model", sa.String, nullable=False),
    sa.Column("version", sa.String, nullable=False),
    sa.Column("first_epoch", sa.BigInteger, nullable=False),  # the first tick traded on
    sa.Column("last_epoch", sa.BigInteger, nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # EngineState as JSON
)
signals = sa.Table(
    "paper_signals",
    metadata,
    BOOK(),
    sa.Column("symbol", sa.String, primary_key=True),
    sa.Column("epoch", sa.BigInteger, primary_key=True),
    sa.Column("version", sa.String, nullable=False),
    sa.Column("side", sa.SmallInteger, nullable=False),
    sa.Column("p_down", sa.Float, nullable=False),
    sa.Column("p_neutral", sa.Float, nullable=False),
    sa.Column("p_up", sa.Float, nullable=False),
)
orders = sa.Table(
    "paper_orders",
    metadata,
    BOOK(),
    sa.Column("broker", sa.String, primary_key=True),
    sa.Column("order_id", sa.String, primary_key=True),
    sa.Column("symbol", sa.String, nullable=False),
    sa.Column("signal_epoch", sa.BigInteger, nullable=False),
    sa.Column("side", sa.SmallInteger, nullable=False),
    # placed (sent), filled, rejected (the engine did not fill it: why), late (filled, never placed)
    sa.Column("status", sa.String, nullable=False),
    sa.Column("why", sa.String),
    sa.Column("contract_id", sa.String),
    sa.Column("entry_epoch", sa.BigInteger),
    sa.Column("order", sa.Text, nullable=False),  # the Order as JSON
)
fills = sa.Table(
    "paper_fills",
    metadata,
    BOOK(),
    sa.Column("broker", sa.String, primary_key=True),
    sa.Column("order_id", sa.String, primary_key=True),
    sa.Column("contract_id", sa.String, nullable=False),
    sa.Column("symbol", sa.String, nullable=False),
    sa.Column("side", sa.SmallInteger, nullable=False),
    sa.Column("entry_epoch", sa.BigInteger, nullable=False),
    sa.Column("entry_spot", sa.Float, nullable=False),
    sa.Column("exit_epoch", sa.BigInteger, nullable=False),
    sa.Column("exit_spot", sa.Float, nullable=False),
    sa.Column("reason", sa.String, nullable=False),
    sa.Column("buy_price", sa.Float, nullable=False),
    sa.Column("sell_price", sa.Float, nullable=False),
    sa.Column("commission", sa.Float, nullable=False),
    sa.Column("pnl", sa.Float, nullable=False),
    sa.Column("trade", sa.Text),  # paper: the engine's trade row as JSON
)
equity = sa.Table(
    "paper_equity",
    metadata,
    BOOK(),
    sa.Column("broker", sa.String, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),  # the fill's number for its broker
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("equity", sa.Float, nullable=False),
)


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{(Path(data_dir) / 'paper' / 'journal.sqlite').resolve()}"


class JournalError(RuntimeError):
    pass


class Journal:
    """One book's rows of the tables above on one database; every write is a transaction."""

    def __init__(self, url: str, capital: float = 10_000.0, book: str = CHAMPION_BOOK, *, engine: sa.Engine | None = None):
        self.url = url
        self.capital = capital
        self.book = book
        self._equity: dict[str, tuple[int, float]] = {}  # broker -> (fills, equity) after the last fill
        if engine is not None:  # another book of the same database
            self.engine = engine
            return
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            if self.engine.url.database not in (None, "", ":memory:"):
                Path(self.engine.url.database).parent.mkdir(parents=True, exist_ok=True)

            # WAL: readers (the parity asset) never block the trader; NORMAL: a commit survives a killed
            # process (what the restart needs), only a power loss may take the last ones back.
            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(connection, _record) -> None:
                cursor = connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

        _refuse_older_schema(self.engine)
        metadata.create_all(self.engine)

    def other_book(self, book: str, capital: float | None = None) -> Journal:
        """The same database's journal of another book (one connection pool for both)."""
        return Journal(self.url, self.capital if capital is None else capital, book, engine=self.engine)

    def _insert(self, table: sa.Table):
        """INSERT that leaves an existing key alone (a fill or order reported again)."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table).on_conflict_do_nothing()

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.begin() as connection:
                yield connection
        except BaseException:
            self._equity.clear()  # what the rolled-back fills added
            raise

    # -- sessions and checkpoints -----------------------------------------------------------------

    def start_session(
        self, registered_model: str, version: str, symbols: Iterable[str], execution: str, brokers: Iterable[str]
    ) -> int:
        with self.transaction() as c:
            row = c.execute(
                sessions.insert().values(
                    book=self.book,
                    started_at=time.time(),
                    registered_model=registered_model,
                    version=version,
                    symbols=",".join(symbols),
                    execution=execution,
                    brokers=",".join(brokers),
                )
            )
            return int(row.inserted_primary_key[0])

    def checkpoint(self, symbol: str) -> tuple[int, int, EngineState, str] | None:
        """(first epoch, last epoch, engine state, version) the symbol's trading stopped at, or None."""
        with self.engine.connect() as c:
            row = (
                c.execute(sa.select(checkpoints).where(self._mine(checkpoints) & (checkpoints.c.symbol == symbol)))
                .mappings()
                .first()
            )
        if row is None:
            return None
        return row["first_epoch"], row["last_epoch"], EngineState.model_validate_json(row["state"]), row["version"]

    def save_checkpoint(
        self,
        c: sa.Connection,
        symbol: str,
        registered_model: str,
        version: str,
        first_epoch: int,
        last_epoch: int,
        state: EngineState,
    ) -> None:
        values = {"registered_model": registered_model, "version": version, "last_epoch": last_epoch}
        values["state"] = state.model_dump_json()
        updated = c.execute(
            sa.update(checkpoints).where(self._mine(checkpoints) & (checkpoints.c.symbol == symbol)).values(**values)
        )
        if updated.rowcount == 0:
            c.execute(checkpoints.insert().values(book=self.book, symbol=symbol, first_epoch=first_epoch, **values))

    # -- one tick's events ------------------------------------------------------------------------

    def signal(self, c: sa.Connection, symbol: str, epoch: int, version: str, side: int, proba) -> None:
        c.execute(
            self._insert(signals).values(
                book=self.book,
                symbol=symbol,
                epoch=epoch,
                version=version,
                side=side,
                p_down=float(proba[0]),
                p_neutral=float(proba[1]),
                p_up=float(proba[2]),
            )
        )

    def order(
        self,
        c: sa.Connection,
        broker: str,
        order: Order,
        status: str,
        contract_id: str | None = None,
        entry_epoch: int | None = None,
    ) -> None:
        c.execute(
            self._insert(orders).values(
                book=self.book,
                broker=broker,
                order_id=order.id,
                symbol=order.symbol,
                signal_epoch=order.signal_epoch,
                side=order.side,
                status=status,
                contract_id=contract_id,
                entry_epoch=entry_epoch,
                order=order.model_dump_json(),
            )
        )

    def order_status(
        self,
        c: sa.Connection,
        broker: str,
        order_id: str,
        status: str,
        *,
        why: str | None = None,
        entry_epoch: int | None = None,
        contract_id: str | None = None,
    ) -> None:
        values = {"status": status}
        values |= {k: v for k, v in {"why": why, "entry_epoch": entry_epoch, "contract_id": contract_id}.items() if v is not None}
        mine = self._mine(orders) & (orders.c.broker == broker) & (orders.c.order_id == order_id)
        c.execute(sa.update(orders).where(mine).values(**values))

    def fill(self, c: sa.Connection, fill: Fill, trade: dict | None = None) -> bool:
        """Record a closed position once; False when (broker, order id) was recorded before."""
        row = fill.model_dump() | {"book": self.book, "trade": None if trade is None else json.dumps(trade, default=float)}
        inserted = c.execute(self._insert(fills).values(**row)).rowcount
        if not inserted:
            return False
        # The last figure is cached; a rolled-back transaction drops the cache (`transaction`).
        seq, value = self._equity.get(fill.broker) or self._equity_of(c, fill.broker)
        c.execute(
            equity.insert().values(
                book=self.book, broker=fill.broker, seq=seq + 1, epoch=fill.exit_epoch, equity=value + fill.pnl
            )
        )
        self._equity[fill.broker] = (seq + 1, value + fill.pnl)
        return True

    def _equity_of(self, c: sa.Connection, broker: str) -> tuple[int, float]:
        row = c.execute(
            sa.select(equity.c.seq, equity.c.equity)
            .where(self._mine(equity) & (equity.c.broker == broker))
            .order_by(equity.c.seq.desc())
            .limit(1)
        ).first()
        return (0, self.capital) if row is None else (int(row[0]), float(row[1]))

    # -- reading back -----------------------------------------------------------------------------

    def open_orders(self, broker: str) -> pd.DataFrame:
        """Orders of `broker` placed or filled and without a fill yet (what a restart resumes)."""
        query = (
            sa.select(orders)
            .outerjoin(
                fills,
                (fills.c.book == orders.c.book) & (fills.c.broker == orders.c.broker) & (fills.c.order_id == orders.c.order_id),
            )
            .where(
                self._mine(orders)
                & (orders.c.broker == broker)
                & fills.c.order_id.is_(None)
                & orders.c.status.in_(["placed", "filled", "late"])
            )
        )
        with self.engine.connect() as c:
            return pd.read_sql(query, c)

    def latest_session(self, registered_model: str, version: str) -> dict | None:
        """The latest session of that model version (its execution config, brokers), or None."""
        query = (
            sa.select(sessions)
            .where(self._mine(sessions) & (sessions.c.registered_model == registered_model) & (sessions.c.version == version))
            .order_by(sessions.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as c:
            row = c.execute(query).mappings().first()
        return None if row is None else dict(row)

    def read(self, table: sa.Table, **where) -> pd.DataFrame:
        """This book's rows of `table` (equal to each `where` column's value)."""
        query = sa.select(table).where(self._mine(table))
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        with self.engine.connect() as c:
            return pd.read_sql(query, c)

    def books(self) -> list[str]:
        """Every book the database holds a session of."""
        with self.engine.connect() as c:
            return sorted(c.execute(sa.select(sessions.c.book).distinct()).scalars())

    def _mine(self, table: sa.Table):
        return table.c.book == self.book


def _refuse_older_schema(engine: sa.Engine) -> None:
    """A journal written before books existed has no `book` column: creating the tables would leave
    it as it is and every write would fail; say what to do instead (nothing is changed or lost)."""
    inspector = sa.inspect(engine)
    if inspector.has_table(checkpoints.name) and "book" not in {c["name"] for c in inspector.get_columns(checkpoints.name)}:
        raise JournalError(
            f"{engine.url.render_as_string()}: a paper journal of an older layout (no book column); "
            "move it away (or point SCALPING_PAPER_DB at a new database) and the trader starts a new one"
        )
