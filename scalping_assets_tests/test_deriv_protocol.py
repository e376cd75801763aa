"""The Deriv API v3 as spoken by the client and by the local server, checked against the official schemas."""

import asyncio
import json
import time
from datetime import date

import numpy as np
import pytest
from websockets.asyncio.client import connect

from scalping_assets.market.deriv_client import DerivAPIError, DerivClient, RateLimiter, deriv_url
from scalping_assets.market.deriv_schema import CALLS, SchemaViolation, response_violations, validate_request
from scalping_assets.market.simulator import day_start_epoch
from scalping_assets.testing.fake_deriv import FakeDerivServer, Faults, ServerThread
from scalping_assets.testing.tick_source import SimulatedTicks, VolatilityChange

START = 1_767_312_000  # 2026-01-02 00:00 UTC: a day and a half of history behind it


@pytest.fixture
def server():
    fake = FakeDerivServer(seed=4, start=START, time_scale=20, strict=True)
    with ServerThread(fake) as thread:
        yield fake, thread.url


def run(coro):
    return asyncio.run(coro)


async def raw_exchange(url: str, requests: list) -> list[dict]:
    """Send raw frames and collect one reply each (ticks subscriptions excluded)."""
    replies = []
    async with connect(url) as ws:
        for request in requests:
            await ws.send(request if isinstance(request, str) else json.dumps(request))
            replies.append(json.loads(await ws.recv()))
    return replies


def test_every_request_sent_and_every_response_served_follows_the_schemas(server):
    fake, url = server

    async def session():
        ticks = []
        async with DerivClient(url, on_tick=ticks.append) as client:
            replies = [
                await client.request({"ping": 1}),
                await client.request({"time": 1, "passthrough": {"who": "test"}}),
                await client.request({"active_symbols": "brief", "product_type": "basic"}),
                await client.request({"ticks_history": "R_50", "end": "latest", "count": 10, "style": "ticks"}),
                await client.request(
                    {"ticks_history": "R_50", "end": "latest", "count": 5, "style": "candles", "granularity": 60}
                ),
                await client.request({"ticks_history": "JD25", "end": "latest", "count": 3, "subscribe": 1}),
            ]
            first_tick = await client.subscribe_ticks(["1HZ100V", "CRASH500"])
            await client.ticks_history("1HZ50V", START - 6_000)  # two pages
            subscription = first_tick["subscription"]["id"]
            replies.append(await client.request({"forget": subscription}))
            replies.append(await client.request({"forget": subscription}))
            replies.append(await client.request({"forget_all": ["ticks", "candles"]}))
            replies.append(await client.request({"website_status": 1}))
            return client.sent, replies, first_tick, ticks

    sent, replies, first_tick, ticks = run(session())
    assert {next(k for k in CALLS if k in r) for r in sent} == set(CALLS)
    for request in sent:
        validate_request(request)
    for request in fake.requests:
        validate_request(request)
    for reply in [*replies, first_tick]:
        assert response_violations(reply) == [], reply
    assert ticks and fake.schema_violations == []  # the server checked every message it sent, ticks included
    assert replies[0]["ping"] == "pong" and replies[1]["passthrough"] == {"who": "test"}
    assert replies[1]["time"] == pytest.approx(START, abs=200)
    assert {s["symbol"] for s in replies[2]["active_symbols"]} >= {"R_100", "CRASH300", "stpRNG", "JD200"}
    assert "SIG_AR1" not in {s["symbol"] for s in replies[2]["active_symbols"]}
    assert replies[5]["subscription"]["id"] and replies[5]["history"]["times"]
    assert replies[6]["forget"] == 1 and replies[7]["forget"] == 0
    assert len(replies[8]["forget_all"]) == 2  # JD25 (history + subscribe) and the other stream
    assert replies[9]["website_status"]["api_call_limits"]["max_requestes_general"]["minutely"] == fake.rate_limit_per_minute


