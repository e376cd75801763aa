"""What a collector stored against the local Deriv server's own feed: lost, duplicated and wrong ticks
(the collector's tests and the rehearsal)."""

import numpy as np

from ..market.store import TickStore
from .fake_deriv import FakeDerivServer


def audit(fake: FakeDerivServer, store: TickStore, symbol: str, since: int) -> dict[str, int]:
    """What is stored of `symbol` against the server's own feed from `since` to the last stored tick.

    lost: a tick of the feed that is not stored; duplicated: an epoch stored twice; wrong: a stored tick
    the feed never had at that epoch, or with another quote.
    """
    stored = store.read(symbol)
    epochs, quotes = stored["epoch"].to_numpy(), stored["quote"].to_numpy()
    assert len(epochs), f"{symbol}: nothing stored"
    assert np.all(np.diff(epochs) >= 0), f"{symbol}: out of order"
    truth_epochs, truth_quotes = fake.between(symbol, since, epochs[-1])
    unique, first = np.unique(epochs, return_index=True)
    known = np.isin(unique, truth_epochs)
    at = np.searchsorted(truth_epochs, unique[known])
    wrong = int((~known).sum() + (quotes[first][known] != truth_quotes[at]).sum())
    lost = len(np.setdiff1d(truth_epochs, epochs))
    return {"stored": len(epochs), "lost": lost, "duplicated": len(epochs) - len(unique), "wrong": wrong}


def print_audit(title: str, report: dict[str, dict[str, int]]) -> None:
    print(f"\n{title}\n{'symbol':<9} {'stored':>8} {'lost':>5} {'duplicated':>10} {'wrong':>5}")
    for symbol, r in report.items():
        print(f"{symbol:<9} {r['stored']:>8,} {r['lost']:>5} {r['duplicated']:>10} {r['wrong']:>5}")


def flawless(report: dict[str, dict[str, int]]) -> bool:
    return all(r["lost"] == r["duplicated"] == r["wrong"] == 0 for r in report.values())
