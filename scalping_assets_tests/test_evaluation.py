"""An evaluation's verdicts depend on the experiment, not on how often it was run nor on the order of
its candidates: the same training run twice, evaluated twice, gives the same verdicts and numbers."""

from datetime import date

import pytest

from scalping_assets.backtest.engine import ExecutionConfig
from scalping_assets.backtest.evaluation import EvaluationSpan, evaluate_candidates
from scalping_assets.backtest.promotion import GateCandidate, GateCriteria, symbol_failures
from scalping_assets.backtest.runs import log_backtest
from scalping_assets.features.dataset import DatasetSpec, build_dataset
from scalping_assets.market.simulator import simulator
from scalping_assets.models.config import profile_config
from scalping_assets.models.pipeline import train_candidate
from scalping_assets.models.tracking import Tracker

SYMBOLS = ["SIG_AR1", "R_100"]
FIRST, LAST = date(2026, 1, 1), date(2026, 1, 2)
FAST = {"max_train_windows": 2_000, "max_eval_windows": 1_000}
CONFIGS = [
    profile_config("demo", "xgboost", n_estimators=40, **FAST),
    profile_config("demo", "xgboost", seed=1, n_estimators=40, max_depth=3, **FAST),
    profile_config("demo", "cnn", epochs=1, **FAST),
]
# The numbers a verdict is made of.
DECISIVE = ("trades", "expectancy", "p_value_vs_random", "sharpe_per_trade", "deflated_sharpe", "trials", "significant")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rerun")
    spec = DatasetSpec(symbols=SYMBOLS, start=LAST, end=LAST, sequence_length=30)
    ticks = {s: simulator(s, 7).days(FIRST, LAST) for s in SYMBOLS}
    dataset = build_dataset(spec, ticks)
    tracker = Tracker(f"sqlite:///{folder}/mlflow.db", artifact_root=str(folder / "artifacts"))
    start = dataset.meta.boundaries[1]
    span = EvaluationSpan(ticks=ticks, start=start, end=spec.end_epoch, execution=ExecutionConfig(min_confidence=0.45), draws=40)
    return folder, dataset, tracker, span


def _run(experiment, order=slice(None)):
    """Train the configs (as `make demo` does), evaluate them and log their reports (as the backtest asset does)."""
    folder, dataset, tracker, span = experiment
    trained = [train_candidate(dataset, config, tracker) for config in CONFIGS]
    candidates = [(c.name, c.run_id) for c in trained][order]
    trials, evaluated = evaluate_candidates(tracker, candidates, span, cache=folder / "signals", log=lambda _: None)
    for e in evaluated:
        log_backtest(tracker, e.run_id, e.pooled, folder / "reports")
    verdicts = {}
    for e in evaluated:
        per_symbol = {s: r.summary() for s, r in e.per_symbol.items()}
        failures = symbol_failures(GateCandidate(name=e.name, version="", per_symbol=per_symbol), GateCriteria())
        verdicts[e.name] = {
            "verdict": e.pooled.verdict,
            "failures": failures,
            **{s: {k: m[k] for k in DECISIVE} for s, m in per_symbol.items()},
        }
    return trials, verdicts


def test_a_rerun_of_the_same_experiment_gives_the_same_verdicts(experiment):
    first_trials, first = _run(experiment)
    again_trials, again = _run(experiment)
    assert (again_trials.runs, again_trials.distinct) == (2 * first_trials.runs, first_trials.distinct)
    assert again_trials.effective == first_trials.effective
    assert again == first
    # Run a third time with the candidates in the reverse order: still nothing changes.
    third_trials, third = _run(experiment, slice(None, None, -1))
    assert third_trials.effective == first_trials.effective
    assert third == first
    # Something was judged: every candidate traded on both symbols.
    assert all(first[name][s]["trades"] > 0 for name in first for s in SYMBOLS)


def test_the_html_report_has_one_row_per_symbol_with_its_own_significance(experiment):
    folder, _, _, _ = experiment
    reports = sorted((folder / "reports").glob("*.html"))
    assert reports
    text = reports[0].read_text()
    table = text[text.index("<h2>Per symbol</h2>") :]
    for symbol in SYMBOLS:
        assert f"<tr><td>{symbol}</td>" in table
    for heading in ("p vs random", "deflated Sharpe", "long %"):
        assert heading in table
