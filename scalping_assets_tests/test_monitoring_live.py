"""The prediction log consolidated per day, and each served version's live performance beside its
backtest: every line accounted for, the same file on a re-run, labels as a hand computes them, a
degradation test whose size is alpha, and both assets materialized on a real (tiny) MLflow store."""

import json
import math
import os
import socket
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom, binomtest

from scalping_assets.assets.monitoring import (
    COMPLETE_CHECK,
    DEGRADATION_CHECK,
    LATENCY_CHECK,
    MONITORING_ASSETS,
    MONITORING_CHECKS,
    live_performance,
    prediction_log,
    prediction_log_complete,
)
from scalping_assets.backtest.engine import ExecutionConfig, TickPath, run_backtest
from scalping_assets.backtest.report import backtest_predictions
from scalping_assets.backtest.runs import BACKTEST_RUN_TAG, load_predictions, log_backtest
from scalping_assets.definitions import build_resources
from scalping_assets.features.dataset import DatasetSpec, build_dataset
from scalping_assets.features.labels import DOWN, NEUTRAL, PROBABILITY_COLUMNS, UP, Barriers, LabelSpec
from scalping_assets.market.simulator import day_start_epoch, simulator
from scalping_assets.market.symbols import get_symbol
from scalping_assets.models.config import profile_config
from scalping_assets.models.pipeline import train_candidate
from scalping_assets.monitoring.live import (
    DUPLICATE,
    NO_EPOCH,
    NO_TICK,
    RESOLVED,
    SCOPE_POOLED,
    SCOPE_SYMBOLS,
    UNRESOLVED_LABEL,
    MonitoringError,
    ServedVersion,
    degradation_test,
    judge_day,
    live_trades,
    load_served_version,
    resolve,
)
from scalping_assets.monitoring.predlog import (
    PREDICTION_SCHEMA,
    PredictionLogError,
    consolidate_day,
    read_day,
    served_key,
)
from scalping_assets.partitions import SERVED
from scalping_assets.records import LivePerformanceRecord, PredictionLogRecord
from scalping_assets.resources import FolderResource
from scalping_assets.settings import Settings
from serving import predlog as service_log

SYMBOL = "SIG_AR1"
DAY = date(2026, 1, 3)
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def stamp(day: date, seconds: float) -> str:
    return (datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=seconds)).isoformat()


def service_line(**fields) -> str:
    """One line as `serving.predlog.PredictionLog` writes it; `fields` override the defaults."""
    record = {
        "timestamp": stamp(DAY, 36_000),
        "endpoint": "stream",
        "symbol": SYMBOL,
        "registered_model": "scalping-SIG_AR1-h10",
        "version": "1",
        "variant": "champion",
        "client": "me",
        "epoch": day_start_epoch(DAY) + 36_000,
        "features_digest": "0123456789abcdef",
        "features": [0.5, -1.25, 3.0],
        "probabilities": {"down": 0.2, "neutral": 0.3, "up": 0.5},
        "latency_ms": 0.4,
    } | fields
    return json.dumps(record, separators=(",", ":"))


def write_log(folder: Path, name: str, lines: list[str], terminated: bool = True) -> Path:
    path = folder / name
    path.write_text("\n".join(lines) + ("\n" if terminated and lines else ""), encoding="utf-8")
    return path


# -- the prediction log ----------------------------------------------------------------------------