def test_client_refuses_to_send_what_the_schema_forbids(server):
    _, url = server

    async def session():
        async with DerivClient(url) as client:
            for bad in ({"ticks": "R_50", "subscribe": 2}, {"ticks_history": "R_50"}, {"ping": 1, "extra": True}, {"nothing": 1}):
                with pytest.raises(SchemaViolation):
                    await client.request(bad)
            return client.sent

    assert run(session()) == []


def test_echo_req_req_id_and_subscription_ids(server):
    fake, url = server

    async def session():
        async with connect(url) as ws:
            request = {"ticks": ["R_100", "1HZ10V"], "subscribe": 1, "req_id": 77, "passthrough": {"k": 1}}
            await ws.send(json.dumps(request))
            messages = [json.loads(await ws.recv()) for _ in range(6)]
            await ws.send(json.dumps({"ticks": "R_100", "subscribe": 1, "req_id": 78}))
            while (reply := json.loads(await ws.recv())).get("req_id") != 78:
                pass
            return request, messages, reply

    request, messages, again = run(session())
    for message in messages:
        assert message["msg_type"] == "tick" and message["req_id"] == 77 and message["echo_req"] == request
        assert message["subscription"]["id"] == message["tick"]["id"]
        assert message["tick"]["bid"] < message["tick"]["quote"] < message["tick"]["ask"]
    assert len({m["subscription"]["id"] for m in messages}) == 2
    assert again["error"]["code"] == "AlreadySubscribed" and again["msg_type"] == "tick"


def test_errors_name_the_symbol_and_code_and_keep_the_connection(server):
    _, url = server
    replies = run(
        raw_exchange(
            url,
            [
                "{not json",
                {"bogus": 1},
                {"ticks_history": "R_50", "end": "latest", "count": "ten"},
                {"ticks_history": "R_50", "end": str(START - 100), "start": START},
                {"ticks": "NOPE", "req_id": 3},
                {"ping": 1},
            ],
        )
    )
    assert replies[0]["error"]["code"] == "InputValidationFailed"
    assert replies[1]["error"]["code"] == "UnrecognisedRequest"
    assert replies[2]["error"]["code"] == "InputValidationFailed" and "count" in replies[2]["error"]["details"]["error"]
    assert replies[3]["error"]["code"] == "InvalidStartEnd"
    assert replies[4]["error"] == {"code": "InvalidSymbol", "message": "Symbol NOPE invalid."} and replies[4]["req_id"] == 3
    assert replies[5]["ping"] == "pong"

    async def via_client():
        async with DerivClient(url) as client:
            await client.subscribe_ticks(["R_10", "NOPE"])

    with pytest.raises(DerivAPIError) as err:
        run(via_client())
    assert err.value.code == "InvalidSymbol" and "NOPE" in str(err.value) and "ticks" in str(err.value)


