"""Request and response bodies of the service. Every client mistake fails here, as HTTP 400 with the
offending field named, before any model code runs.

What a request must match (window length, feature count, symbols) depends on the served model; the
service publishes it with `expect` whenever it loads one, and the validators read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import BaseModel, Field, field_validator

MAX_TICKS = 20_000  # a raw-tick window beyond this is refused (the look-back needs a few thousand)
MAX_BATCH = 128  # windows per batch request, and per merged batch
MAX_EPOCH = 2**40  # year 36812: keeps epochs far inside int64
MAX_FEATURE = 1e9  # every feature is in bp, pips, ticks or a ratio; beyond this scaling overflows float32
# "" rather than None: BentoML's OpenAPI flattening would publish None as a string's default.
CLIENT_ID = Field(default="", max_length=200, description="sticky A/B routing key (empty: the x-client-id header)")


@dataclass(frozen=True)
class Expected:
    symbols: tuple[str, ...]
    window: int
    n_features: int
    min_ticks: int


_expected: Expected | None = None


def expect(expected: Expected | None) -> None:
    global _expected
    _expected = expected


def _check_symbol(symbol: str) -> str:
    if _expected is not None and symbol not in _expected.symbols:
        raise ValueError(f"unknown symbol {symbol!r}: the served model knows {list(_expected.symbols)}")
    return symbol


class Tick(BaseModel):
    epoch: int = Field(ge=0, le=MAX_EPOCH, description="Unix seconds")
    quote: float = Field(allow_inf_nan=False, description="positive")

    @field_validator("quote")
    @classmethod
    def _positive(cls, quote: float) -> float:
        # A validator, not `gt=0`: the published exclusiveMinimum trips some OpenAPI tooling.
        if quote <= 0:
            raise ValueError(f"quote must be positive, got {quote}")
        return quote


class TickWindow(BaseModel):
    """Raw ticks of one symbol, oldest first; the service computes the features (training's own code)."""

    symbol: str
    ticks: list[Tick] = Field(max_length=MAX_TICKS, description="at least the model's min_ticks (see /info)")
    client_id: str = CLIENT_ID

    _symbol = field_validator("symbol")(_check_symbol)

    @field_validator("ticks")
    @classmethod
    def _enough_and_increasing(cls, ticks: list[Tick]) -> list[Tick]:
        if _expected is not None and len(ticks) < _expected.min_ticks:
            raise ValueError(
                f"{len(ticks)} ticks given; the model needs at least {_expected.min_ticks} "
                f"(feature look-back plus a window of {_expected.window})"
            )
        epochs = np.fromiter((t.epoch for t in ticks), np.int64, len(ticks))
        bad = np.flatnonzero(np.diff(epochs) <= 0)
        if bad.size:
            i = int(bad[0]) + 1
            raise ValueError(f"epochs must increase strictly: ticks[{i}].epoch {epochs[i]} follows {epochs[i - 1]}")
        return ticks


# Checked by pydantic's core, element by element: fast, and the error names row and column.
FeatureValue = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_FEATURE, le=MAX_FEATURE)]


class FeatureWindow(BaseModel):
    """A precomputed raw feature window (rows oldest first, columns in /info's `features` order)."""

    symbol: str
    features: list[list[FeatureValue]] = Field(description="window x features, the feature code's units (unscaled)")
    client_id: str = CLIENT_ID

    _symbol = field_validator("symbol")(_check_symbol)

    @field_validator("features")
    @classmethod
    def _shape(cls, rows: list[list[float]]) -> list[list[float]]:
        if _expected is None:
            return rows
        if len(rows) != _expected.window:
            raise ValueError(f"window has {len(rows)} rows; the model reads exactly {_expected.window}")
        for i, row in enumerate(rows):
            if len(row) != _expected.n_features:
                raise ValueError(f"row {i} has {len(row)} values; the model has {_expected.n_features} features")
        return rows


class Prediction(BaseModel):
    registered_model: str
    version: str
    variant: str = Field(description="champion or challenger (A/B routing)")
    symbols: list[str] = Field(description="the symbol set the model was trained on")
    symbol: str
    probabilities: dict[str, float]
    prediction: str
    epoch: int | None = Field(default=None, description="the tick predicted at (raw-tick requests)")
    latency_ms: float