def test_consolidation_accounts_for_every_line(tmp_path):
    folder = tmp_path / "predictions"
    folder.mkdir()
    a = f"predictions-{DAY}-100.jsonl"
    b = f"predictions-{DAY}-200.jsonl"
    write_log(
        folder,
        a,
        [
            service_line(timestamp=stamp(DAY, 36_002), client="a1"),
            '{"timestamp": "2026-01-03T10:00:00+00:00", "endpoint": ',
            service_line(timestamp=stamp(DAY, 36_001), client="a3"),
            json.dumps({k: v for k, v in json.loads(service_line()).items() if k != "symbol"}),
            service_line(latency_ms="fast"),
            service_line(probabilities={"down": 0.5, "neutral": 0.5, "up": 0.5}),
            service_line(timestamp=stamp(DAY + timedelta(days=1), 0), epoch=day_start_epoch(DAY + timedelta(days=1))),
            "",
            "[1, 2]",
            service_line(timestamp=stamp(DAY, 86_399.999999), epoch=None, endpoint="features", client=None),
            service_line(client="cut off"),  # the writer died before the newline
        ],
        terminated=False,
    )
    write_log(
        folder,
        b,
        [
            service_line(timestamp=stamp(DAY, 36_001), client="b1", version="2"),
            # answered after midnight, for the day's last tick: the day's
            service_line(timestamp=stamp(DAY + timedelta(days=1), 0.02), epoch=day_start_epoch(DAY) + 86_399, client="late"),
            service_line(timestamp=stamp(DAY, 32_400), client="b2"),
            service_line(timestamp="2026-01-03T10:00:00", client="naive"),
        ],
    )
    write_log(
        folder, f"predictions-{DAY + timedelta(days=1)}-100.jsonl", [service_line(timestamp=stamp(DAY + timedelta(days=1), 5))]
    )
    write_log(folder, "notes.txt", ["not a log"])

    record = consolidate_day(folder, DAY, tmp_path / "out" / f"{DAY}.parquet")

    assert [Path(f).name for f in record.files] == [a, b], "the day's files of every process, no other"
    assert record.read == 15 and record.kept == 6
    assert record.rejected == {
        "empty line": 1,
        "invalid field latency_ms": 1,
        "invalid field probabilities": 1,
        "invalid field timestamp": 1,
        "malformed JSON": 1,
        "missing field symbol": 1,
        "not a JSON object": 1,
        "not on 2026-01-03": 1,
        "unterminated last line": 1,
    }
    assert record.read == record.kept + sum(record.rejected.values())
    assert record.first_rejected["malformed JSON"].startswith(f"{a}:2: Invalid JSON")
    assert record.first_rejected["invalid field timestamp"].startswith(f"{b}:4: timestamp: Input should have timezone info")
    assert record.first_rejected["not on 2026-01-03"] == f"{a}:7: tick 2026-01-04T00:00:00+00:00"
    assert record.first_rejected["unterminated last line"].startswith(f"{a}:11")
    assert record.models == ["scalping-SIG_AR1-h10@1", "scalping-SIG_AR1-h10@2"]

    assert pq.read_schema(record.path).equals(PREDICTION_SCHEMA, check_metadata=True)
    frame = read_day(record.path)
    # By timestamp, then file name, then line: b2 at 09:00, then a3 and b1 in the same microsecond.
    assert frame["client"].tolist() == ["b2", "a3", "b1", "a1", None, "late"]
    assert list(zip(frame["source"], frame["line"], strict=True)) == [(b, 3), (a, 3), (b, 1), (a, 1), (a, 10), (b, 2)]
    assert str(frame["timestamp"].dt.tz) == "UTC" and frame["timestamp"].is_monotonic_increasing
    assert frame["epoch"].dtype == "Int64" and frame["epoch"].isna().tolist() == [False] * 4 + [True, False]
    assert frame.loc[0, PROBABILITY_COLUMNS].tolist() == [0.2, 0.3, 0.5]
    assert list(frame.loc[0, "features"]) == [0.5, -1.25, 3.0]
    assert list(frame.columns) == PREDICTION_SCHEMA.names


def test_consolidating_a_day_again_gives_the_same_bytes(tmp_path):
    folder = tmp_path / "predictions"
    folder.mkdir()
    for pid in (7, 8):
        lines = [service_line(timestamp=stamp(DAY, 100 + i % 5), client=f"{pid}-{i}") for i in range(50)]
        write_log(folder, f"predictions-{DAY}-{pid}.jsonl", lines + ["{broken"])
    first = consolidate_day(folder, DAY, tmp_path / "one.parquet")
    again = consolidate_day(folder, DAY, tmp_path / "one.parquet")
    elsewhere = consolidate_day(folder, DAY, tmp_path / "two.parquet")
    assert first.model_dump(exclude={"path"}) == again.model_dump(exclude={"path"}) == elsewhere.model_dump(exclude={"path"})
    assert Path(first.path).read_bytes() == Path(elsewhere.path).read_bytes()
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"
    empty = consolidate_day(tmp_path / "nothing", DAY, tmp_path / "empty.parquet")
    assert (empty.read, empty.kept, empty.files) == (0, 0, [])
    assert read_day(empty.path).empty and list(read_day(empty.path).columns) == PREDICTION_SCHEMA.names


def test_read_day_refuses_a_file_that_is_not_a_consolidated_log(tmp_path):
    other = tmp_path / "ticks.parquet"
    pd.DataFrame({"epoch": [1, 2], "quote": [1.0, 2.0]}).to_parquet(other)
    with pytest.raises(PredictionLogError, match=rf"{other}: not a consolidated prediction log \(missing columns"):
        read_day(other)
    with pytest.raises(PredictionLogError, match=f"{tmp_path / 'absent.parquet'}: not a readable"):
        read_day(tmp_path / "absent.parquet")


