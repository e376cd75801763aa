"""Live performance of one served model version on one UTC day, beside its backtest.

What was logged (`predlog`) is judged by what happened next, with the rules the version was judged by
before it was served:

- **Accuracy.** Each prediction made at a tick (`epoch`) gets the label the model was trained on: the
  training run's `dataset_meta.json` holds the dataset spec (label rule and target), and `label_frame`
  labels the stored ticks exactly as the dataset did, reading past the day's end so that the last
  predictions resolve. A feature-window request has no tick (`no epoch`), a tick the store lacks
  cannot be labelled (`no tick`), and a label whose horizon runs past the ticks read stays
  `unresolved`. Two predictions of one tick (two clients streaming a symbol) count once, the first
  logged. Labels of nearby ticks overlap, so the 95 % interval (Wilson) counts only predictions whose
  label windows do not overlap, as the training's edge test does (`accuracy_independent`, its `n`).
- **Trades.** The logged probabilities at their ticks go through the backtest engine (`run_backtest`)
  with the execution config of the version's backtest (`backtest/execution.json` of the run its
  `backtest_run_id` tag names): the trades the strategy would have made that day, their win rate
  (Wilson interval), expectancy and net P&L. Positions may close after midnight on the next day's ticks.
- **Degradation.** The live win rate against the backtest's, per symbol. The test is a two-sided
  *stratified two-sample score test of proportions*: per symbol, the live wins are compared with what
  the pooled (live + backtest) rate predicts, summed over the symbols, with the binomial variance; for
  one symbol it is exactly the pooled two-proportion z-test. Two samples, because the backtest's win
  rate is itself an estimate: a live day often has more trades than the backtest's test span, and
  treating the backtest's rate as known (an exact binomial test of the live wins) then rejects a model
  that has not changed far too often (16.5 % at a nominal 5 % with 200 trades on each side, 42 % with
  500 live against 100 backtest trades, for a true rate of 0.6). Per symbol, because the service only
  trades the symbols the gate cleared while the backtest's pooled win rate also counts the others: a
  pooled comparison would report a change in the mix of symbols as a change in the model. The score
  test's exact size stays within half a percentage point of alpha from 20 trades on a side for win
  rates from 0.3 to 0.8 (it turns conservative towards 0 or 1), and 1,000 simulated null days reject
  at alpha (`scalping_assets_tests/test_monitoring_live.py`). Trades are taken as independent, as
  the backtest's Wilson interval takes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pydantic import ValidationError
from scipy.stats import norm

from ..backtest.engine import ExecutionConfig, TickPath, run_backtest
from ..backtest.metrics import DAY, performance
from ..backtest.runs import BACKTEST, BACKTEST_RUN_TAG
from ..backtest.significance import Z95, wilson_interval
from ..features.dataset import DatasetSpec
from ..features.labels import PROBABILITY_COLUMNS, UNRESOLVED, label_frame
from ..market.simulator import day_start_epoch
from ..market.symbols import get_symbol
from ..models.tracking import MlflowException, Tracker  # MLflow's error, through the one module that imports it
from ..plotting import figure_png

DATASET_META = "dataset_meta.json"  # logged by every training run (`models.pipeline.log_dataset`)
EXECUTION_ARTIFACT = f"{BACKTEST}execution.json"  # logged by every backtest run (`backtest.runs.log_backtest`)
TEST_ACCURACY = "test/accuracy"  # the training run's accuracy on its test span
# Ticks read before the day: sigma barriers (labels and exits) scale by the RMS move of the 100 ticks
# before each entry, as the backtest's warm-up does.
WARMUP_SECONDS = 3600
DEGRADATION_TEST = "stratified two-sample score test of proportions (per symbol), two-sided"

# Status of a logged prediction
RESOLVED, UNRESOLVED_LABEL, NO_EPOCH, NO_TICK, DUPLICATE = "resolved", "unresolved", "no epoch", "no tick", "duplicate"

# What the backtest's side covers: its own figures of the live symbols, or, for a backtest logged
# before per-symbol figures, its pooled ones.
SCOPE_SYMBOLS, SCOPE_POOLED = "the live symbols", "all its symbols (no per-symbol figures)"
Summary = dict[str, float | int | bool | None]


class MonitoringError(RuntimeError):
    """A served version whose training or backtest cannot be read back; the message names the model
    version, the run and the artifact or tag."""


@dataclass(frozen=True)
class ServedVersion:
    """What judging a served version needs from MLflow: its label rule, execution and backtest figures."""

    registered_model: str
    version: str
    training_run_id: str
    backtest_run_id: str
    spec: DatasetSpec  # labels, target
    execution: ExecutionConfig
    backtest_metrics: dict[str, float]  # the backtest run's metrics, `backtest/...`
    test_accuracy: float  # the training run's, on its test span (NaN: not logged)


def load_served_version(tracker: Tracker, registered_model: str, version: str) -> ServedVersion:
    """The version's training run (its registry entry) and latest backtest (its `backtest_run_id` tag)."""
    named = f"{registered_model} v{version}"
    try:
        entry = tracker.client.get_model_version(registered_model, version)
    except MlflowException as exc:
        raise MonitoringError(f"{named} is not in the model registry ({exc.message})") from exc
    run_id = entry.run_id
    try:
        spec = DatasetSpec.model_validate(tracker.load_dict(run_id, DATASET_META)["spec"])
    except FileNotFoundError as exc:
        raise MonitoringError(f"{named}: its training run {run_id} has no {DATASET_META}: its label rule is unknown") from exc
    except (KeyError, ValidationError) as exc:
        raise MonitoringError(f"{named}: {DATASET_META} of run {run_id} holds no readable dataset spec ({exc})") from exc
    backtest_run = (entry.tags or {}).get(BACKTEST_RUN_TAG)
    if not backtest_run:
        raise MonitoringError(
            f"{named} has no backtest (version tag {BACKTEST_RUN_TAG}): materialize backtest_report on its dataset first"
        )
    try:
        execution = ExecutionConfig.model_validate(tracker.load_dict(backtest_run, EXECUTION_ARTIFACT))
    except FileNotFoundError as exc:
        raise MonitoringError(f"{named}: its backtest run {backtest_run} has no {EXECUTION_ARTIFACT}") from exc
    except ValidationError as exc:
        raise MonitoringError(
            f"{named}: {EXECUTION_ARTIFACT} of backtest run {backtest_run} is not an execution config ({exc})"
        ) from exc
    metrics = tracker.client.get_run(backtest_run).data.metrics
    accuracy = tracker.client.get_run(run_id).data.metrics.get(TEST_ACCURACY, math.nan)
    return ServedVersion(registered_model, version, run_id, backtest_run, spec, execution, dict(metrics), accuracy)


