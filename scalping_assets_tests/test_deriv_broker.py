"""The Deriv broker against the local Deriv server: a virtual account's contracts bought, settled on the
server's own ticks by Deriv's rules (deriv-costs.md), sold, updated and resumed, every message schema-valid."""

import asyncio
import json
import math
import os
import secrets
import subprocess
import sys
import time

import numpy as np
import pytest

from scalping_assets.backtest.engine import ExecutionConfig
from scalping_assets.backtest.instruments import instrument_terms
from scalping_assets.market.deriv_client import ConnectionLost, DerivAPIError, DerivClient
from scalping_assets.market.deriv_schema import MASK, call_of, validate_request
from scalping_assets.market.symbols import get_symbol
from scalping_assets.testing.fake_contracts import Account, APIError, ContractBook
from scalping_assets.testing.fake_deriv import FakeDerivServer, ServerThread
from scalping_assets.testing.server_process import free_port
from scalping_assets.trading.broker import BrokerError, Fill, Order
from scalping_assets.trading.deriv_broker import DerivBroker, RealAccountRefused

START = 1_767_312_000  # 2026-01-02 00:00 UTC, as the protocol tests
MULT_SYMBOL, MULTIPLIER, STAKE = "1HZ100V", 10, 10.0  # the catalog's commission: 0.000504 at x10
RISE_FALL_SYMBOL = "SIG_AR1"  # the one symbol with a Rise/Fall payout ratio in the catalog (2.0)
WAIT_S = 60.0  # the most any settlement may take here (a few seconds at 40x)


@pytest.fixture
def venue(monkeypatch):
    """The local server in strict mode, a virtual and a real-money account, their tokens in the environment."""
    demo, real = secrets.token_hex(16), secrets.token_hex(16)
    accounts = {demo: Account.numbered(1001), real: Account.numbered(1002, is_virtual=False)}
    fake = FakeDerivServer(seed=4, start=START, time_scale=40, strict=True, accounts=accounts)
    monkeypatch.setenv("DERIV_TOKEN", demo)
    monkeypatch.setenv("DERIV_REAL_TOKEN", real)
    with ServerThread(fake) as thread:
        yield fake, thread.url
    # Every message the server sent followed its receive schema, and every request it got its send schema.
    assert fake.schema_violations == []
    for request in fake.requests:
        validate_request(request)


def run(coro):
    return asyncio.run(coro)


def multiplier_order(n: int, side: int = 1, take_profit: float | None = None, stop_loss: float | None = None) -> Order:
    return Order(
        id=Order.id_of(MULT_SYMBOL, START + n),
        symbol=MULT_SYMBOL,
        side=side,
        signal_epoch=START + n,
        instrument="multiplier",
        stake=STAKE,
        multiplier=MULTIPLIER,
        take_profit=take_profit,
        stop_loss=stop_loss,
    )


def rise_fall_order(n: int, side: int, ticks: int = 5) -> Order:
    return Order(
        id=Order.id_of(RISE_FALL_SYMBOL, START + n),
        symbol=RISE_FALL_SYMBOL,
        side=side,
        signal_epoch=START + n,
        instrument="rise_fall",
        stake=STAKE,
        duration_ticks=ticks,
    )


async def wait_fills(broker: DerivBroker, count: int) -> list[Fill]:
    fills, deadline = [], time.monotonic() + WAIT_S
    while len(fills) < count:
        assert time.monotonic() < deadline, f"{len(fills)} of {count} fills within {WAIT_S} s"
        fills += broker.fills()
        await asyncio.sleep(0.05)
    return fills


async def contract(broker: DerivBroker, contract_id: str) -> dict:
    reply = await broker.client.request({"proposal_open_contract": 1, "contract_id": int(contract_id)})
    return reply["proposal_open_contract"]


def commission_rate() -> float:
    return get_symbol(MULT_SYMBOL).costs.multiplier.commission[MULTIPLIER].value