def test_the_service_files_a_prediction_under_its_ticks_day(tmp_path, monkeypatch):
    """The day of the tick predicted at, not of the clock: a replayed feed's predictions land on their
    own days, an answer late past midnight on its tick's day; a feature window on the day it was made."""
    log = service_log.PredictionLog(tmp_path)
    now = day_start_epoch(DAY + timedelta(days=5)) + 0.02
    monkeypatch.setattr(service_log, "time", SimpleNamespace(time=lambda: now))
    line = {k: v for k, v in json.loads(service_line()).items() if k != "timestamp"}  # the log stamps it
    log.write([line | {"epoch": day_start_epoch(DAY) + 86_399}, line | {"epoch": day_start_epoch(DAY) + 86_400}])
    log.write([line | {"epoch": None, "endpoint": "features"}])
    log.write([line | {"epoch": day_start_epoch(DAY) + 5}])
    # predictions-<day>-<host>-<pid>.jsonl: the ISO day is the ten characters after the prefix.
    days = {p.name.removeprefix("predictions-")[:10]: len(p.read_text().splitlines()) for p in tmp_path.iterdir()}
    assert all(p.name.endswith(f"-{socket.gethostname()}-{os.getpid()}.jsonl") for p in tmp_path.iterdir())
    assert days == {str(DAY): 2, str(DAY + timedelta(days=1)): 1, str(DAY + timedelta(days=5)): 1}
    assert len(log._files) <= 2, "files of days no longer written are closed"
    for day in (DAY, DAY + timedelta(days=1), DAY + timedelta(days=5)):
        record = consolidate_day(tmp_path, day, tmp_path / "out" / f"{day}.parquet")
        assert record.kept == record.read == days[str(day)]


GARBAGE = st.sampled_from(["", "{", "null", '{"timestamp": 1}', service_line(latency_ms=-1.0), service_line(version=2)])


@st.composite
def day_logs(draw):
    """Lines of up to three process files: valid predictions at random microseconds of the day and garbage."""
    files = []
    for _ in range(draw(st.integers(1, 3))):
        lines = []
        for _ in range(draw(st.integers(0, 12))):
            if draw(st.booleans()):
                micro = draw(st.integers(0, 86_400 * 10**6 - 1))
                weights = draw(st.lists(st.integers(1, 100), min_size=3, max_size=3))
                p = dict(zip(("down", "neutral", "up"), np.asarray(weights) / sum(weights), strict=True))
                lines.append(service_line(timestamp=stamp(DAY, micro / 1e6), probabilities=p, client=f"c{micro}"))
            else:
                lines.append(draw(GARBAGE))
        files.append(lines)
    return files


@settings(max_examples=30, deadline=None)
@given(day_logs(), st.integers(0, 12))
def test_every_line_is_kept_or_rejected_and_a_prefix_consolidates_to_a_prefix(files, cut):
    """read = kept + rejected for any mix; a line's fate is its own: consolidating the first `cut` lines
    of every file keeps exactly the rows of the full consolidation from those lines."""
    with tempfile.TemporaryDirectory() as tmp:
        full, part = Path(tmp, "full"), Path(tmp, "part")
        full.mkdir(), part.mkdir()
        for pid, lines in enumerate(files):
            write_log(full, f"predictions-{DAY}-{pid}.jsonl", lines)
            write_log(part, f"predictions-{DAY}-{pid}.jsonl", lines[:cut])
        record = consolidate_day(full, DAY, Path(tmp, "full.parquet"))
        assert record.read == sum(map(len, files)) == record.kept + sum(record.rejected.values())
        assert record.kept == sum(line.count('"client":"c') for lines in files for line in lines)
        rows = read_day(record.path)
        assert (rows["timestamp"].diff().dropna() >= pd.Timedelta(0)).all()
        prefix = read_day(consolidate_day(part, DAY, Path(tmp, "part.parquet")).path)
        expected = rows[rows["line"] <= cut].reset_index(drop=True)
        pd.testing.assert_frame_equal(prefix.drop(columns="features"), expected.drop(columns="features"))


# -- resolution, trades ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_days() -> dict[date, pd.DataFrame]:
    sim = simulator(SYMBOL, 5)
    return {d: sim.day(d) for d in (DAY - timedelta(days=1), DAY, DAY + timedelta(days=1))}


def _hand_direction(k: np.ndarray, i: int, horizon: int) -> int:
    return UP if k[i + horizon] > k[i] else DOWN if k[i + horizon] < k[i] else NEUTRAL


def _hand_barrier(k: np.ndarray, i: int, barriers: Barriers) -> int:
    steps = np.diff(k[i - 100 : i + 1])  # the 100 moves up to the entry
    sigma = math.sqrt(float(np.mean(steps.astype(float) ** 2)))
    for h in range(1, barriers.max_hold_ticks + 1):
        if k[i + h] >= k[i] + barriers.take_profit * sigma:
            return UP
        if k[i + h] <= k[i] - barriers.stop_loss * sigma:
            return DOWN
    return NEUTRAL


