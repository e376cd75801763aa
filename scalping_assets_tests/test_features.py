"""The feature library's proofs: no look-ahead, finite warm-up, batch = stream, GARCH = arch."""

import warnings

import numpy as np
import pandas as pd
import pytest
from arch import arch_model

from scalping_assets.features import registry as R
from scalping_assets.features.batch import FeatureInputError, compute_features, log_returns_bp, pips
from scalping_assets.features.garch import fit_garch, garch_variance
from scalping_assets.features.stream import FeatureState
from scalping_assets.market.symbols import get_symbol
from scalping_assets_tests.conftest import REPO_ROOT
from scalping_assets_tests.feature_helpers import assert_same_features, fitted_on_prefix, max_relative_error, sim_ticks

# One symbol per generator family; CRASH500 and JD75 exercise the event features, stpRNG the
# "no event ever" rule, RDBULL the daily reset, SIG_AR1 the planted signal.
FAMILY_SYMBOLS = ["R_100", "1HZ10V", "CRASH500", "BOOM1000", "JD75", "stpRNG", "RDBULL", "SIG_AR1"]


def _features(ticks: pd.DataFrame, symbol: str, fitted=None) -> pd.DataFrame:
    return compute_features(ticks, get_symbol(symbol).pip_size, fitted)


@pytest.mark.parametrize("symbol", ["CRASH500", "JD75", "SIG_AR1"])
def test_no_lookahead_features_on_a_prefix_equal_those_on_the_full_series(symbol):
    ticks = sim_ticks(symbol, 12_000)
    fitted = fitted_on_prefix(ticks, symbol, 6_000)
    full = _features(ticks, symbol, fitted)
    names = list(full.columns[1:])
    rng = np.random.default_rng(3)
    cut_points = np.concatenate([rng.integers(0, len(ticks) - 1, 25), [0, R.WARMUP_TICKS - 1, R.WARMUP_TICKS, len(ticks) - 2]])
    for t in cut_points:
        prefix = _features(ticks.iloc[: t + 1], symbol, fitted)
        assert_same_features(prefix.iloc[[t], 1:], full.iloc[[t], 1:], names, f"{symbol} tick {t}")


def test_no_lookahead_changing_the_future_changes_no_past_feature():
    symbol = "CRASH500"
    ticks = sim_ticks(symbol, 8_000)
    fitted = fitted_on_prefix(ticks, symbol, 4_000)
    t = 5_000
    future = ticks.copy()
    pip = get_symbol(symbol).pip_size
    future.loc[t + 1 :, "quote"] = np.round(future.loc[t + 1 :, "quote"] * 1.5 / pip) * pip  # a crash-sized change
    a, b = _features(ticks, symbol, fitted), _features(future, symbol, fitted)
    names = list(a.columns[1:])
    assert_same_features(a.iloc[: t + 1, 1:], b.iloc[: t + 1, 1:], names, "past of a changed future")
    assert not np.allclose(a.iloc[t + 1 :, 1:].to_numpy(), b.iloc[t + 1 :, 1:].to_numpy(), equal_nan=True)


@pytest.mark.parametrize("symbol", FAMILY_SYMBOLS)
def test_warmup_values_do_not_depend_on_history_beyond_the_documented_lookback(symbol):
    ticks = sim_ticks(symbol, 9_000)
    fitted = fitted_on_prefix(ticks, symbol, 4_000)
    full = _features(ticks, symbol, fitted)
    names = list(full.columns[1:])
    for start in (1, 777, 3_001):
        later = _features(ticks.iloc[start:].reset_index(drop=True), symbol, fitted)
        # Row i of `later` is tick start + i; it has i earlier ticks of history.
        for name in names:
            lookback = R.BY_NAME[name].lookback
            got = later[name].to_numpy()
            assert np.isnan(got[:lookback]).all(), f"{name} defined before its look-back of {lookback}"
            assert not np.isnan(got[lookback:]).any(), f"{name} undefined after its look-back of {lookback}"
            err = max_relative_error(got[lookback:], full[name].to_numpy()[start + lookback :])
            assert err <= 1e-9, f"{symbol} {name}: value depends on history before its look-back ({err:.3g}, start {start})"


def test_every_feature_is_defined_after_warmup_for_every_simulated_family():
    for symbol in FAMILY_SYMBOLS:
        ticks = sim_ticks(symbol, 6_000)
        frame = _features(ticks, symbol, fitted_on_prefix(ticks, symbol, 3_000))
        after = frame.iloc[R.WARMUP_TICKS :, 1:]
        assert np.isfinite(after.to_numpy()).all(), f"{symbol}: {after.columns[~np.isfinite(after.to_numpy()).all(0)].tolist()}"
    step = _features(sim_ticks("stpRNG", 6_000), "stpRNG").iloc[R.WARMUP_TICKS :]
    assert (step["ticks_since_event"] == R.EVENT_HORIZON).all() and (step["event_rate"] == 0).all()
    crash = _features(sim_ticks("CRASH500", 20_000), "CRASH500").iloc[R.WARMUP_TICKS :]
    assert (crash.loc[crash["ticks_since_event"] == 0, "last_event_sign"] == -1).all(), "crashes are down-moves"
    assert 0.5 < crash["event_rate"].mean() < 5, "about 2 crashes per 1000 ticks on CRASH500"


