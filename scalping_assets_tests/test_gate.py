"""The gate judges each (candidate, symbol) on that symbol's trades, Holm-corrected over the symbols,
and the symbols a version cleared travel with it in the registry."""

import pytest

from scalping_assets.backtest.promotion import GateCandidate, GateCriteria, holm, promote
from scalping_assets.models.tracking import CHALLENGER, CHAMPION, CLEARED_TAG, Tracker

NAME = "scalping-test-h10"


def _summary(p: float, expectancy: float = 0.5, deflated: float = 0.99) -> dict[str, float]:
    return {
        "trades": 500,
        "win_rate": 0.7,
        "expectancy": expectancy,
        "sharpe_annualised": 3.0 if expectancy > 0 else -3.0,
        "sharpe_annualised_lower": 2.0 if expectancy > 0 else -4.0,
        "max_drawdown_pct": 2.0,
        "deflated_sharpe": deflated,
        "p_value_vs_random": p,
    }


@pytest.fixture
def tracker(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "artifacts"))
    tracker.client.create_registered_model(NAME)
    for _ in range(2):
        tracker.client.create_model_version(NAME, source=str(tmp_path))
    return tracker


def test_holm_adjusts_over_one_candidates_symbols():
    adjusted = holm({"A": 0.001, "B": 0.5, "C": 0.03, "D": float("nan")})
    assert adjusted == pytest.approx({"A": 0.004, "B": 1.0, "C": 0.09, "D": 1.0})
    assert holm({"A": 0.03}) == {"A": 0.03}, "one symbol: nothing to correct"


def test_a_candidate_is_promoted_for_the_symbols_it_clears_only(tracker):
    pooled_looks_fine = GateCandidate(
        name="lstm-seed0",
        version="1",
        per_symbol={
            "SIG_AR1": _summary(p=0.001),
            "R_100": _summary(p=0.6, expectancy=-0.2),  # loses money: refused
            "CRASH1000": _summary(p=0.03),  # significant alone, not once three symbols are tested (0.06)
        },
    )
    decision = promote(tracker, NAME, [pooled_looks_fine], GateCriteria())
    assert decision.cleared == {"lstm-seed0": ["SIG_AR1"]}
    assert decision.promoted and decision.champion == "1"
    assert any("p vs random trader 0.06" in r for r in decision.failures["lstm-seed0"]["CRASH1000"])
    tags = tracker.version_tags(NAME, "1")
    assert tags[CLEARED_TAG] == "SIG_AR1"
    assert tags["gate"].startswith("SIG_AR1: cleared; R_100: ")


def test_more_cleared_symbols_rank_first_and_a_candidate_clearing_none_is_never_promoted(tracker):
    one = GateCandidate(name="a", version="1", per_symbol={"SIG_AR1": _summary(1e-4), "R_100": _summary(0.9, -1.0)})
    two = GateCandidate(name="b", version="2", per_symbol={"SIG_AR1": _summary(1e-4, deflated=0.96), "R_100": _summary(1e-4)})
    decision = promote(tracker, NAME, [one, two], GateCriteria())
    assert (decision.champion, decision.challenger) == ("2", "1")
    assert tracker.alias_version(NAME, CHAMPION) == "2" and tracker.alias_version(NAME, CHALLENGER) == "1"
    nothing = GateCandidate(name="c", version="1", per_symbol={"SIG_AR1": _summary(0.2), "R_100": _summary(0.3)})
    kept = promote(tracker, NAME, [nothing], GateCriteria())
    assert not kept.promoted and kept.champion == "2" and kept.cleared == {"c": []}
    assert tracker.version_tags(NAME, "1")[CLEARED_TAG] == ""


def test_equal_deflated_sharpes_rank_by_expectancy(tracker):
    low = GateCandidate(name="a", version="1", per_symbol={"SIG_AR1": _summary(1e-4, expectancy=0.03, deflated=1.0)})
    high = GateCandidate(name="b", version="2", per_symbol={"SIG_AR1": _summary(1e-4, expectancy=0.05, deflated=1.0)})
    assert promote(tracker, NAME, [low, high], GateCriteria()).champion == "2"