def _predictions(tmp_path: Path, epochs: list[int | None], up: float = 0.5) -> pd.DataFrame:
    folder = tmp_path / "log"
    folder.mkdir(exist_ok=True)
    p = {"down": (1 - up) / 2, "neutral": (1 - up) / 2, "up": up}
    lines = [service_line(timestamp=stamp(DAY, 10 + i), epoch=e, probabilities=p) for i, e in enumerate(epochs)]
    write_log(folder, f"predictions-{DAY}-1.jsonl", lines)
    return read_day(consolidate_day(folder, DAY, tmp_path / "day.parquet").path)


def test_logged_predictions_resolve_to_the_label_a_hand_computes(tmp_path, three_days):
    start = day_start_epoch(DAY)
    gap = start + 50_000  # a tick the store lacks
    ticks = pd.concat(three_days.values(), ignore_index=True)
    ticks = ticks[ticks["epoch"] != gap].reset_index(drop=True)
    day_ticks = ticks[ticks["epoch"] < start + 86_400].reset_index(drop=True)
    last = start + 86_399  # the day's last tick: its label needs the next day's ticks
    epochs = [start + 500, start + 40_000, last, None, start + 40_000, gap]
    predictions = _predictions(tmp_path, epochs)
    k = np.rint(ticks["quote"].to_numpy() / get_symbol(SYMBOL).pip_size).astype(np.int64)
    index = {int(e): i for i, e in enumerate(ticks["epoch"])}
    barriers = Barriers(take_profit=2.0, stop_loss=1.0, max_hold_ticks=30, unit="sigma")
    for target in ("direction", "barrier"):
        spec = DatasetSpec(symbols=[SYMBOL], start=DAY, end=DAY, labels=LabelSpec(horizon=10, barriers=barriers), target=target)
        hand = (lambda i: _hand_direction(k, i, 10)) if target == "direction" else (lambda i: _hand_barrier(k, i, barriers))
        out = resolve(predictions, {SYMBOL: ticks}, spec)
        assert out["status"].tolist() == [RESOLVED, RESOLVED, RESOLVED, NO_EPOCH, DUPLICATE, NO_TICK]
        assert out["label"].tolist()[:3] == [hand(index[e]) for e in epochs[:3]], target
        assert out["label"].tolist()[3:] == [-1, -1, -1]
        assert out["tick"].tolist()[:3] == [index[e] for e in epochs[:3]]
        assert (out["predicted"] == UP).all()
        cut = resolve(predictions, {SYMBOL: day_ticks}, spec)
        assert cut["status"].tolist()[2] == UNRESOLVED_LABEL, "without the next day's ticks the last label cannot resolve"


def test_live_trades_are_the_engines_on_the_logged_ticks_and_close_after_midnight(tmp_path, three_days):
    start = day_start_epoch(DAY)
    ticks = pd.concat(three_days.values(), ignore_index=True)
    epochs = list(range(start, start + 86_400, 97)) + [start + 86_399]
    predictions = _predictions(tmp_path, epochs, up=0.9)
    spec = DatasetSpec(symbols=[SYMBOL], start=DAY, end=DAY)
    config = ExecutionConfig(max_hold_ticks=10)
    trades, per_symbol, unfinished = live_trades(resolve(predictions, {SYMBOL: ticks}, spec), {SYMBOL: ticks}, config)
    path = TickPath.build(SYMBOL, ticks["epoch"].to_numpy(), ticks["quote"].to_numpy(), get_symbol(SYMBOL).pip_size, config)
    proba = np.full((len(ticks), 3), np.nan)
    proba[np.searchsorted(ticks["epoch"].to_numpy(), epochs)] = [0.05, 0.05, 0.9]
    direct = run_backtest(path, proba, config).trades
    pd.testing.assert_frame_equal(trades, direct)
    assert unfinished == 0 and set(per_symbol) == {SYMBOL}
    assert trades["signal_epoch"].iloc[0] == start
    assert trades["signal_epoch"].iloc[-1] == start + 86_399 and trades["exit_epoch"].iloc[-1] >= start + 86_400


