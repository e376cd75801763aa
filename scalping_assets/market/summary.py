"""Human-readable summaries of a day of ticks: key figures and a price plot."""

from __future__ import annotations

from datetime import UTC, datetime

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..plotting import figure_png

MAX_PLOT_POINTS = 3_000


def tick_summary(ticks: pd.DataFrame) -> dict[str, float | int | str]:
    if ticks.empty:
        return {"rows": 0}
    quotes = ticks["quote"]
    first, last = int(ticks["epoch"].iloc[0]), int(ticks["epoch"].iloc[-1])
    return {
        "rows": len(ticks),
        "first_epoch": first,
        "last_epoch": last,
        "first_time": datetime.fromtimestamp(first, UTC).isoformat(),
        "last_time": datetime.fromtimestamp(last, UTC).isoformat(),
        "first_quote": float(quotes.iloc[0]),
        "last_quote": float(quotes.iloc[-1]),
        "min_quote": float(quotes.min()),
        "max_quote": float(quotes.max()),
    }


def price_plot_png(ticks: pd.DataFrame, title: str) -> bytes:
    # Buckets keep each stretch's low and high, so spikes and crashes survive the downsampling.
    bucket = np.arange(len(ticks)) // max(1, -(-len(ticks) // MAX_PLOT_POINTS))
    grouped = ticks.groupby(bucket)
    quotes = grouped["quote"]
    times = pd.to_datetime(grouped["epoch"].first(), unit="s", utc=True)
    fig, ax = plt.subplots(figsize=(7, 2.6), dpi=90)
    ax.fill_between(times, quotes.min(), quotes.max(), alpha=0.35, linewidth=0, label="low-high")
    ax.plot(times, quotes.last(), linewidth=0.7, label="last")
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("quote")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return figure_png(fig)
