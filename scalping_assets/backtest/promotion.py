"""The promotion gate: a candidate becomes `champion` only if its out-of-sample backtest meets the
criteria and its edge is significant; the champion it replaces becomes `previous`, for rollback.

The gate judges each (candidate, symbol) on that symbol's trades alone: a model that earns on one
index and loses on another is promoted for the first only. The p-values against a random trader are
Holm-adjusted over the symbols a candidate is tested on (testing three symbols is three chances to
get lucky). The symbols a version cleared travel with it as the version tag `cleared_symbols`.

Aliases live on the registered model in MLflow's registry, so every consumer (serving included)
reads the same decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pydantic import BaseModel, Field
from statsmodels.stats.multitest import multipletests

from ..models.tracking import CHALLENGER, CHAMPION, CLEARED_TAG, PREVIOUS, Tracker


class GateCriteria(BaseModel):
    min_win_rate: float = Field(default=0.65, ge=0, le=1, description="share of trades with positive net P&L, strictly above")
    min_sharpe: float = Field(
        default=1.5, description="annualised Sharpe ratio's lower 95 % bound, strictly above (a short span's wide interval fails)"
    )
    max_drawdown_pct: float = Field(default=15.0, gt=0, description="of peak equity, strictly below")
    min_deflated_sharpe: float = Field(default=0.95, ge=0, le=1, description="deflated Sharpe ratio, at least")
    max_p_value: float = Field(
        default=0.05, gt=0, description="p-value against a random trader under the same rules, strictly below"
    )
    min_trades: int = Field(default=30, ge=1)


def gate_failures(summary: dict[str, float], criteria: GateCriteria) -> list[str]:
    """Why a backtest fails the gate (empty: it passes). NaN never passes."""

    def bad(value: float | None, ok: bool) -> bool:
        return not (isinstance(value, int | float) and math.isfinite(value) and ok)

    c, s = criteria, {k: (math.nan if v is None else v) for k, v in summary.items()}
    checks = [  # (what, value, passes, what passing needs)
        ("trades", s["trades"], s["trades"] >= c.min_trades, f">= {c.min_trades}"),
        ("win rate", s["win_rate"], s["win_rate"] > c.min_win_rate, f"> {c.min_win_rate}"),
        ("Sharpe (annualised, lower 95 % bound)", s["sharpe_annualised_lower"], s["sharpe_annualised_lower"] > c.min_sharpe,
         f"> {c.min_sharpe}"),
        ("max drawdown %", s["max_drawdown_pct"], s["max_drawdown_pct"] < c.max_drawdown_pct, f"< {c.max_drawdown_pct}"),
        ("deflated Sharpe", s["deflated_sharpe"], s["deflated_sharpe"] >= c.min_deflated_sharpe, f">= {c.min_deflated_sharpe}"),
        ("p vs random trader", s["p_value_vs_random"], s["p_value_vs_random"] < c.max_p_value, f"< {c.max_p_value}"),
    ]  # fmt: skip
    return [f"{name} {value:.4g} (needs {wanted})" for name, value, ok, wanted in checks if bad(value, ok)]


@dataclass(kw_only=True)
class GateCandidate:
    name: str
    version: str
    per_symbol: dict[str, dict[str, float]]  # symbol -> that symbol's backtest summary


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values over one candidate's symbols (a missing p-value counts as 1)."""
    if not p_values:
        return {}
    raw = [1.0 if not (isinstance(p, int | float) and math.isfinite(p)) else p for p in p_values.values()]
    return dict(zip(p_values, map(float, multipletests(raw, method="holm")[1]), strict=True))


def symbol_failures(candidate: GateCandidate, criteria: GateCriteria) -> dict[str, list[str]]:
    """{symbol: why the candidate fails the gate on it} (empty list: cleared), p-values Holm-adjusted."""
    adjusted = holm({s: summary.get("p_value_vs_random") for s, summary in candidate.per_symbol.items()})
    return {
        s: gate_failures(summary | {"p_value_vs_random": adjusted[s]}, criteria) for s, summary in candidate.per_symbol.items()
    }


