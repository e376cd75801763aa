"""Trials of the deflated Sharpe ratio: a re-run is not another trial, near-copies count as fewer."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from scalping_assets.backtest.runs import SHARPE_METRIC, candidate_runs
from scalping_assets.backtest.significance import expected_max_sharpe
from scalping_assets.backtest.trials import (
    NEAR_IDENTICAL_RMS,
    Signal,
    count_trials,
    effective_number,
    expected_max_normal,
    signal_relations,
)
from scalping_assets.features.dataset import DatasetSpec, build_dataset
from scalping_assets.features.labels import PROBABILITY_COLUMNS
from scalping_assets.market.simulator import simulator
from scalping_assets.models.config import profile_config
from scalping_assets.models.ensemble import train_ensemble
from scalping_assets.models.pipeline import DIGEST_TAG, PREDICTIONS_ARTIFACT, predictions_digest, train_candidate
from scalping_assets.models.tracking import Tracker

TINY = {"n_estimators": 8, "early_stopping_rounds": 4, "max_train_windows": 2_000, "max_eval_windows": 1_000}
ROWS = 2_000


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


def _tracker(store, tmp_path, experiment: str) -> Tracker:
    return Tracker(store, experiment, artifact_root=str(tmp_path / "artifacts"))


@pytest.fixture(scope="module")
def dataset():
    last = date(2026, 1, 2)
    spec = DatasetSpec(symbols=["SIG_AR1"], start=date(2026, 1, 2), end=last, sequence_length=20)
    return build_dataset(spec, {"SIG_AR1": simulator("SIG_AR1", 7).days(date(2026, 1, 1), last)})


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory, dataset):
    """xgboost seed 0 trained twice, then seed 1, in an experiment of their own."""
    tracker = _tracker(store, tmp_path_factory.mktemp("trained"), "trained")
    first, again, other = (
        train_candidate(dataset, profile_config("demo", "xgboost", seed=seed, **TINY), tracker) for seed in (0, 0, 1)
    )
    return tracker, first, again, other


def _runs(tracker: Tracker, *run_ids: str) -> list:
    chosen = {r.info.run_id: r for r in candidate_runs(tracker)}
    return [chosen[run_id] for run_id in run_ids]


def test_two_identical_trainings_are_one_trial(trained):
    tracker, first, again, _ = trained
    assert np.array_equal(first.test_proba, again.test_proba)
    tags = [tracker.run_tags(c.run_id)[DIGEST_TAG] for c in (first, again)]
    assert tags[0] == tags[1]
    trials = count_trials(tracker, _runs(tracker, first.run_id, again.run_id))
    assert (trials.runs, trials.distinct, trials.effective) == (2, 1, 1)
    assert trials.groups == ((first.run_id, again.run_id),)


def test_the_deflated_sharpe_inputs_do_not_change_when_a_run_is_repeated(trained):
    tracker, first, again, other = trained
    # A first evaluation: nothing backtested yet, its own backtests give the Sharpe ratios.
    fresh = count_trials(tracker, _runs(tracker, first.run_id, other.run_id))
    assert fresh.sharpes == []
    own = {first.run_id: 0.12, other.run_id: 0.05}
    first_evaluation = fresh.with_sharpes(own)
    for run_id, sharpe in own.items():
        tracker.reopen(run_id).metrics({SHARPE_METRIC: sharpe})
    once = count_trials(tracker, _runs(tracker, first.run_id, other.run_id))
    # The same experiment again: the re-run of `first` joins its trial, before and after its backtest.
    twice = count_trials(tracker, _runs(tracker, first.run_id, other.run_id, again.run_id))
    second_evaluation = twice.with_sharpes({again.run_id: 0.12})
    tracker.reopen(again.run_id).metrics({SHARPE_METRIC: 0.12})
    thrice = count_trials(tracker, _runs(tracker, first.run_id, other.run_id, again.run_id))
    inputs = {(t.effective, tuple(sorted(t.sharpes))) for t in (first_evaluation, once, twice, second_evaluation, thrice)}
    assert inputs == {(once.effective, (0.05, 0.12))}
    benchmark = [expected_max_sharpe(t.effective, float(np.var(t.sharpes, ddof=1))) for t in (once, thrice)]
    assert benchmark[0] == benchmark[1]


def test_another_seed_is_another_trial_counted_by_its_correlation(trained):
    tracker, first, again, other = trained
    assert not np.allclose(first.test_proba, other.test_proba, atol=1e-3)
    trials = count_trials(tracker, _runs(tracker, first.run_id, again.run_id, other.run_id))
    assert (trials.runs, trials.distinct) == (3, 2)
    # Two seeds of one model on one dataset predict alike: fewer than two independent tries.
    assert 1.0 <= trials.effective_exact < 2.0 and trials.effective in (1, 2), trials


def test_an_ensemble_of_the_same_base_configs_is_the_same_trial(trained, dataset):
    tracker, first, again, other = trained
    ensembles = [train_ensemble(dataset, [base.model, other.model], tracker) for base in (first, again)]
    params = [tracker.client.get_run(e.run_id).data.params for e in ensembles]
    assert params[0]["base_configs_sha256"] == params[1]["base_configs_sha256"]
    trials = count_trials(tracker, _runs(tracker, *(e.run_id for e in ensembles)))
    assert (trials.runs, trials.distinct, trials.effective) == (2, 1, 1)


# -- runs with controlled predictions -------------------------------------------------------------


def _predictions(signal: np.ndarray, start: int = 1_767_312_000, symbol: str = "SIG_AR1") -> pd.DataFrame:
    """Probabilities whose P(UP) - P(DOWN) is `signal` (in [-0.5, 0.5])."""
    up = 0.3 + signal / 2
    down = 0.3 - signal / 2
    frame = pd.DataFrame({"symbol": symbol, "epoch": start + np.arange(len(signal), dtype=np.int64)})
    for column, values in zip(PROBABILITY_COLUMNS, (down, 1 - up - down, up), strict=True):
        frame[column] = values
    return frame


def _log(tracker: Tracker, predictions: pd.DataFrame, seed: int, fingerprint: str = "fp", digest_tag: bool = True) -> str:
    tags = {"model_type": "xgboost", "dataset_fingerprint": fingerprint}
    with tracker.run(f"fake-seed{seed}", tags=tags) as run:
        run.params({"kind": "xgboost", "seed": seed, "n_estimators": 8})
        run.bytes(predictions.to_parquet(index=False), PREDICTIONS_ARTIFACT)
        if digest_tag:
            run.tag(DIGEST_TAG, predictions_digest(predictions))
    return run.run_id


def _factor_signals(n: int, noise: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    common = rng.normal(0, 0.1, ROWS)
    return [np.clip(common + rng.normal(0, noise, ROWS), -0.5, 0.5) for _ in range(n)]


def test_highly_correlated_predictions_count_as_fewer_trials(store, tmp_path):
    tracker = _tracker(store, tmp_path, "correlated")
    alike = [_log(tracker, _predictions(s), seed) for seed, s in enumerate(_factor_signals(4, noise=0.03))]
    trials = count_trials(tracker, candidate_runs(tracker))
    assert (trials.runs, trials.distinct) == (4, 4)
    assert trials.effective_exact < 1.5 and trials.effective == 1
    unlike = [_log(tracker, _predictions(s), 10 + i) for i, s in enumerate(_factor_signals(3, noise=1.0, seed=1))]
    trials = count_trials(tracker, _runs(tracker, *unlike))
    assert trials.distinct == 3 and trials.effective == 3
    together = count_trials(tracker, _runs(tracker, *alike, *unlike))
    assert together.distinct == 7, "one cluster of four and three independent trials: about 1 + 3"
    assert together.effective_exact == pytest.approx(count_trials(tracker, _runs(tracker, *alike)).effective_exact + 3, abs=0.5)


def test_a_different_seed_with_near_identical_predictions_is_the_same_trial(store, tmp_path):
    tracker = _tracker(store, tmp_path, "near")
    (signal,) = _factor_signals(1, noise=0.05)
    rng = np.random.default_rng(3)
    first = _log(tracker, _predictions(signal), seed=0)
    close = _log(tracker, _predictions(signal + rng.normal(0, NEAR_IDENTICAL_RMS / 10, ROWS)), seed=1)
    apart = _log(tracker, _predictions(signal + rng.normal(0, NEAR_IDENTICAL_RMS * 10, ROWS)), seed=2)
    trials = count_trials(tracker, _runs(tracker, first, close, apart))
    assert trials.groups == ((first, close), (apart,))
    assert trials.effective == 1, "the third is a distinct trial, but correlated 0.99 with the first"


def test_runs_without_the_digest_tag_fall_back_to_their_config_and_predictions(store, tmp_path):
    tracker = _tracker(store, tmp_path, "untagged")
    a, b, c = _factor_signals(3, noise=1.0)
    same_config = [_log(tracker, _predictions(s), seed=0, digest_tag=False) for s in (a, b)]
    same_predictions = [_log(tracker, _predictions(c), seed=seed, digest_tag=False) for seed in (5, 6)]
    other_dataset = _log(tracker, _predictions(a, start=1_800_000_000), seed=0, fingerprint="other", digest_tag=False)
    cache = tmp_path / "signals"
    trials = count_trials(tracker, candidate_runs(tracker), cache=cache)
    assert trials.groups == (tuple(same_config), tuple(same_predictions), (other_dataset,))
    assert trials.effective == 3, "no common rows: the other dataset's trial counts as uncorrelated"
    assert len(list(cache.glob("*.npz"))) == 5

    def offline(*args, **kwargs):
        raise AssertionError("downloaded again despite the cache")

    tracker.download = offline
    assert count_trials(tracker, candidate_runs(tracker), cache=cache) == trials


def _equicorrelated(k: int, rho: float) -> np.ndarray:
    return np.full((k, k), rho) + (1 - rho) * np.eye(k)


def test_effective_number_matches_the_expected_maximum_of_correlated_trials():
    assert effective_number(np.eye(5)) == pytest.approx(5, abs=0.2)
    assert effective_number(np.ones((5, 5))) == 1.0
    assert effective_number(np.eye(1)) == 1.0 and effective_number(np.zeros((0, 0))) == 0.0
    for k, rho in ((4, 0.9), (5, 0.5), (8, 0.2)):
        # k trials correlated rho: their maximum is sqrt(1 - rho) times that of k independent ones.
        target = np.sqrt(1 - rho) * expected_max_normal(k)
        n = effective_number(_equicorrelated(k, rho))
        assert 1 < n < k and expected_max_normal(n) == pytest.approx(target, abs=0.01)
    assert effective_number(_equicorrelated(4, 0.9)) < 1.5, "four near-copies: about one trial"
    blocks = np.eye(20)
    blocks[:10, :10] = _equicorrelated(10, 0.9)
    assert effective_number(blocks) == pytest.approx(effective_number(_equicorrelated(10, 0.9)) + 10, rel=0.1)
    assert effective_number(_equicorrelated(2, -1.0)) == 2.0, "at most the number of trials"
    assert effective_number(_equicorrelated(30, 0.3)) == effective_number(_equicorrelated(30, 0.3)), "deterministic"


def test_signal_relations_on_common_rows():
    def signal(values: np.ndarray, start: int = 0) -> Signal:
        epochs = np.arange(start, start + len(values), dtype=np.int64)
        return Signal(np.array(["R_100"]), np.zeros(len(values), np.int32), epochs, values.astype(np.float32), "")

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=5_000), rng.normal(size=5_000)
    correlations, near = signal_relations([signal(x), signal(x + 0.1 * y), signal(y), signal(x[:50]), signal(x, start=4_000)])
    assert correlations[0, 1] == pytest.approx(np.corrcoef(x, x + 0.1 * y)[0, 1], abs=1e-6)
    assert abs(correlations[0, 2]) < 0.05
    assert correlations[0, 3] == 0.0, "fewer common rows than MIN_OVERLAP"
    assert correlations[0, 4] == pytest.approx(np.corrcoef(x[4_000:], x[:1_000])[0, 1], abs=1e-6)
    assert not near[np.triu_indices(5, 1)].any()
    sampled, _ = signal_relations([signal(x), signal(x + 0.1 * y)], rows=500)
    assert sampled[0, 1] == pytest.approx(correlations[0, 1], abs=0.02)