def tick_span(day: date, lookahead_seconds: int) -> tuple[int, int]:
    """[start, end) epochs of the ticks to read for `day`: its warm-up before, `lookahead_seconds` after."""
    return day_start_epoch(day) - WARMUP_SECONDS, day_start_epoch(day) + DAY + lookahead_seconds


# -- accuracy --------------------------------------------------------------------------------------


def resolve(predictions: pd.DataFrame, ticks: dict[str, pd.DataFrame], spec: DatasetSpec) -> pd.DataFrame:
    """The logged predictions (a `predlog.read_day` frame) with `predicted` (class index, ties to the
    first class as the engine's), `status`, `tick` (row in the symbol's ticks, -1 without) and `label`
    (the training target's class; -1 unless resolved)."""
    out = predictions.reset_index(drop=True).copy()
    n = len(out)
    proba = out[PROBABILITY_COLUMNS].to_numpy(np.float64).reshape(n, len(PROBABILITY_COLUMNS))
    out["predicted"] = proba.argmax(axis=1) if n else np.zeros(0, np.int64)
    status = np.full(n, NO_TICK, dtype=object)
    tick = np.full(n, -1, np.int64)
    label = np.full(n, UNRESOLVED, np.int64)
    has_epoch = out["epoch"].notna().to_numpy()
    status[~has_epoch] = NO_EPOCH
    first = ~out[has_epoch].duplicated(["symbol", "epoch"], keep="first").to_numpy()
    duplicate = np.zeros(n, bool)
    duplicate[np.flatnonzero(has_epoch)[~first]] = True
    status[duplicate] = DUPLICATE
    candidates = has_epoch & ~duplicate
    for symbol in out.loc[candidates, "symbol"].unique():
        frame = ticks.get(symbol)
        if frame is None or frame.empty:
            continue
        rows = np.flatnonzero(candidates & (out["symbol"] == symbol).to_numpy())
        epochs = frame["epoch"].to_numpy(np.int64)
        wanted = out["epoch"].to_numpy()[rows].astype(np.int64)
        at = np.minimum(np.searchsorted(epochs, wanted), len(epochs) - 1)
        found = epochs[at] == wanted
        labels = label_frame(frame, get_symbol(symbol).pip_size, spec.labels)[spec.target].to_numpy(np.int64)
        rows, at = rows[found], at[found]
        tick[rows] = at
        label[rows] = labels[at]
        status[rows] = np.where(labels[at] == UNRESOLVED, UNRESOLVED_LABEL, RESOLVED)
    out["status"], out["tick"], out["label"] = status, tick, label
    return out