def profit(entry: float, quote: float, side: int) -> float:
    """deriv-costs.md: stake x multiplier x (side x (quote - entry_spot) / entry_spot - commission)."""
    return STAKE * MULTIPLIER * (side * (quote - entry) / entry - commission_rate())


def cents(amount: float) -> float:
    return round(amount, 2)


def test_the_trading_calls_are_named_by_their_method_key():
    assert call_of({"proposal_open_contract": 1, "contract_id": 5, "subscribe": 1}) == "proposal_open_contract"
    assert (
        call_of({"buy": "1", "price": 10, "parameters": {"symbol": "R_100", "contract_type": "CALL", "currency": "USD"}}) == "buy"
    )
    assert call_of({"contract_update": 1, "contract_id": 5, "limit_order": {"take_profit": 1}}) == "contract_update"
    assert call_of({"proposal": 1, "symbol": "R_100", "contract_type": "CALL", "currency": "USD"}) == "proposal"
    assert call_of({"sell": 5, "price": 0}) == "sell" and call_of({"portfolio": 1}) == "portfolio"
    assert call_of({"ticks_history": "R_50", "end": "latest"}) == "ticks_history" and call_of({"ticks": "R_50"}) == "ticks"


def test_a_virtual_account_is_authorized_and_a_real_one_only_with_the_flag(venue):
    _, url = venue

    async def session():
        async with DerivClient(url) as client, DerivClient(url) as other, DerivClient(url) as allowed:
            demo = DerivBroker(client)
            await demo.connect()
            balance = await demo.balance()
            with pytest.raises(RealAccountRefused, match="DERIV_REAL_TOKEN.*CR1002.*allow_real=True"):
                await DerivBroker(other, token_env="DERIV_REAL_TOKEN").connect()
            real = DerivBroker(allowed, token_env="DERIV_REAL_TOKEN", allow_real=True)
            await real.connect()
            echoed = (await other.request({"authorize": os.environ["DERIV_TOKEN"]}))["echo_req"]
        # A broker on a connection of its own (the command line's) closes it when it refuses the account.
        owned = DerivBroker.from_env(url, token_env="DERIV_REAL_TOKEN")
        with pytest.raises(RealAccountRefused):
            await owned.connect()
        assert owned.client.closed.is_set()
        owned = DerivBroker.from_env(url)
        await owned.connect()
        await owned.disconnect()
        assert owned.loginid == "VRTC1001" and owned.client.closed.is_set()
        return demo.loginid, balance, real.loginid, client.sent, echoed

    demo_login, balance, real_login, sent, echoed = run(session())
    assert (demo_login, balance, real_login) == ("VRTC1001", 10_000.0, "CR1002")
    # The token is never kept in the client's record of requests, nor echoed back.
    assert sent[0]["authorize"] == MASK and os.environ["DERIV_TOKEN"] not in json.dumps(sent)
    assert echoed["authorize"] == MASK


def test_a_bad_token_a_missing_token_and_a_call_before_authorize_are_refused(venue, monkeypatch):
    _, url = venue

    async def session():
        async with DerivClient(url) as client:
            with pytest.raises(DerivAPIError, match="AuthorizationRequired") as before:
                await client.request({"portfolio": 1})
            monkeypatch.setenv("DERIV_BAD_TOKEN", secrets.token_hex(16))
            with pytest.raises(DerivAPIError) as bad:
                await DerivBroker(client, token_env="DERIV_BAD_TOKEN").connect()
            monkeypatch.setenv("DERIV_ODD_TOKEN", f"not a token {secrets.token_hex(8)}")
            with pytest.raises(BrokerError, match="DERIV_ODD_TOKEN is not a Deriv API token") as odd:
                await DerivBroker(client, token_env="DERIV_ODD_TOKEN").connect()
            assert os.environ["DERIV_ODD_TOKEN"] not in str(odd.value) and odd.value.__cause__ is None
            monkeypatch.delenv("DERIV_NO_TOKEN", raising=False)
            with pytest.raises(BrokerError, match="DERIV_NO_TOKEN holds no Deriv API token"):
                await DerivBroker(client, token_env="DERIV_NO_TOKEN").connect()
            return before.value, bad.value

    before, bad = run(session())
    assert (before.call, before.code) == ("portfolio", "AuthorizationRequired")
    assert (bad.call, bad.code) == ("authorize", "InvalidToken")


