"""Shared by the engine-vs-naive-loop tests: random predictions, and trade-for-trade equality."""

import numpy as np
import pandas as pd


def random_proba(n: int, seed: int) -> np.ndarray:
    proba = np.random.default_rng(seed).dirichlet([1, 1, 1], size=n)
    proba[::97] = np.nan  # ticks without a prediction never trade
    return proba


def same_trades(engine: pd.DataFrame, reference: pd.DataFrame) -> None:
    """The same trades in the same order, every column equal (P&L to 1e-9)."""
    engine = engine.sort_values("entry_tick").reset_index(drop=True)
    reference = reference.sort_values("entry_tick").reset_index(drop=True)
    assert len(engine) == len(reference)
    for column in reference.columns:
        if column in ("symbol", "reason"):
            assert (engine[column].astype(str) == reference[column].astype(str)).all(), column
        else:
            np.testing.assert_allclose(engine[column].to_numpy(float), reference[column].to_numpy(float), rtol=0, atol=1e-9)