@dataclass
class GateDecision:
    registered_model: str
    champion: str | None  # version holding the alias after the decision
    promoted: bool
    previous: str | None
    challenger: str | None
    failures: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # candidate -> symbol -> reasons

    @property
    def cleared(self) -> dict[str, list[str]]:
        """{candidate: the symbols it cleared}."""
        return {c: [s for s, reasons in by_symbol.items() if not reasons] for c, by_symbol in self.failures.items()}

    @property
    def message(self) -> str:
        if self.promoted:
            return f"promoted version {self.champion} of {self.registered_model} to champion" + (
                f" (version {self.previous} is now previous)" if self.previous else ""
            )
        kept = f"kept version {self.champion} as champion" if self.champion else "no champion yet"
        return f"no candidate cleared a symbol: {kept}" if not any(self.cleared.values()) else f"the champion stays: {kept}"


def promote(tracker: Tracker, registered_model: str, candidates: list[GateCandidate], criteria: GateCriteria) -> GateDecision:
    """Apply the gate to every (candidate, symbol), move the aliases, and tag each version with its
    verdict per symbol and the symbols it cleared."""
    failures = {c.name: symbol_failures(c, criteria) for c in candidates}
    cleared = {c.name: [s for s, reasons in failures[c.name].items() if not reasons] for c in candidates}
    for c in candidates:
        verdicts = "; ".join(f"{s}: {'; '.join(r) or 'cleared'}" for s, r in failures[c.name].items())
        tracker.set_version_tag(registered_model, c.version, "gate", verdicts)
        tracker.set_version_tag(registered_model, c.version, CLEARED_TAG, ",".join(cleared[c.name]))
        lines = [f"- {s}: {'cleared' if not r else 'refused: ' + '; '.join(r)}" for s, r in failures[c.name].items()]
        shown = f"cleared for {', '.join(cleared[c.name])}" if cleared[c.name] else "cleared for no symbol"
        tracker.describe_version(registered_model, c.version, f"{shown} ({c.name}).\n" + "\n".join(lines), section="gate")

    def rank(c: GateCandidate) -> tuple[int, float, float]:
        # More symbols cleared first, then the weakest cleared symbol's deflated Sharpe (which saturates
        # at 1 for strong edges), then the weakest cleared symbol's expectancy.
        on = [c.per_symbol[s] for s in cleared[c.name]]
        return len(on), min(m["deflated_sharpe"] for m in on), min(m["expectancy"] for m in on)

    passing = sorted((c for c in candidates if cleared[c.name]), key=rank, reverse=True)
    current = tracker.alias_version(registered_model, CHAMPION)
    previous = tracker.alias_version(registered_model, PREVIOUS)
    challenger = None
    if not passing:
        return GateDecision(registered_model, current, False, previous, challenger, failures)
    best = passing[0]
    promoted = best.version != current
    if promoted:
        previous = crown(tracker, registered_model, best.version) or previous
    runner_up = next((c for c in passing[1:] if c.version != best.version), None)
    if runner_up is not None:
        tracker.set_alias(registered_model, CHALLENGER, runner_up.version)
        challenger = runner_up.version
    return GateDecision(registered_model, best.version, promoted, previous, challenger, failures)


def crown(tracker: Tracker, registered_model: str, version: str) -> str | None:
    """Make `version` the champion, the champion it replaces `previous` (for rollback); returns the
    replaced version (None: there was none). Crowning the champion again changes nothing."""
    current = tracker.alias_version(registered_model, CHAMPION)
    if current == version:
        return None
    if current is not None:
        tracker.set_alias(registered_model, PREVIOUS, current)
    tracker.set_alias(registered_model, CHAMPION, version)
    return current


def rollback(tracker: Tracker, registered_model: str) -> tuple[str, str]:
    """Swap `champion` and `previous` (so a rollback can itself be undone): returns (restored, demoted)."""
    current = tracker.alias_version(registered_model, CHAMPION)
    previous = tracker.alias_version(registered_model, PREVIOUS)
    if current is None or previous is None:
        raise ValueError(f"{registered_model} has no {'champion' if current is None else 'previous'} version to roll back")
    tracker.set_alias(registered_model, CHAMPION, previous)
    tracker.set_alias(registered_model, PREVIOUS, current)
    return previous, current