def independent_rows(resolved: pd.DataFrame, lookahead: int) -> np.ndarray:
    """Positions (in `resolved`) of resolved predictions whose label windows do not overlap: per symbol,
    in tick order, each at least `lookahead` ticks after the last one taken."""
    taken = []
    ok = resolved[resolved["status"] == RESOLVED]
    for _, group in ok.groupby("symbol", sort=True):
        last = None
        for position, t in zip(group.index, group["tick"].to_numpy(), strict=True):
            if last is None or t >= last + lookahead:
                taken.append(position)
                last = t
    return np.asarray(sorted(taken), np.int64)


def accuracy_figures(resolved: pd.DataFrame, lookahead: int) -> Summary:
    ok = resolved["status"] == RESOLVED
    correct = (resolved["predicted"] == resolved["label"]) & ok
    independent = independent_rows(resolved, lookahead)
    hits = int(correct.loc[independent].sum()) if len(independent) else 0
    low, high = wilson_interval(hits, len(independent))
    counts = resolved["status"].value_counts()
    return {
        "predictions": len(resolved),
        "with_epoch": int(resolved["epoch"].notna().sum()),
        "duplicates": int(counts.get(DUPLICATE, 0)),
        "no_tick": int(counts.get(NO_TICK, 0)),
        "unresolved": int(counts.get(UNRESOLVED_LABEL, 0)),
        "resolved": int(ok.sum()),
        "accuracy": float(correct.sum() / ok.sum()) if ok.any() else math.nan,
        "accuracy_independent": hits / len(independent) if len(independent) else math.nan,
        "accuracy_independent_n": len(independent),
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
    }


# -- trades ----------------------------------------------------------------------------------------


def live_trades(
    resolved: pd.DataFrame, ticks: dict[str, pd.DataFrame], execution: ExecutionConfig
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], int]:
    """(all trades, trades per symbol, positions still open when the ticks end) of the logged
    predictions at known ticks, executed on each symbol's ticks as the backtest does. Every logged
    prediction trades in the day it was logged, its tick of the day before included (a stream that
    answered just after midnight): each is counted in exactly one day."""
    traded = resolved[resolved["status"].isin([RESOLVED, UNRESOLVED_LABEL])]
    per_symbol, unfinished = {}, 0
    for symbol, group in traded.groupby("symbol", sort=True):
        frame, pip = ticks[symbol], get_symbol(symbol).pip_size
        path = TickPath.build(symbol, frame["epoch"].to_numpy(), frame["quote"].to_numpy(), pip, execution)
        proba = np.full((len(path.epochs), len(PROBABILITY_COLUMNS)), np.nan)
        proba[group["tick"].to_numpy(np.int64)] = group[PROBABILITY_COLUMNS].to_numpy(np.float64)
        result = run_backtest(path, proba, execution)
        per_symbol[symbol] = result.trades
        unfinished += result.unfinished
    if per_symbol:
        trades = pd.concat(per_symbol.values(), ignore_index=True)
        trades = trades.sort_values(["entry_epoch", "symbol"], kind="stable").reset_index(drop=True)
    else:
        trades = _no_trades()
    return trades, per_symbol, unfinished