def test_a_day_without_predictions_has_figures_and_no_verdict():
    metrics = {"backtest/trades": 120.0, "backtest/win_rate": 0.6, "backtest/expectancy": 0.5, "backtest/total_pnl_net": 60.0}
    spec = DatasetSpec(symbols=[SYMBOL], start=DAY, end=DAY)
    served = ServedVersion("m", "1", "train", "bt", spec, ExecutionConfig(), metrics, 0.4)
    empty = read_day(consolidate_day(Path(tempfile.mkdtemp()), DAY, Path(tempfile.mkdtemp()) / "day.parquet").path)
    day = judge_day(DAY, empty, {}, served)
    assert (day.figures["predictions"], day.figures["trades"], day.figures["accuracy"]) == (0, 0, None)
    assert day.figures["latency_p99_ms"] is None and day.test.p_value is None and not day.degraded
    assert day.backtest_scope == SCOPE_POOLED and (day.backtest["trades"], day.backtest["wins"]) == (120, 72)
    assert day.plot.startswith(b"\x89PNG")


# -- the degradation test --------------------------------------------------------------------------

ALPHA = 0.05
DRAWS = 1_000


def _interval(draws: int = DRAWS, alpha: float = ALPHA, level: float = 0.99) -> tuple[float, float]:
    low, high = binom.interval(level, draws, alpha)
    return low / draws, high / draws


def _null_rejections(live_n: dict[str, int], backtest_n: dict[str, int], rates: dict[str, float], seed: int) -> float:
    """Share of `DRAWS` null days (live and backtest trades won at the same rate per symbol) whose
    degradation test rejects at ALPHA."""
    rng = np.random.default_rng(seed)
    rejected = 0
    for _ in range(DRAWS):
        live = {s: (int(rng.binomial(n, rates[s])), n) for s, n in live_n.items()}
        backtest = {s: (int(rng.binomial(n, rates[s])), n) for s, n in backtest_n.items()}
        rejected += degradation_test(live, backtest).p_value < ALPHA
    return rejected / DRAWS


def test_the_degradation_test_rejects_alpha_of_null_days():
    """1,000 null days each: the rejection rate lies in the 99 % binomial interval around alpha
    (0.033..0.069), for one symbol and for two symbols traded in another mix live than in the backtest."""
    low, high = _interval()
    one = _null_rejections({SYMBOL: 120}, {SYMBOL: 300}, {SYMBOL: 0.62}, seed=1)
    two = _null_rejections({"A": 40, "B": 160}, {"A": 300, "B": 300}, {"A": 0.8, "B": 0.45}, seed=2)
    print(f"null rejection rate at alpha {ALPHA}: one symbol {one:.3f}, two symbols {two:.3f}, 99 % band {low:.3f}..{high:.3f}")
    assert low <= one <= high
    assert low <= two <= high
    # Pooling the two symbols into one comparison would call the change of mix a degradation.
    rng, pooled = np.random.default_rng(3), 0
    for _ in range(DRAWS):
        lw = rng.binomial(40, 0.8) + rng.binomial(160, 0.45)
        bw = rng.binomial(300, 0.8) + rng.binomial(300, 0.45)
        pooled += degradation_test({"all": (int(lw), 200)}, {"all": (int(bw), 600)}).p_value < ALPHA
    assert pooled / DRAWS > 0.5


def test_the_degradation_tests_exact_size_is_alpha_and_it_has_power():
    """Exact size, by enumerating every (live wins, backtest wins): within 0.04..0.06 from 20 trades a
    side; a live rate 0.17 below the backtest's is caught most days."""
    for live_n, backtest_n, rate in [(20, 300, 0.6), (60, 300, 0.65), (200, 200, 0.55), (500, 100, 0.7)]:
        # Outcomes of probability under 1e-12 are left out: they cannot move the size.
        x_live, x_bt = (np.flatnonzero(binom.pmf(np.arange(n + 1), n, rate) > 1e-12) for n in (live_n, backtest_n))
        weight = binom.pmf(x_live, live_n, rate)[:, None] * binom.pmf(x_bt, backtest_n, rate)[None, :]
        p = np.array(
            [[degradation_test({"s": (int(a), live_n)}, {"s": (int(b), backtest_n)}).p_value for b in x_bt] for a in x_live]
        )
        size = float((weight * (p < ALPHA)).sum())
        assert 0.04 <= size <= 0.06, (live_n, backtest_n, rate, size)
    rng = np.random.default_rng(4)
    caught = sum(
        degradation_test({"s": (int(rng.binomial(120, 0.45)), 120)}, {"s": (int(rng.binomial(300, 0.62)), 300)}).p_value < ALPHA
        for _ in range(DRAWS)
    )
    assert caught / DRAWS > 0.8