def test_proposals_are_priced_from_the_catalog_or_refused(venue):
    _, url = venue
    terms = instrument_terms(MULT_SYMBOL, ExecutionConfig(instrument="multiplier", multiplier=MULTIPLIER, stake=STAKE))
    base = {"proposal": 1, "amount": STAKE, "basis": "stake", "currency": "USD"}

    async def session():
        async with DerivClient(url) as client:
            mult = await client.request(
                {
                    **base,
                    "contract_type": "MULTDOWN",
                    "symbol": MULT_SYMBOL,
                    "multiplier": MULTIPLIER,
                    "limit_order": {"take_profit": 1.5, "stop_loss": 2.0},
                }
            )
            call = await client.request(
                {**base, "contract_type": "CALL", "symbol": RISE_FALL_SYMBOL, "duration": 5, "duration_unit": "t"}
            )
            refused = []
            for request in (
                {**base, "contract_type": "MULTUP", "symbol": MULT_SYMBOL, "multiplier": 20},  # no rate at x20
                {**base, "contract_type": "CALL", "symbol": "R_100", "duration": 5, "duration_unit": "t"},  # no payout ratio
                {**base, "contract_type": "CALL", "symbol": RISE_FALL_SYMBOL, "duration": 30, "duration_unit": "s"},
                {**base, "amount": 10.005, "contract_type": "MULTUP", "symbol": MULT_SYMBOL, "multiplier": MULTIPLIER},
            ):
                with pytest.raises(DerivAPIError) as exc:
                    await client.request(request)
                refused.append(exc.value)
            return mult["proposal"], call["proposal"], refused

    mult, call, refused = run(session())
    assert terms.commission == pytest.approx(commission_rate() * STAKE * MULTIPLIER)  # above the catalog's floor
    assert mult["commission"] == cents(terms.commission) and mult["ask_price"] == STAKE and mult["multiplier"] == MULTIPLIER
    assert mult["limit_order"]["take_profit"]["order_amount"] == 1.5 and mult["limit_order"]["stop_loss"]["order_amount"] == -2.0
    assert mult["limit_order"]["stop_out"]["order_amount"] == -terms.stop_out_loss
    # A short's take-profit lies below the spot: where stake x multiplier x move / spot - commission = 1.5.
    assert float(mult["limit_order"]["take_profit"]["value"]) == pytest.approx(
        mult["spot"] * (1 - (1.5 + terms.commission) / (STAKE * MULTIPLIER)), abs=0.01
    )
    assert (
        call["payout"] == get_symbol(RISE_FALL_SYMBOL).costs.rise_fall.payout_ratio.value * STAKE and call["ask_price"] == STAKE
    )
    assert [e.code for e in refused] == ["OfferingsValidationError"] * 3 + ["ContractBuyValidationError"]
    assert "x20" in str(refused[0]) and "payout_ratio" in str(refused[1]) and "amount" in str(refused[3])