def _no_trades() -> pd.DataFrame:
    """An empty trade frame with the columns the figures read (a day without a signal)."""
    text, numbers = ("symbol", "reason"), ("signal_epoch", "entry_epoch", "exit_epoch", "side", "pnl_gross", "pnl_net")
    numbers += ("slippage_cost", "hold_ticks", "hold_seconds")
    return pd.DataFrame({c: pd.Series(dtype=object if c in text else np.float64) for c in text + numbers})


def trade_figures(trades: pd.DataFrame, capital: float, start: int, end: int) -> Summary:
    metrics = performance(trades, capital, start, end)
    wins = int((trades["pnl_net"] > 0).sum())
    low, high = wilson_interval(wins, len(trades))
    return {
        "trades": len(trades),
        "wins": wins,
        "win_rate": metrics["win_rate"],
        "win_rate_ci_low": low,
        "win_rate_ci_high": high,
        "expectancy": metrics["expectancy"],
        "total_pnl_net": metrics["total_pnl_net"],
        "long_pct": metrics["long_pct"],
    }


# -- the backtest's side ---------------------------------------------------------------------------


def _metric(metrics: dict[str, float], key: str) -> float:
    return float(metrics.get(f"{BACKTEST}{key}", math.nan))


def _side(metrics: dict[str, float], prefix: str) -> Summary:
    """Trades, wins, win rate (Wilson interval), expectancy and net P&L of the backtest's metrics under
    `backtest/<prefix>`; its win count from its win rate and trades."""
    trades, win_rate = _metric(metrics, f"{prefix}trades"), _metric(metrics, f"{prefix}win_rate")
    expectancy, pnl = _metric(metrics, f"{prefix}expectancy"), _metric(metrics, f"{prefix}total_pnl_net")
    n = int(trades) if math.isfinite(trades) else 0
    wins = round(win_rate * n) if n and math.isfinite(win_rate) else 0
    low, high = wilson_interval(wins, n)
    return {
        "trades": n,
        "wins": wins,
        "win_rate": wins / n if n else math.nan,
        "win_rate_ci_low": low,
        "win_rate_ci_high": high,
        "expectancy": expectancy,
        "total_pnl_net": pnl,
        "sharpe_per_trade": _metric(metrics, f"{prefix}sharpe_per_trade"),
    }


def backtest_per_symbol(metrics: dict[str, float], symbols: list[str]) -> dict[str, Summary]:
    """The backtest's own figures of each symbol it reports (`backtest/<symbol>/...`) among `symbols`."""
    out = {}
    for s in symbols:
        if math.isfinite(_metric(metrics, f"{s}/trades")):
            out[s] = _side(metrics, f"{s}/")
    return out


def _pnl_spread(parts: list[Summary]) -> float:
    """Standard deviation of one trade's net P&L over the parts together (a mixture of the symbols'
    trades), from each part's expectancy and per-trade Sharpe ratio; NaN when one is unknown."""
    n = sum(p["trades"] for p in parts)
    if not n:
        return math.nan
    mean = sum(p["expectancy"] * p["trades"] for p in parts) / n
    second = 0.0
    for p in parts:
        sharpe = p.get("sharpe_per_trade", math.nan)
        if not (math.isfinite(sharpe) and sharpe != 0 and math.isfinite(p["expectancy"])):
            return math.nan
        second += p["trades"] * ((p["expectancy"] / sharpe) ** 2 + (p["expectancy"] - mean) ** 2)
    return math.sqrt(second / n)