def test_treating_the_backtests_rate_as_known_would_reject_far_more_than_alpha():
    """Why two samples: an exact binomial test of 200 live trades against a rate estimated from 200
    backtest trades rejects about a sixth of null days."""
    rng, rejected = np.random.default_rng(5), 0
    for _ in range(DRAWS):
        backtest_rate = rng.binomial(200, 0.6) / 200
        rejected += binomtest(int(rng.binomial(200, 0.6)), 200, backtest_rate).pvalue < ALPHA
    assert rejected / DRAWS > 0.12


def test_no_trades_on_one_side_leaves_nothing_to_compare():
    none = degradation_test({"A": (0, 0)}, {"A": (30, 50)})
    assert none.p_value is None and none.symbols == []
    assert degradation_test({"A": (10, 10)}, {"A": (50, 50)}).p_value == 1.0, "all won on both sides: no evidence"


# -- the assets on a real MLflow store -------------------------------------------------------------

TINY = {"n_estimators": 8, "early_stopping_rounds": 4, "max_train_windows": 2_000, "max_eval_windows": 1_000}
LIVE_DAY = date(2026, 1, 2)  # the models' test span: the champion's log replays its own test predictions


def _log_as_the_service(folder: Path, pid: int, name: str, version: str, predictions: pd.DataFrame, monkeypatch) -> None:
    """The predictions written by `serving.predlog.PredictionLog` at the time of their tick (plus 50 ms),
    in batches of 64 as the service's adaptive batching would, under a process id of their own."""

    class Process(service_log.PredictionLog):
        def path(self, day: str) -> Path:
            return self.folder / f"predictions-{day}-{pid}.jsonl"

    log = Process(folder)
    for at in range(0, len(predictions), 64):
        batch = predictions.iloc[at : at + 64]
        clock = float(batch["epoch"].iloc[-1]) + 0.05
        monkeypatch.setattr(service_log, "time", SimpleNamespace(time=lambda clock=clock: clock))
        log.write(
            [
                {
                    "endpoint": "stream",
                    "symbol": row.symbol,
                    "registered_model": name,
                    "version": version,
                    "variant": "champion" if pid == 1 else "challenger",
                    "client": f"client-{pid}",
                    "epoch": int(row.epoch),
                    "features_digest": f"{int(row.epoch):016x}",
                    "features": [0.1, float(row.epoch % 7)],
                    "probabilities": {"down": row.p_down, "neutral": row.p_neutral, "up": row.p_up},
                    "latency_ms": 0.3 + (row.epoch % 10) / 10,
                }
                for row in batch.itertuples()
            ]
        )
    monkeypatch.undo()


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    """A tiny XGBoost trained on SIG_AR1 and registered twice (one training is the slow part), each
    version with a backtest of its own: the first with per-symbol figures, the second pooled only, as
    older backtests; and a day of the service's log in which the first replays its test predictions
    and the second the same with UP and DOWN swapped."""
    data = tmp_path_factory.mktemp("data")
    resources = build_resources(Settings(data_dir=data, seed=7)) | {
        "monitoring_store": FolderResource(root=str(data / "monitoring"))
    }
    tracker = resources["mlflow_store"].tracker()
    store = resources["tick_store"].store()
    days = {d: simulator(SYMBOL, 7).day(d) for d in (date(2026, 1, 1), LIVE_DAY)}
    for d, frame in days.items():
        store.write_day(SYMBOL, d, frame)
    ticks = {SYMBOL: pd.concat(days.values(), ignore_index=True)}
    spec = DatasetSpec(symbols=[SYMBOL], start=LIVE_DAY, end=LIVE_DAY, sequence_length=20)
    dataset = build_dataset(spec, ticks)
    candidate = train_candidate(dataset, profile_config("demo", "xgboost", seed=0, **TINY), tracker)
    name, v2 = candidate.registered_name, candidate.version
    test = load_predictions(tracker, candidate.run_id)
    report = backtest_predictions(
        candidate.name, ticks, test, ExecutionConfig(), dataset.meta.boundaries[1], spec.end_epoch, draws=20
    )
    # A backtest tags every version of its training run: v2 gets the pooled one back after the second.
    pooled = log_backtest(tracker, candidate.run_id, report, data / "reports")
    v1 = tracker.register(candidate.model_uri, name, {"model_type": "xgboost"})
    log_backtest(tracker, candidate.run_id, report, data / "reports", {SYMBOL: report})
    tracker.set_version_tag(name, v2, BACKTEST_RUN_TAG, pooled.run_id)
    folder = data / "predictions"
    monkeypatch = pytest.MonkeyPatch()
    _log_as_the_service(folder, 1, name, v1, test, monkeypatch)
    swapped = test.rename(columns={"p_down": "p_up", "p_up": "p_down"})
    _log_as_the_service(folder, 2, name, v2, swapped, monkeypatch)
    with open(folder / f"predictions-{LIVE_DAY}-1.jsonl", "a") as extra:
        window = json.loads(service_line(registered_model=name, version=v1, epoch=None, endpoint="features"))
        extra.write(json.dumps(window | {"timestamp": stamp(LIVE_DAY, 80_000)}) + "\n")
        twice = json.loads(service_line(registered_model=name, version=v1, epoch=int(test["epoch"].iloc[5])))
        extra.write(json.dumps(twice | {"timestamp": stamp(LIVE_DAY, 80_001), "client": "second"}) + "\n")
        extra.write('{"timestamp": "2026-01-02T23:00:00+00:00", "endpoint": \n')
    config = {"ops": {"prediction_log": {"config": {"folder": str(folder)}}}}
    with dg.instance_for_test() as instance:
        logged = dg.materialize(
            [prediction_log, prediction_log_complete],
            partition_key=LIVE_DAY.isoformat(),
            resources=resources,
            instance=instance,
            run_config={**QUIET, **config},
        )
        served = instance.get_dynamic_partitions(SERVED.name)
        runs = {}
        for version, ops in ((v1, {}), (v2, {"latency_p99_target_ms": 0.5})):
            key = dg.MultiPartitionKey({"date": LIVE_DAY.isoformat(), "served": served_key(name, version)})
            runs[version] = dg.materialize(
                [*MONITORING_ASSETS],
                selection=[live_performance],
                partition_key=key,
                resources=resources,
                instance=instance,
                run_config={**QUIET, "ops": {"live_performance": {"config": ops}}},
            )
        strict = dg.materialize(
            [prediction_log, prediction_log_complete],
            partition_key=LIVE_DAY.isoformat(),
            resources=resources,
            instance=instance,
            run_config={
                **QUIET,
                "ops": {**config["ops"], prediction_log_complete.node_def.name: {"config": {"max_rejected_share": 0.0}}},
            },
        )
        yield SimpleNamespace(
            resources=resources, tracker=tracker, name=name, versions=(v1, v2), test=test, report=report,
            logged=logged, served=served, runs=runs, strict=strict, folder=folder, model_uri=candidate.model_uri,
        )  # fmt: skip