def test_history_counts_pages_and_agrees_with_the_stream_and_the_candles(server):
    _, url = server
    truth = SimulatedTicks(seed=4)

    async def session():
        streamed = []
        async with DerivClient(url, on_tick=streamed.append) as client:
            default = await client.request({"ticks_history": "R_25", "end": "latest"})
            clamped = await client.request({"ticks_history": "1HZ25V", "end": "latest", "count": 10_000})
            candles = await client.request(
                {"ticks_history": "R_25", "start": START - 3_600, "end": str(START - 1), "style": "candles", "granularity": 300}
            )
            await client.subscribe_ticks(["1HZ25V"])
            await asyncio.sleep(1.0)
            requests_before = len(client.sent)
            day = await client.ticks_history("1HZ25V", START - 86_400, START - 1)
            pages = len(client.sent) - requests_before
            one = await client.ticks_history("1HZ25V", START - 500, START - 500)
            future = await client.ticks_history("1HZ25V", START + 10**6)
            assert len(one) == 1 and one["epoch"].iloc[0] == START - 500 and future.empty
            streamed = list(streamed)  # ticks go on arriving while history is fetched
            recent = await client.ticks_history("1HZ25V", streamed[0]["epoch"], streamed[-1]["epoch"])
            return default, clamped, candles, day, pages, streamed, recent

    default, clamped, candles, day, pages, streamed, recent = run(session())
    assert len(default["history"]["times"]) == 1000 and default["pip_size"] == 3
    assert len(clamped["history"]["times"]) == 5000
    assert pages == 18  # 86,400 ticks, 5,000 a page
    epochs, quotes = truth.between("1HZ25V", START - 86_400, START - 1)
    assert np.array_equal(day["epoch"], epochs) and np.array_equal(day["quote"], quotes)
    # The live stream and the history are one series.
    assert [t["epoch"] for t in streamed] == recent["epoch"].tolist()
    assert [t["quote"] for t in streamed] == recent["quote"].tolist()
    e, q = truth.between("R_25", START - 3_600, START - 1)
    first = candles["candles"][0]
    in_first = (e >= first["epoch"]) & (e < first["epoch"] + 300)
    assert len(candles["candles"]) == 12
    assert (first["open"], first["high"], first["low"], first["close"]) == (
        q[in_first][0],
        q[in_first].max(),
        q[in_first].min(),
        q[in_first][-1],
    )


def test_rate_limit_errors_are_waited_out_and_the_limiter_spaces_calls():
    fake = FakeDerivServer(seed=1, start=START, faults=Faults(rate_limit_every=2))
    with ServerThread(fake) as thread:

        async def session():
            async with DerivClient(thread.url, rate_limit_wait_s=0.05) as client:
                return [await client.server_time() for _ in range(4)]

        assert len(run(session())) == 4
        assert sum("time" in r for r in fake.requests) == 7  # three RateLimit answers, each retried

    limited = FakeDerivServer(seed=1, start=START, rate_limit_per_minute=3)
    with ServerThread(limited) as thread:

        async def flood():
            async with DerivClient(thread.url, rate_limit_wait_s=0.01, rate_limit_retries=2) as client:
                for _ in range(10):
                    await client.server_time()

        with pytest.raises(DerivAPIError) as err:
            run(flood())
        assert err.value.code == "RateLimit"

    async def spaced():
        limiter = RateLimiter(calls=3, period_s=0.3)
        loop = asyncio.get_running_loop()
        stamps = []
        for _ in range(7):
            await limiter.acquire()
            stamps.append(loop.time())
        return np.array(stamps) - stamps[0]

    stamps = run(spaced())
    assert all(stamps[i + 3] - stamps[i] >= 0.29 for i in range(4))  # never more than 3 calls in 0.3 s


