"""Backtest against paper as numbers: one symbol's day replayed by the batch path and joined with the journal.

The replay starts where the paper trader started (its first traded tick less the same feature
warm-up, `paper.warmup_seconds`), or a warm-up hour before the day for a session that began earlier,
and computes what the paper trader computed, the batch way: `compute_features` over the ticks,
the bundle's ONNX graphs over every window at once, and `run_backtest`. Ticks before the session's
first traded tick get no prediction, as on paper. The day's signals and trades (by signal epoch) of
both are joined on their order id (symbol and signal epoch):

- **signals**: the same ticks with the same side;
- **trades**: matched when entry epoch, exit epoch and exit reason agree; |ΔP&L| per matched trade;
  the cumulative tracking error (the largest gap between the two running P&L sums, in trade order);
  the ratio of paper to backtest P&L (the roadmap asks for at least 90 %);
- every mismatch with its explanation (`explain`).

A venue broker's fills (a Deriv virtual account) are compared with the paper fills of the same orders
the same way (`compare_fills`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from serving.bundle import OnnxPredictor

from ..backtest.engine import ExecutionConfig, TickPath, run_backtest, signal_sides
from ..features.batch import compute_features
from ..features.labels import PROBABILITY_COLUMNS
from ..market.symbols import get_symbol

BATCH = 4096  # windows per ONNX call
# Two probabilities closer than this to the confidence threshold (or to each other, for the argmax)
# can fall on either side between the streaming and the batch float paths.
KNIFE_EDGE = 1e-6


def replay_probabilities(predictor: OnnxPredictor, symbol: str, ticks: pd.DataFrame, first_epoch: int) -> np.ndarray:
    """(n, 3) probabilities the batch path gives at every tick from `first_epoch` (NaN before it and
    where the window is not warm yet)."""
    m = predictor.manifest
    features = compute_features(ticks, get_symbol(symbol).pip_size, m.fitted[symbol])[m.feature_names].to_numpy(np.float32)
    n, window = len(features), m.window
    proba = np.full((n, len(PROBABILITY_COLUMNS)), np.nan)
    start = max(int(np.searchsorted(ticks["epoch"].to_numpy(), first_epoch)), window - 1)
    ends = np.arange(start, n)
    ready = ends[np.isfinite(features[ends - window + 1]).all(axis=1)]
    for chunk in range(0, len(ready), BATCH):
        at = ready[chunk : chunk + BATCH]
        windows = np.stack([features[t - window + 1 : t + 1] for t in at])
        proba[at] = predictor.predict(windows, symbol)
    return proba


@dataclass
class Replay:
    epochs: np.ndarray
    proba: np.ndarray
    sides: np.ndarray
    trades: pd.DataFrame


def replay(predictor: OnnxPredictor, execution: ExecutionConfig, symbol: str, ticks: pd.DataFrame, first_epoch: int) -> Replay:
    proba = replay_probabilities(predictor, symbol, ticks, first_epoch)
    epochs = ticks["epoch"].to_numpy(np.int64)
    path = TickPath.build(symbol, epochs, ticks["quote"].to_numpy(np.float64), get_symbol(symbol).pip_size, execution)
    result = run_backtest(path, proba, execution)
    trades = result.trades.copy()
    trades["order_id"] = [f"{symbol}-{e}" for e in trades["signal_epoch"]]
    trades["reason"] = trades["reason"].astype(str)
    return Replay(epochs, proba, signal_sides(proba, execution.min_confidence), trades)


def _knife_edge(proba: np.ndarray, min_confidence: float) -> bool:
    p = np.sort(proba)[::-1]
    return abs(p[0] - min_confidence) < KNIFE_EDGE or abs(p[0] - p[1]) < KNIFE_EDGE


def compare_signals(replayed: Replay, journal: pd.DataFrame, lo: int, hi: int, min_confidence: float) -> tuple[dict, list[dict]]:
    """Signals with lo <= epoch < hi: (figures, mismatches). `journal`: the paper_signals rows."""
    in_day = (replayed.epochs >= lo) & (replayed.epochs < hi) & (replayed.sides != 0)
    batch = dict(zip(replayed.epochs[in_day].tolist(), replayed.sides[in_day].tolist(), strict=True))
    journal = journal[(journal["epoch"] >= lo) & (journal["epoch"] < hi)]
    paper = dict(zip(journal["epoch"].tolist(), journal["side"].tolist(), strict=True))
    epochs = sorted(set(batch) | set(paper))
    mismatches = []
    where = {e: i for i, e in enumerate(replayed.epochs.tolist())}
    for epoch in epochs:
        if batch.get(epoch) == paper.get(epoch):
            continue
        i = where.get(epoch)
        if i is None:
            why = "the paper trader saw a tick the recorded ticks lack"
        elif np.isnan(replayed.proba[i]).any():
            why = "no batch prediction at this tick (features not warm in the replay)"
        elif _knife_edge(replayed.proba[i], min_confidence):
            why = f"probability within {KNIFE_EDGE:g} of the threshold or of a tie: float paths differ in the last bits"
        else:
            why = "unexplained"
        mismatches.append(
            {"kind": "signal", "epoch": epoch, "paper": paper.get(epoch, 0), "backtest": batch.get(epoch, 0), "why": why}
        )
    matched = len(epochs) - len(mismatches)
    figures = {
        "signals_backtest": len(batch),
        "signals_paper": len(paper),
        "signals_matched": matched,
        "signal_match": matched / len(epochs) if epochs else math.nan,
    }
    return figures, mismatches


def compare_trades(
    reference: pd.DataFrame, other: pd.DataFrame, *, reference_name: str, other_name: str, explain=None
) -> tuple[dict, list[dict]]:
    """Trades joined on order id: `reference` (trade_frame rows with order_id, or fills) against
    `other` (fills: entry_epoch, exit_epoch, reason, pnl). `explain(order_id, ref_row, other_row)`
    names the cause of a mismatch."""
    ref = _normalised(reference).set_index("order_id")
    oth = _normalised(other).set_index("order_id")
    j = ref.join(oth, how="outer", lsuffix="_a", rsuffix="_b").sort_index()
    a_in, b_in = j["pnl_a"].notna(), j["pnl_b"].notna()
    both = a_in & b_in
    entry_same, reason_same = j["entry_epoch_a"] == j["entry_epoch_b"], j["reason_a"] == j["reason_b"]
    same = both & entry_same & (j["exit_epoch_a"] == j["exit_epoch_b"]) & reason_same
    delta = (j["pnl_a"] - j["pnl_b"]).abs()
    mismatches = []
    for order_id in j.index[~same]:
        a = ref.loc[order_id] if a_in[order_id] else None
        b = oth.loc[order_id] if b_in[order_id] else None
        why = explain(order_id, a, b) if explain else "unexplained"
        mismatches.append({"kind": "trade", "order_id": order_id, reference_name: _brief(a), other_name: _brief(b), "why": why})
    common = j[both].sort_values("exit_epoch_a")  # the orders both filled, by the reference's exit
    gap = np.abs(np.cumsum(common["pnl_a"].to_numpy()) - np.cumsum(common["pnl_b"].to_numpy()))
    common_ref, common_oth = float(j.loc[both, "pnl_a"].sum()), float(j.loc[both, "pnl_b"].sum())
    n, n_both = len(j), int(both.sum())

    def share(mask: pd.Series) -> float:
        return float(mask[both].mean()) if n_both else math.nan

    def largest(values: pd.Series) -> float:
        return float(values.max()) if len(values) else math.nan

    return {
        f"trades_{reference_name}": len(ref),
        f"trades_{other_name}": len(oth),
        "trades_matched": int(same.sum()),
        "trade_match": float(same.mean()) if n else math.nan,
        "entry_match": share(entry_same),
        "exit_reason_match": share(reason_same),
        "abs_pnl_diff_mean": float(delta[both].mean()) if n_both else math.nan,
        "abs_pnl_diff_max": largest(delta[both]),
        # The cost models compared: |ΔP&L| of the trades both sides made alike (entry, exit, reason).
        "abs_pnl_diff_max_matched": largest(delta[same]),
        "tracking_error": float(gap.max()) if len(gap) else 0.0,
        f"pnl_{reference_name}": float(ref["pnl"].sum()),
        f"pnl_{other_name}": float(oth["pnl"].sum()),
        # Over the orders both sides filled: the same opportunities, paid by each side's rules.
        "pnl_ratio": common_oth / common_ref if common_ref else math.nan,
    }, mismatches


def _normalised(frame: pd.DataFrame) -> pd.DataFrame:
    """order_id, entry_epoch, exit_epoch, reason, pnl of trade rows (pnl_net) or fills (pnl)."""
    out = frame.rename(columns={"pnl_net": "pnl"}) if "pnl" not in frame else frame
    return out[["order_id", "entry_epoch", "exit_epoch", "reason", "pnl"]].assign(reason=lambda f: f["reason"].astype(str))


def _brief(row) -> str | None:
    if row is None:
        return None
    return f"{row['entry_epoch']}->{row['exit_epoch']} {row['reason']} {float(row['pnl']):+.4f}"


# -- one day of one symbol -------------------------------------------------------------------------

LOOKAHEAD_SECONDS = 3600  # ticks read past the day's end: positions opened late in the day close there


def replay_start(first_epoch: int, day_start: int, warmup_s: int) -> int:
    """Where the replay's ticks begin: the session's own warm-up, or a warm-up and an hour before
    the day for a session that began earlier (the engine's positions and caps settle within it)."""
    return max(first_epoch - warmup_s, day_start - 3600 - warmup_s)


@dataclass
class DayParity:
    symbol: str
    version: str
    figures: dict  # signals and trades, paper against the backtest replay
    venues: dict[str, dict]  # per venue broker: its fills against the paper fills of the same orders
    mismatches: list[dict]
    backtest_trades: pd.DataFrame  # the replay's trades signalled in the day
    paper_fills: pd.DataFrame  # the journal's paper fills signalled in the day


def day_parity(
    predictor: OnnxPredictor,
    execution: ExecutionConfig,
    symbol: str,
    ticks: pd.DataFrame,
    first_epoch: int,
    day: tuple[int, int],
    journal_signals: pd.DataFrame,
    journal_fills: pd.DataFrame,
    journal_orders: pd.DataFrame,
) -> DayParity:
    """`ticks` from `replay_start` to past the day's end; the journal's rows of this symbol."""
    lo, hi = day
    replayed = replay(predictor, execution, symbol, ticks, first_epoch)
    sig_figures, mismatches = compare_signals(replayed, journal_signals, lo, hi, execution.min_confidence)
    in_day = replayed.trades[(replayed.trades["signal_epoch"] >= lo) & (replayed.trades["signal_epoch"] < hi)]
    fills = journal_fills[journal_fills["order_id"].str.rsplit("-", n=1).str[1].astype(int).between(lo, hi - 1)]
    paper = fills[fills["broker"] == "paper"]
    signal_off = {m["epoch"] for m in mismatches}

    def explain_paper(order_id, backtest, paper_row) -> str:
        epoch = int(order_id.rsplit("-", 1)[1])
        if epoch in signal_off:
            return "its signal differs (see the signal mismatch)"
        if backtest is None and paper_row is not None and epoch < replayed.epochs[0] + 3600:
            return "the replay began after the paper trader's position or cap state was set (replay start)"
        if paper_row is None and backtest is not None and backtest["exit_epoch"] >= int(ticks["epoch"].iloc[-1]):
            return "still open on paper when the journal was read"
        return "follows an earlier mismatch (a slot or cap the other side did not have)" if mismatches else "unexplained"

    trade_figures, trade_mismatches = compare_trades(
        in_day, paper, reference_name="backtest", other_name="paper", explain=explain_paper
    )
    venues = {}
    orders = journal_orders.set_index(["broker", "order_id"]) if len(journal_orders) else None
    for broker in sorted(set(fills["broker"]) - {"paper"}):
        venue = fills[fills["broker"] == broker]

        def explain_venue(order_id, paper_row, venue_row, broker=broker) -> str:
            status = None
            if orders is not None and (broker, order_id) in orders.index:
                status, why = orders.loc[(broker, order_id), ["status", "why"]]
            paper_order = (
                orders.loc[("paper", order_id), "status"] if orders is not None and ("paper", order_id) in orders.index else None
            )
            if venue_row is None and paper_order == "late":
                return (
                    "filled on paper in a slot freed at the fill tick; no slot was free at the signal: nothing went to the venue"
                )
            if venue_row is None and status is None:
                return "not sent to the venue (a tick replayed from history after a restart, or an order the venue refused)"
            if venue_row is None and status == "placed":
                return "still open at the venue when the journal was read"
            if paper_row is None and status == "rejected":
                return f"the engine did not fill it ({why}); the venue's contract was sold at once"
            if paper_row is None:
                return "still open on paper when the journal was read"
            if venue_row is not None and venue_row["entry_epoch"] > paper_row["entry_epoch"]:
                return "the order reached the venue after the next tick: its entry spot is a later tick"
            if venue_row is not None and venue_row["exit_epoch"] > paper_row["exit_epoch"]:
                return "the sell reached the venue after the exit tick: sold at a later tick"
            return "unexplained"

        figures, venue_mismatches = compare_trades(paper, venue, reference_name="paper", other_name=broker, explain=explain_venue)
        venues[broker] = figures
        mismatches += [{**m, "broker": broker} for m in venue_mismatches]
    figures = sig_figures | trade_figures
    return DayParity(symbol, predictor.version, figures, venues, mismatches + trade_mismatches, in_day, paper)