def test_a_multiplier_settles_at_its_limit_on_the_servers_ticks_by_deriv_costs_formula(venue):
    fake, url = venue
    orders = [multiplier_order(1, 1, take_profit=0.2, stop_loss=0.2), multiplier_order(2, -1, take_profit=0.2, stop_loss=0.2)]

    async def session():
        async with DerivClient(url) as client:
            broker = DerivBroker(client)
            await broker.connect()
            before = await broker.balance()
            ids = [await broker.open(order) for order in orders]
            fills = await wait_fills(broker, 2)
            for order in orders:  # the engine saw the limits too: nothing to send, the venue closed them
                await broker.close(order, {"reason": "tp"})
            states = {i: await contract(broker, i) for i in ids}
            return ids, before, await broker.balance(), fills, states

    ids, before, after, fills, states = run(session())
    assert sorted(f.contract_id for f in fills) == sorted(ids)
    for fill in fills:
        order = next(o for o in orders if o.id == fill.order_id)
        state = states[fill.contract_id]
        # The entry spot is the first tick after the purchase second.
        epochs, quotes = fake.between(MULT_SYMBOL, state["purchase_time"] + 1, fill.exit_epoch)
        assert (fill.entry_epoch, fill.entry_spot) == (epochs[0], quotes[0])
        # The exit is the first later tick where the profit reaches +take_profit or -stop_loss.
        profits = np.array([profit(quotes[0], q, order.side) for q in quotes[1:]])
        reached = np.flatnonzero((profits >= 0.2) | (profits <= -0.2))
        assert len(reached) and reached[0] == len(profits) - 1, "the server closed at the first tick reaching a limit"
        assert (fill.exit_epoch, fill.exit_spot) == (epochs[-1], quotes[-1])
        assert fill.reason == ("tp" if profits[-1] >= 0.2 else "sl")
        assert fill.sell_price == cents(max(0.0, STAKE + profits[-1])) and fill.buy_price == STAKE
        assert fill.pnl == pytest.approx(fill.sell_price - STAKE) and fill.commission == cents(
            commission_rate() * STAKE * MULTIPLIER
        )
        assert (fill.side, fill.symbol, fill.broker) == (order.side, MULT_SYMBOL, "deriv")
        assert state["is_sold"] == 1 and state["status"] == ("won" if fill.pnl > 0 else "lost")
    assert after == pytest.approx(before + sum(f.pnl for f in fills), abs=1e-9)


def test_a_multiplier_is_sold_at_market_after_the_engines_timeout(venue):
    fake, url = venue
    order = multiplier_order(3, -1)  # no limit orders: only a sale closes it

    async def session():
        async with DerivClient(url) as client:
            broker = DerivBroker(client)
            await broker.connect()
            before = await broker.balance()
            contract_id = await broker.open(order)
            await asyncio.sleep(0.5)  # some 20 ticks
            await broker.close(order, {"reason": "timeout"})
            fills = await wait_fills(broker, 1)
            await broker.close(order, {"reason": "timeout"})  # sold already: nothing to do
            with pytest.raises(DerivAPIError, match="has been sold"):
                await client.request({"sell": int(contract_id), "price": 0})
            return before, await broker.balance(), fills, await contract(broker, contract_id)

    before, after, (fill,), state = run(session())
    assert fill.reason == "timeout" and state["status"] == "sold"
    # Sold at the latest tick at or before the sale, at its bid price.
    epochs, quotes = fake.between(MULT_SYMBOL, state["purchase_time"] + 1, state["sell_time"])
    assert (fill.entry_epoch, fill.exit_epoch, fill.exit_spot) == (epochs[0], epochs[-1], quotes[-1])
    assert fill.sell_price == cents(max(0.0, STAKE + profit(quotes[0], quotes[-1], -1)))
    assert after == pytest.approx(before + fill.pnl, abs=1e-9)


def test_rise_fall_contracts_settle_after_their_ticks_with_the_catalogs_payout(venue):
    fake, url = venue
    ticks = 5
    orders = [rise_fall_order(4, 1, ticks), rise_fall_order(5, -1, ticks)]
    payout = get_symbol(RISE_FALL_SYMBOL).costs.rise_fall.payout_ratio.value * STAKE

    async def session():
        async with DerivClient(url) as client:
            broker = DerivBroker(client)
            await broker.connect()
            before = await broker.balance()
            for order in orders:
                await broker.open(order)
                await broker.close(order, {"reason": "timeout"})  # the venue settles it: nothing is sold
            fills = await wait_fills(broker, 2)
            return before, await broker.balance(), fills

    before, after, fills = run(session())
    for fill in fills:
        epochs, quotes = fake.between(RISE_FALL_SYMBOL, fill.entry_epoch, fill.exit_epoch)
        assert fill.entry_spot == quotes[0] and len(epochs) == ticks + 1  # the entry tick is tick 0
        assert fill.exit_spot == quotes[-1] and fill.reason == "timeout"
        won = fill.side * (fill.exit_spot - fill.entry_spot) > 0
        assert fill.sell_price == (payout if won else 0.0) and fill.pnl == fill.sell_price - STAKE
    assert after == pytest.approx(before + sum(f.pnl for f in fills), abs=1e-9)