def backtest_side(served: ServedVersion, symbols: list[str]) -> tuple[Summary, dict[str, Summary]]:
    """(the backtest's figures over `symbols`, weighted by its own trades per symbol; per symbol). When
    it reports none of them apart (a backtest logged before per-symbol figures), its pooled figures."""
    metrics = served.backtest_metrics
    per_symbol = backtest_per_symbol(metrics, symbols)
    pooled = _side(metrics, "")
    parts = [p for p in per_symbol.values() if p["trades"]]
    if per_symbol:
        n, wins = sum(p["trades"] for p in parts), sum(p["wins"] for p in parts)
        low, high = wilson_interval(wins, n)
        side: Summary = {
            "trades": n,
            "wins": wins,
            "win_rate": wins / n if n else math.nan,
            "win_rate_ci_low": low,
            "win_rate_ci_high": high,
            "expectancy": sum(p["expectancy"] * p["trades"] for p in parts) / n if n else math.nan,
            "total_pnl_net": sum(p["total_pnl_net"] for p in parts),
            "pnl_std": _pnl_spread(parts),
        }
    else:
        side = {**pooled, "pnl_std": _pnl_spread([pooled])}
        side.pop("sharpe_per_trade")
    side |= {
        "accuracy": served.test_accuracy,
        "all_symbols_trades": pooled["trades"],
        "all_symbols_win_rate": pooled["win_rate"],
        "all_symbols_expectancy": pooled["expectancy"],
    }
    return side, per_symbol


# -- degradation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DegradationTest:
    """The live win rate against the backtest's (see the module's docstring)."""

    statistic: float  # z: positive when live wins more often than the backtest predicts
    p_value: float | None  # two-sided; None: no symbol with trades on both sides
    live_wins: int
    live_trades: int
    backtest_wins: int
    backtest_trades: int
    symbols: list[str]  # the strata compared

    @property
    def live_win_rate(self) -> float:
        return self.live_wins / self.live_trades if self.live_trades else math.nan

    @property
    def backtest_win_rate(self) -> float:
        return self.backtest_wins / self.backtest_trades if self.backtest_trades else math.nan


def degradation_test(live: dict[str, tuple[int, int]], backtest: dict[str, tuple[int, int]]) -> DegradationTest:
    """Two-sided stratified score test of `live` {symbol: (wins, trades)} against `backtest`'s, over
    the symbols with trades on both sides. Per symbol: U = x_live - n_live * p (p the pooled rate),
    V = n_live * n_backtest * p * (1 - p) / (n_live + n_backtest); z = sum U / sqrt(sum V)."""
    strata = sorted(s for s in live if live[s][1] > 0 and backtest.get(s, (0, 0))[1] > 0)
    u = v = 0.0
    for s in strata:
        (x1, n1), (x2, n2) = live[s], backtest[s]
        p = (x1 + x2) / (n1 + n2)
        u += x1 - n1 * p
        v += n1 * n2 * p * (1 - p) / (n1 + n2)
    if not strata:
        z, p_value = math.nan, None
    elif v == 0:  # every trade of both sides won (or lost): no evidence of a difference
        z, p_value = 0.0, 1.0
    else:
        z = u / math.sqrt(v)
        p_value = float(2 * norm.sf(abs(z)))
    return DegradationTest(
        statistic=z,
        p_value=p_value,
        live_wins=sum(live[s][0] for s in strata),
        live_trades=sum(live[s][1] for s in strata),
        backtest_wins=sum(backtest[s][0] for s in strata),
        backtest_trades=sum(backtest[s][1] for s in strata),
        symbols=strata,
    )


# -- one day ---------------------------------------------------------------------------------------


@dataclass
class LivePerformance:
    figures: Summary  # live: accuracy, trades, win rate, expectancy, latency ...
    backtest: Summary  # the same from the version's backtest, over the live symbols (see backtest_scope)
    backtest_scope: str
    per_symbol: dict[str, Summary]  # live, per symbol
    backtest_per_symbol: dict[str, Summary]
    test: DegradationTest
    degraded: bool  # enough trades, p < alpha, and the live win rate the lower
    symbols: list[str]
    resolved: pd.DataFrame  # the predictions with status, label, predicted
    trades: pd.DataFrame
    plot: bytes


def _finite(summary: Summary) -> Summary:
    """None for NaN and infinity (JSON has neither), plain Python numbers."""
    out: Summary = {}
    for k, v in summary.items():
        if isinstance(v, float | np.floating):
            out[k] = float(v) if math.isfinite(v) else None
        elif isinstance(v, np.integer):
            out[k] = int(v)
        else:
            out[k] = v
    return out


