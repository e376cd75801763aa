"""The dataset pictures: a column constant within a symbol carries no mutual information, even when
float32 scaling leaves its standard deviation a rounding error above 0 (issue 16: `tick_velocity_100`
ranked top for SIG_AR1)."""

import numpy as np

from scalping_assets.features.plots import (
    NOISE,
    constant_columns,
    mutual_information,
    mutual_information_png,
    within_group_correlation,
)

N = 6_000
NAMES = ["signal", "tiny_signal", "offset_signal", "noise", "constant", "constant_scaled"]


def _columns(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 rows as `Dataset.xy` gives them: an informative column, the same signal at a spread of 1e-4
    and on top of an offset of 100 (low variance, still informative), noise, a constant, and the constant
    100.3 whose float32 std is 1.5e-5 rather than 0."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=N)
    y = (signal + 0.5 * rng.normal(size=N) > 0).astype(np.int64)
    x = np.column_stack(
        [signal, 1e-4 * signal, 100.0 + 1e-3 * signal, rng.normal(size=N), np.zeros(N), np.full(N, 100.3)]
    ).astype(np.float32)
    return x, y


def test_a_constant_column_after_float32_scaling_is_constant():
    x, _ = _columns()
    assert x[:, NAMES.index("constant_scaled")].std() > 1e-6, "the premise: float32 rounding makes its std nonzero"
    assert constant_columns(x).tolist() == [False, False, False, False, True, True]
    # A few float32 ulps of jitter are rounding; the same relative spread on float64 is data.
    jitter = np.full((10, 2), 0.7, np.float32)
    jitter[::2, 0] = np.nextafter(np.float32(0.7), np.float32(1))
    jitter[:, 1] = 0.7 * (1 + 1e-7 * np.arange(10))
    assert constant_columns(jitter).tolist() == [True, True]
    assert constant_columns(0.7 * (1 + 1e-7 * np.arange(10))[:, None]).tolist() == [False]
    assert constant_columns(np.array([[3, 3], [3, 4]])).tolist() == [True, False]


def test_constant_columns_get_no_information_and_the_informative_one_ranks_top():
    x, y = _columns()
    scores = mutual_information(x, y, np.array(["SIG_AR1"] * N), NAMES, stride=1)["SIG_AR1"]
    assert scores["constant"] == 0.0 and scores["constant_scaled"] == 0.0
    for name in ("signal", "tiny_signal", "offset_signal"):
        assert scores[name] > 0.2, f"{name}: a low-variance informative column must not be dropped"
    assert abs(scores["noise"]) < 5 * max(scores[NOISE], 1e-3)
    ranked = sorted(NAMES, key=lambda n: -scores[n])
    assert ranked[0] in {"signal", "tiny_signal", "offset_signal"}
    assert mutual_information_png({"SIG_AR1": scores}, "mi").startswith(b"\x89PNG")


def test_constancy_is_judged_within_each_symbol():
    # A feature constant per symbol but different across symbols (a tick rate): 0 in every symbol, and a
    # symbol whose every column is constant still gets a row of zeros rather than an estimator error.
    x, y = _columns()
    rate = np.where(np.arange(N) < N // 2, 1.0, 0.5).astype(np.float32)
    x = np.column_stack([x, (rate - 0.75) / 0.25 + 100]).astype(np.float32)
    groups = np.where(np.arange(N) < N // 2, "SIG_AR1", "R_100")
    scores = mutual_information(x, y, groups, [*NAMES, "tick_velocity_100"], stride=1)
    for group in ("SIG_AR1", "R_100"):
        assert scores[group]["tick_velocity_100"] == 0.0
        assert max(scores[group], key=lambda n: -1 if n == NOISE else scores[group][n]) != "tick_velocity_100"
    flat = mutual_information(np.full((50, 2), 3.0, np.float32), y[:50], np.array(["A"] * 50), ["a", "b"], stride=1)
    assert flat == {"A": {"a": 0.0, "b": 0.0, NOISE: 0.0}}


def test_correlation_of_a_constant_column_is_zero():
    x, _ = _columns()
    corr = within_group_correlation(x, np.array(["A"] * N))
    k = NAMES.index("constant_scaled")
    assert np.all(corr[k] == 0) and np.all(corr[:, k] == 0)
    assert corr[0, 1] > 0.99 and corr[0, 0] == 1.0