def test_contract_update_and_portfolio(venue):
    _, url = venue
    order = multiplier_order(6, 1, take_profit=50.0, stop_loss=9.0)  # far: the contract stays open

    async def session():
        async with DerivClient(url) as client:
            broker = DerivBroker(client)
            await broker.connect()
            empty = await broker.open_contracts()
            contract_id = await broker.open(order)
            held = await broker.open_contracts()
            cancel = await client.request(
                {"contract_update": 1, "contract_id": int(contract_id), "limit_order": {"stop_loss": None}}
            )
            near = await client.request(
                {"contract_update": 1, "contract_id": int(contract_id), "limit_order": {"take_profit": 0.01, "stop_loss": 0.01}}
            )
            fills = await wait_fills(broker, 1)
            with pytest.raises(DerivAPIError, match="ContractUpdateFailure"):
                await client.request({"contract_update": 1, "contract_id": int(contract_id), "limit_order": {"take_profit": 1}})
            return (
                empty,
                contract_id,
                held,
                cancel["contract_update"],
                near["contract_update"],
                fills,
                await broker.open_contracts(),
            )

    empty, contract_id, held, cancel, near, (fill,), after = run(session())
    assert empty == [] and held == [contract_id] and after == []
    assert cancel["stop_loss"]["order_amount"] is None and cancel["take_profit"]["order_amount"] == 50.0
    assert near["take_profit"]["order_amount"] == 0.01 and near["stop_loss"]["order_amount"] == -0.01
    # Closed by the updated limits (a cent either way is within a tick or two of the entry).
    assert fill.reason in ("tp", "sl") and abs(fill.pnl) < 1.0


def test_a_restarted_broker_resumes_its_contracts(venue):
    _, url = venue
    open_one, expiring = multiplier_order(7, 1), rise_fall_order(8, 1, ticks=3)

    async def session():
        async with DerivClient(url) as client:
            first = DerivBroker(client)
            await first.connect()
            ids = {o.id: await first.open(o) for o in (open_one, expiring)}
        await asyncio.sleep(1.0)  # 40 server seconds: the Rise/Fall contract expires meanwhile
        async with DerivClient(url) as client:
            second = DerivBroker(client)
            await second.connect()
            still_open = await second.open_contracts()
            for order_id, contract_id in ids.items():
                await second.resume(order_id, contract_id)
            settled = second.fills()  # a contract sold meanwhile: its fill at once
            await second.close(open_one, {"reason": "timeout"})
            return ids, still_open, settled, await wait_fills(second, 1)

    ids, still_open, settled, sold = run(session())
    assert still_open == [ids[open_one.id]]
    assert [(f.order_id, f.contract_id, f.reason) for f in settled] == [(expiring.id, ids[expiring.id], "timeout")]
    assert [(f.order_id, f.contract_id, f.reason) for f in sold] == [(open_one.id, ids[open_one.id], "timeout")]


def test_orders_the_api_does_not_trade_are_refused(venue):
    _, url = venue
    cfd = Order(id="R_100-1", symbol="R_100", side=1, signal_epoch=START, instrument="cfd", stake=STAKE)

    async def session():
        async with DerivClient(url) as client:
            broker = DerivBroker(client)
            await broker.connect()
            with pytest.raises(BrokerError, match="R_100-1.*'cfd'"):
                await broker.open(cfd)
            too_rich = multiplier_order(9).model_copy(update={"stake": 20_000.0})
            with pytest.raises(BrokerError, match="InsufficientBalance"):
                await broker.open(too_rich)

    run(session())