def judge_day(
    day: date,
    predictions: pd.DataFrame,
    ticks: dict[str, pd.DataFrame],
    served: ServedVersion,
    alpha: float = 0.05,
    min_trades: int = 20,
) -> LivePerformance:
    """One day of `served`'s logged predictions (rows of that version only) against `ticks` (each
    symbol's ticks of `tick_span(day, ...)`), traded, beside its backtest."""
    start = day_start_epoch(day)
    end = start + DAY
    resolved = resolve(predictions, ticks, served.spec)
    figures = accuracy_figures(resolved, served.spec.target_lookahead)
    trades, by_symbol, unfinished = live_trades(resolved, ticks, served.execution)
    figures |= trade_figures(trades, served.execution.capital, start, end) | {"unfinished": unfinished}
    latency = predictions["latency_ms"].to_numpy(np.float64)
    figures |= {
        "latency_p50_ms": float(np.percentile(latency, 50)) if len(latency) else math.nan,
        "latency_p99_ms": float(np.percentile(latency, 99)) if len(latency) else math.nan,
    }
    symbols = sorted(predictions["symbol"].unique())
    backtest, backtest_symbols = backtest_side(served, symbols)
    per_symbol = {s: trade_figures(by_symbol.get(s, _no_trades()), served.execution.capital, start, end) for s in symbols}
    if backtest_symbols:
        compared = {s: (int(b["wins"]), int(b["trades"])) for s, b in backtest_symbols.items()}
        live_counts = {s: (int(f["wins"]), int(f["trades"])) for s, f in per_symbol.items()}
    else:  # one stratum: all symbols on both sides
        compared = {"all": (int(backtest["wins"]), int(backtest["trades"]))}
        live_counts = {"all": (int(figures["wins"]), int(figures["trades"]))}
    test = degradation_test(live_counts, compared)
    degraded = (
        test.p_value is not None
        and test.live_trades >= min_trades
        and test.p_value < alpha
        and test.live_win_rate < test.backtest_win_rate
    )
    plot = pnl_plot(trades, backtest, f"{served.registered_model} v{served.version}, {day.isoformat()}")
    return LivePerformance(
        figures=_finite(figures),
        backtest=_finite(backtest),
        backtest_scope=SCOPE_SYMBOLS if backtest_symbols else SCOPE_POOLED,
        per_symbol={s: _finite(f) for s, f in per_symbol.items()},
        backtest_per_symbol={s: _finite(b) for s, b in backtest_symbols.items()},
        test=test,
        degraded=bool(degraded),
        symbols=symbols,
        resolved=resolved,
        trades=trades,
        plot=plot,
    )


def pnl_plot(trades: pd.DataFrame, backtest: Summary, title: str) -> bytes:
    """The live cumulative net P&L, trade by trade in exit order, against the backtest's expectancy
    line and its 95 % band (± 1.96 standard deviations of a sum of k trades) where its spread is known."""
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=90)
    pnl = trades.sort_values(["exit_epoch", "entry_epoch"], kind="stable")["pnl_net"].to_numpy(np.float64)
    k = np.arange(len(pnl) + 1)
    ax.plot(k, np.concatenate([[0.0], np.cumsum(pnl)]), color="#4477aa", linewidth=1.2, label="live")
    expectancy, spread = backtest.get("expectancy"), backtest.get("pnl_std")
    if expectancy is not None and math.isfinite(expectancy):
        line = expectancy * k
        ax.plot(k, line, color="black", linestyle="--", linewidth=1, label=f"backtest expectancy {expectancy:.4g}/trade")
        if spread is not None and math.isfinite(spread):
            band = Z95 * spread * np.sqrt(k)
            ax.fill_between(k, line - band, line + band, color="grey", alpha=0.2, linewidth=0, label="95 % band")
    ax.axhline(0, color="grey", linewidth=0.6)
    if not len(pnl):
        ax.text(0.5, 0.5, "no trades", transform=ax.transAxes, ha="center", va="center", color="grey")
    ax.set_xlabel("trades (exit order)")
    ax.set_ylabel("cumulative net P&L")
    ax.set_title(f"{title}: {len(pnl):,} trades", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    return figure_png(fig)