def test_history_pages_on_past_a_short_page_until_it_reaches_the_start():
    fake = FakeDerivServer(seed=4, start=START, faults=Faults(history_page_max=700))
    with ServerThread(fake) as thread:

        async def session():
            async with DerivClient(thread.url) as client:
                return (
                    await client.ticks_history("1HZ25V", START - 86_400, START - 1),
                    await client.ticks_history("R_25", START - 9_999, START - 1, spacing=2),
                )

        day, two_second = run(session())
    epochs, quotes = SimulatedTicks(4).between("1HZ25V", START - 86_400, START - 1)
    assert np.array_equal(day["epoch"], epochs) and np.array_equal(day["quote"], quotes)
    assert np.array_equal(two_second["epoch"], SimulatedTicks(4).between("R_25", START - 9_999, START - 1)[0])
    pages = [r for r in fake.requests if r.get("ticks_history") == "R_25"]
    assert len(pages) == -(-4_999 // 700)  # the cadence tells when the start is reached: no empty last page


def test_a_rate_limit_wait_ends_as_soon_as_the_connection_drops():
    from scalping_assets.market.deriv_client import ConnectionLost

    fake = FakeDerivServer(seed=1, start=START, faults=Faults(history_rate_limit_every=1))
    with ServerThread(fake) as thread:

        async def session():
            async with DerivClient(thread.url, rate_limit_wait_s=60) as client:
                waiting = asyncio.create_task(client.ticks_history("R_50", START - 600, START - 1))
                await asyncio.sleep(0.5)
                await asyncio.to_thread(thread.drop_connections)
                started = asyncio.get_running_loop().time()
                with pytest.raises(ConnectionLost):
                    await asyncio.wait_for(waiting, 10)
                return asyncio.get_running_loop().time() - started

        assert run(session()) < 1.0


def test_deriv_url_takes_the_app_id_from_the_environment(monkeypatch):
    monkeypatch.delenv("DERIV_WS_URL", raising=False)
    monkeypatch.delenv("DERIV_APP_ID", raising=False)
    with pytest.raises(ValueError, match="DERIV_APP_ID"):
        deriv_url()
    monkeypatch.setenv("DERIV_APP_ID", "12345")
    assert deriv_url() == "wss://ws.derivws.com/websockets/v3?app_id=12345"
    assert deriv_url("ws://127.0.0.1:8765") == "ws://127.0.0.1:8765"


def test_a_drop_on_demand_closes_the_connection_abnormally():
    from scalping_assets.market.deriv_client import ConnectionLost

    with ServerThread(FakeDerivServer(seed=1, start=START)) as thread:

        async def session():
            async with DerivClient(thread.url) as client:
                await client.server_time()
                dropped = await asyncio.to_thread(thread.drop_connections)
                await asyncio.wait_for(client.closed.wait(), 5)
                with pytest.raises(ConnectionLost):
                    await client.server_time()
                return dropped

        assert run(session()) == 1
        assert thread.server.drops == 1


def test_a_volatility_change_scales_the_moves_from_its_time_on_without_a_jump():
    at = day_start_epoch(date(2026, 1, 4))
    plain = SimulatedTicks(7)
    changed = SimulatedTicks(7, changes=(VolatilityChange.parse("SIG_AR1=1.2@2026-01-04"),))
    for lo, hi in ((at - 7_200, at + 7_200), (at + 86_400, at + 90_000)):  # across the change, and a later day
        e0, q0 = plain.between("SIG_AR1", lo, hi)
        e1, q1 = changed.between("SIG_AR1", lo, hi)
        assert np.array_equal(e0, e1)
        before = e0 < at
        assert np.array_equal(q0[before], q1[before]), "nothing changes before the change"
        r0, r1 = np.diff(np.log(q0[~before])), np.diff(np.log(q1[~before]))
        assert np.std(r1) / np.std(r0) == pytest.approx(1.2, rel=0.02)
        assert np.corrcoef(r0, r1)[0, 1] > 0.99, "the same path, its planted signal kept"
    assert changed.between("SIG_AR1", at, at)[1][0] == plain.between("SIG_AR1", at, at)[1][0], "no jump: it moves from there"
    for text in ("SIG_AR1=1.2", "SIG_AR1@2026-01-04", "=1.2@2026-01-04"):
        with pytest.raises(ValueError, match="SYMBOL=FACTOR@TIME"):
            VolatilityChange.parse(text)
    with pytest.raises(ValueError, match="must be positive"):
        VolatilityChange("SIG_AR1", at, 0.0)


def test_a_held_clock_starts_at_the_first_subscription():
    server = FakeDerivServer(start=1_767_225_600, time_scale=1_000, hold=True)
    time.sleep(0.05)
    assert server.clock.now() == 1_767_225_600, "history before the start can be read while it waits"
    with ServerThread(server) as thread:

        async def subscribe() -> dict:
            async with DerivClient(thread.url) as client:
                return await client.subscribe_ticks("R_100")

        first = asyncio.run(subscribe())
    assert first["tick"]["epoch"] >= 1_767_225_600 and server.clock.now() > 1_767_225_600