def test_the_book_settles_by_deriv_rules_on_given_ticks():
    """Stop-out, the nearer stop naming the close, no sale before the entry tick or of a Rise/Fall
    contract, an equal quote losing: on ticks chosen for it."""
    tape = {100: 1000.0, 101: 1000.0, 102: 950.0, 103: 899.0, 104: 1000.0}

    def ticks(symbol: str, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        epochs = [e for e in tape if math.ceil(lo) <= e <= hi]
        return np.array(epochs, np.int64), np.array([tape[e] for e in epochs])

    account = Account.numbered(1)
    book = ContractBook([account], ticks)
    params = {"basis": "stake", "currency": "USD", "symbol": MULT_SYMBOL, "amount": STAKE, "multiplier": MULTIPLIER}

    def buy(now: float, **extra) -> int:
        parameters = {k: v for k, v in (params | extra).items() if v is not None}
        return book.buy(account, {"buy": "1", "price": STAKE, "parameters": parameters}, now)["contract_id"]

    wide_stop = buy(100.5, contract_type="MULTUP", limit_order={"stop_loss": 20.0})  # beyond the stake: the stop-out closes
    near_stop = buy(100.5, contract_type="MULTUP", limit_order={"stop_loss": 5.0})
    with pytest.raises(APIError, match="Waiting for entry tick"):
        book.sell(account, {"sell": wide_stop, "price": 0}, 100.9)
    rise_fall = {"multiplier": None, "symbol": RISE_FALL_SYMBOL, "contract_type": "CALL", "duration": 3, "duration_unit": "t"}
    equal = buy(100.5, **rise_fall)
    book.advance(104)
    closes = {i: (c.close, c.exit, c.sell_price) for i, c in book.contracts.items()}
    assert closes[wide_stop] == ("stop_out", (103, 899.0), 0.0)  # 10 x 10.1% + commission: beyond the stake
    assert closes[near_stop] == ("sl", (102, 950.0), cents(STAKE + STAKE * MULTIPLIER * (-0.05 - commission_rate())))
    assert closes[equal] == ("expiry", (104, 1000.0), 0.0)  # entry 1000 at 101, 1000 three ticks later: lost
    with pytest.raises(APIError, match="Resale of this contract is not offered"):
        book.sell(account, {"sell": buy(104.5, **rise_fall), "price": 0}, 106)
    with pytest.raises(APIError, match="has been sold"):
        book.sell(account, {"sell": near_stop, "price": 0}, 106)
    assert account.balance == cents(10_000 - 4 * STAKE + closes[near_stop][2])


def test_the_command_line_serves_accounts_whose_tokens_it_reads_from_the_environment():
    demo, real = secrets.token_hex(16), secrets.token_hex(16)
    port = free_port()
    command = [sys.executable, "-m", "scalping_assets.testing.fake_deriv", "--port", str(port), "--start", str(START)]
    command += ["--account-env", "FAKE_DERIV_DEMO", "--real-account-env", "FAKE_DERIV_REAL"]
    env = {**os.environ, "FAKE_DERIV_DEMO": demo, "FAKE_DERIV_REAL": real}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    async def session():
        deadline = time.monotonic() + 30
        while True:
            try:
                async with DerivClient(f"ws://127.0.0.1:{port}", request_timeout_s=5) as client:
                    return [(await client.request({"authorize": token}))["authorize"] for token in (demo, real)]
            except ConnectionLost:
                assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
                await asyncio.sleep(0.2)

    try:
        replies = run(session())
    finally:
        process.terminate()
        output = process.communicate(timeout=15)[0]
    assert [(a["loginid"], a["is_virtual"], a["balance"]) for a in replies] == [
        ("VRTC9000001", 1, 10_000.0),
        ("CR9000002", 0, 10_000.0),
    ]
    assert demo not in output and real not in output and "VRTC9000001, CR9000002" in output
    missing = subprocess.run(
        [sys.executable, "-m", "scalping_assets.testing.fake_deriv", "--account-env", "FAKE_DERIV_UNSET"],
        env={k: v for k, v in os.environ.items() if k != "FAKE_DERIV_UNSET"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "FAKE_DERIV_UNSET" in missing.stderr