@pytest.mark.parametrize("symbol,n", [("CRASH500", 110_000)] + [(s, 15_000) for s in FAMILY_SYMBOLS if s != "CRASH500"])
def test_streaming_state_reproduces_the_batch_features(symbol, n):
    ticks = sim_ticks(symbol, n)
    fitted = fitted_on_prefix(ticks, symbol, min(n // 2, 50_000))
    batch = _features(ticks, symbol, fitted)
    state = FeatureState(get_symbol(symbol).pip_size, fitted)
    assert state.names == list(batch.columns[1:])
    rows = np.array([state.update(e, q) for e, q in zip(ticks["epoch"].tolist(), ticks["quote"].tolist(), strict=True)])
    assert_same_features(rows, batch.iloc[:, 1:], state.names, f"{symbol} stream vs batch over {n} ticks")


def test_streaming_spread_and_bad_ticks():
    ticks = sim_ticks("R_100", 3_000).copy()
    pip = get_symbol("R_100").pip_size
    ticks["bid"], ticks["ask"] = ticks["quote"] - pip, ticks["quote"] + 2 * pip
    batch = compute_features(ticks, pip, spread=True)
    state = FeatureState(pip, spread=True)
    rows = np.array([state.update(r.epoch, r.quote, r.bid, r.ask) for r in ticks.itertuples()])
    assert_same_features(rows, batch.iloc[:, 1:], state.names, "spread")
    assert (batch["spread"] == 3).all()
    with pytest.raises(FeatureInputError, match="epochs must increase"):
        state.update(int(ticks["epoch"].iloc[-1]), 100.0, 99.0, 101.0)
    with pytest.raises(FeatureInputError, match="finite"):
        state.update(int(ticks["epoch"].iloc[-1]) + 1, float("nan"), 99.0, 101.0)
    with pytest.raises(FeatureInputError, match="bid and ask"):
        state.update(int(ticks["epoch"].iloc[-1]) + 1, 100.0)
    assert state.n == len(ticks), "rejected ticks leave the state untouched"


def test_batch_rejects_bad_ticks_with_the_row():
    ticks = sim_ticks("R_100", 100).copy()
    swapped = ticks.copy()
    swapped.loc[50, "epoch"] = swapped.loc[49, "epoch"]
    with pytest.raises(FeatureInputError, match="row 50"):
        compute_features(swapped, 0.01)
    broken = ticks.copy()
    broken.loc[7, "quote"] = np.inf
    with pytest.raises(FeatureInputError, match="row 7"):
        compute_features(broken, 0.01)
    with pytest.raises(FeatureInputError, match="bid and ask"):
        compute_features(ticks, 0.01, spread=True)
    with pytest.raises(FeatureInputError, match="half a pip"):
        compute_features(ticks.assign(quote=ticks["quote"].where(ticks.index != 3, 0.004)), 0.01)
    with pytest.raises(FeatureInputError, match="no ticks"):
        compute_features(ticks.iloc[:0], 0.01)


def test_regime_is_a_function_even_on_tied_percentiles():
    fitted = fitted_on_prefix(sim_ticks("R_100", 4_000), "R_100", 4_000)
    fitted = fitted.model_copy(update={"rv_knots": [1.0] * 50 + [2.0] * 51})
    assert fitted.regime(1.0) == pytest.approx(49 / 100)
    assert fitted.regime(np.nextafter(2.0, 0)) < fitted.regime(2.0) == 1.0
    assert fitted.regime(0.5) == 0.0 and np.isnan(fitted.regime(np.nan))


def test_garch_forecast_matches_arch_for_the_same_parameters():
    symbol = "CRASH500"
    ticks = sim_ticks(symbol, 20_000)
    r = log_returns_bp(pips(ticks["quote"].to_numpy(), get_symbol(symbol).pip_size))
    params = fit_garch(r[1:10_000])
    assert params.converged and 0 <= params.alpha and 0 <= params.beta < 1
    ours = garch_variance(r, params, R.GARCH_WINDOW)
    assert np.isnan(ours[: R.GARCH_WINDOW]).all() and np.isfinite(ours[R.GARCH_WINDOW :]).all()
    for t in np.random.default_rng(5).integers(R.GARCH_WINDOW, len(r), 12):
        window = r[t - R.GARCH_WINDOW + 1 : t + 1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fixed = arch_model(window, mean="Constant", vol="GARCH", p=1, q=1, rescale=False).fix(params.as_arch())
            theirs = fixed.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0]
        assert ours[t] == pytest.approx(theirs, rel=1e-10), f"tick {t}"


def test_garch_fit_agrees_with_a_direct_arch_fit_and_survives_constant_moves():
    r = log_returns_bp(pips(sim_ticks("SIG_AR1", 30_000)["quote"].to_numpy(), 0.001))[1:]
    params = fit_garch(r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = arch_model(r, mean="Constant", vol="GARCH", p=1, q=1, rescale=False).fit(disp="off")
    assert params.omega == pytest.approx(direct.params["omega"], rel=0.05)
    assert params.alpha == pytest.approx(direct.params["alpha[1]"], abs=0.02)
    flat = fit_garch(np.full(500, 0.25))
    assert not flat.converged and flat.alpha == 0 and flat.beta == 0
    with pytest.raises(ValueError, match="at least 100"):
        fit_garch(r[:50])


def test_feature_table_in_docs_is_generated_from_the_code():
    text = (REPO_ROOT / "docs" / "features.md").read_text()
    assert R.feature_table_markdown() in text, "docs/features.md is stale: run `scalping features --markdown > docs/features.md`"
    names = [f.name for f in R.FEATURES]
    assert len(names) == len(set(names))
    assert all(f.formula and f.unit and f.lookback <= R.WARMUP_TICKS for f in R.FEATURES)