def _check(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def test_prediction_log_consolidates_the_day_and_adds_the_served_versions(monitored):
    m = monitored
    assert m.logged.success
    record = m.resources["records"].store().load(["prediction_log", LIVE_DAY.isoformat()], PredictionLogRecord)
    logged = 2 * len(m.test) + 2
    assert (record.read, record.kept, record.rejected) == (logged + 1, logged, {"malformed JSON": 1})
    assert [Path(f).name for f in record.files] == [f"predictions-{LIVE_DAY}-{pid}.jsonl" for pid in (1, 2)]
    assert sorted(m.served) == sorted(served_key(m.name, v) for v in m.versions)
    assert record.models == sorted(m.served)
    metadata = m.logged.asset_materializations_for_node("prediction_log")[0].metadata
    assert (metadata["read"].value, metadata["kept"].value, metadata["rejected"].value) == (logged + 1, logged, 1)
    (reason,) = metadata["rejected_reasons"].value.records
    assert reason.data["reason"] == "malformed JSON" and reason.data["first"].startswith(f"predictions-{LIVE_DAY}-1.jsonl:")
    assert {r.data["served"] for r in metadata["models"].value.records} == set(m.served)
    complete = _check(m.logged, COMPLETE_CHECK)
    assert complete.passed and complete.metadata["lines"].value == logged + 1
    strict = _check(m.strict, COMPLETE_CHECK)
    assert not strict.passed and "rejected > 0.00%" in strict.description
    frame = read_day(record.path)
    assert len(frame) == logged and frame["timestamp"].is_monotonic_increasing
    assert set(frame["variant"]) == {"champion", "challenger"}


def test_live_performance_of_a_replayed_backtest_equals_the_backtest(monitored):
    """The champion's log is its own test predictions at their ticks: the live trades are the backtest's,
    the accuracy its test accuracy, and the test finds nothing (p = 1)."""
    m = monitored
    v1 = m.versions[0]
    result = m.runs[v1]
    assert result.success
    record = (
        m.resources["records"]
        .store()
        .load(["live_performance", f"{LIVE_DAY.isoformat()}|{served_key(m.name, v1)}"], LivePerformanceRecord)
    )
    report, f = m.report, record.figures
    assert record.predictions == len(m.test) + 2
    assert (f["with_epoch"], f["duplicates"], f["resolved"]) == (len(m.test) + 1, 1, len(m.test))
    assert f["trades"] == report.metrics["trades"] > 30
    assert f["win_rate"] == pytest.approx(report.metrics["win_rate"], abs=1e-12)
    assert f["expectancy"] == pytest.approx(report.metrics["expectancy"], rel=1e-9)
    assert f["total_pnl_net"] == pytest.approx(report.metrics["total_pnl_net"], rel=1e-9)
    training = m.tracker.client.get_run(load_served_version(m.tracker, m.name, v1).training_run_id)
    assert f["accuracy"] == pytest.approx(training.data.metrics["test/accuracy"], abs=1e-12)
    assert f["accuracy_ci_low"] < f["accuracy_independent"] < f["accuracy_ci_high"]
    assert f["accuracy_independent_n"] == pytest.approx(len(m.test) / 10, rel=0.01), "one label horizon apart"
    assert record.backtest_scope == SCOPE_SYMBOLS and record.compared_symbols == [SYMBOL]
    assert record.backtest["trades"] == f["trades"] and record.backtest["wins"] == f["wins"]
    # The same trades and wins; their P&L means agree to rounding (1e-9 above), so p is 1 to rounding.
    assert record.degradation_p_value == pytest.approx(1.0, abs=1e-9) and not record.degraded
    assert record.execution == report.config.model_dump()
    assert 0.3 <= f["latency_p50_ms"] <= f["latency_p99_ms"] <= 1.2
    metadata = result.asset_materializations_for_node("live_performance")[0].metadata
    for key in ("live_win_rate", "backtest_win_rate", "live_accuracy", "latency_p99_ms", "degradation_p_value"):
        assert isinstance(metadata[key].value, float), key
    assert metadata["trades"].value == f["trades"]
    rows = {r.data["figure"]: r.data for r in metadata["side_by_side"].value.records}
    assert rows["trades"]["live"] == rows["trades"]["backtest"] == f["trades"]
    assert metadata["pnl"].value.startswith("![live cumulative P&L")
    print(f"replayed: live = backtest: {f['trades']} trades, win rate {f['win_rate']:.3f}, accuracy {f['accuracy']:.4f}")
    degradation = _check(result, DEGRADATION_CHECK)
    assert degradation.passed and degradation.severity == dg.AssetCheckSeverity.WARN
    assert degradation.description.startswith("no significant change") and f"n = {f['trades']:,}" in degradation.description
    assert _check(result, LATENCY_CHECK).passed


def test_live_performance_flags_a_degraded_version_and_a_slow_day(monitored):
    """The second version's log calls UP where it had called DOWN: its live win rate falls far below its
    backtest's (pooled figures: that backtest has none per symbol), and its p99 is over a 0.5 ms target."""
    m = monitored
    v2 = m.versions[1]
    result = m.runs[v2]
    assert result.success, "a failed check is a warning, not a failed run"
    record = (
        m.resources["records"]
        .store()
        .load(["live_performance", f"{LIVE_DAY.isoformat()}|{served_key(m.name, v2)}"], LivePerformanceRecord)
    )
    f, b = record.figures, record.backtest
    live, backtest = f"{f['win_rate']:.3f} (n = {f['trades']})", f"{b['win_rate']:.3f} (n = {b['trades']})"
    print(f"swapped: live win rate {live} vs backtest {backtest}, p = {record.degradation_p_value:.2g}")
    assert record.backtest_scope == SCOPE_POOLED and record.compared_symbols == ["all"]
    assert record.figures["win_rate"] < record.backtest["win_rate"]
    assert record.degraded and record.degradation_p_value < 1e-6
    degradation = _check(result, DEGRADATION_CHECK)
    assert not degradation.passed and degradation.severity == dg.AssetCheckSeverity.WARN
    assert degradation.description.startswith("degraded: live")
    latency = _check(result, LATENCY_CHECK)
    assert not latency.passed and "> target 0.5 ms" in latency.description


def test_a_version_without_a_backtest_or_registry_entry_is_named(monitored):
    m = monitored
    with pytest.raises(MonitoringError, match=f"{m.name} v99 is not in the model registry"):
        load_served_version(m.tracker, m.name, "99")
    unjudged = m.tracker.register(m.model_uri, m.name, {"model_type": "xgboost"})
    with pytest.raises(MonitoringError, match=f"{m.name} v{unjudged} has no backtest \\(version tag backtest_run_id\\)"):
        load_served_version(m.tracker, m.name, unjudged)


def test_the_module_exports_what_definitions_wire():
    assert [a.key.path[-1] for a in MONITORING_ASSETS] == ["prediction_log", "live_performance"]
    assert [c.check_key.name for c in MONITORING_CHECKS] == [COMPLETE_CHECK]
    assert {s.name for s in live_performance.check_specs} == {DEGRADATION_CHECK, LATENCY_CHECK}
