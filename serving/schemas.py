"""Request and response bodies of the service. Every client mistake fails here, as HTTP 400 with the
offending field named, before any model code runs.

What a request must match (window length, feature count, symbols) depends on the served model; the
service publishes it with `expect` whenever it loads one, and the validators read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, NamedTuple

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

MAX_TICKS = 20_000  # a raw-tick window beyond this is refused (the look-back needs a few thousand)
MAX_BATCH = 128  # windows per batch request, and per merged batch
MAX_EPOCH = 2**40  # year 36812: keeps epochs far inside int64
MAX_FEATURE = 1e9  # every feature is in bp, pips, ticks or a ratio; beyond this scaling overflows float32
MAX_CLIENT_ID = 200  # characters of a client id
# "" rather than None: BentoML's OpenAPI flattening would publish None as a string's default.
CLIENT_ID = Field(default="", max_length=MAX_CLIENT_ID, description="sticky A/B routing key (empty: the x-client-id header)")


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


def expected_now() -> Expected | None:
    """What requests must match now (None: no champion loaded, so nothing to check them against)."""
    return _expected


def check_symbol(symbol: str) -> str:
    if _expected is not None and symbol not in _expected.symbols:
        raise ValueError(f"unknown symbol {symbol!r}: the served model knows {list(_expected.symbols)}")
    return symbol


Epoch = Annotated[int, Field(ge=0, le=MAX_EPOCH, description="Unix seconds")]
# Positive, checked by validators rather than `gt=0`: the exclusiveMinimum it publishes trips some OpenAPI tooling.
Quote = Annotated[float, Field(allow_inf_nan=False, description="positive")]


class StreamTick(BaseModel):
    """One message of the WebSocket stream."""

    symbol: str
    epoch: Epoch
    quote: Quote

    @field_validator("quote")
    @classmethod
    def _positive(cls, quote: float) -> float:
        if quote <= 0:
            raise ValueError(f"quote must be positive, got {quote}")
        return quote


class TickWindow(BaseModel):
    """Raw ticks of one symbol, oldest first, as columns (the layout of Deriv's `ticks_history`); the
    service computes the features with the training code."""

    symbol: str
    epochs: list[Epoch] = Field(max_length=MAX_TICKS, description="Unix seconds, strictly increasing; at least min_ticks")
    quotes: list[Quote] = Field(max_length=MAX_TICKS, description="positive, one per epoch")
    client_id: str = CLIENT_ID

    _symbol = field_validator("symbol")(check_symbol)

    @field_validator("epochs")
    @classmethod
    def _enough_and_increasing(cls, epochs: list[int]) -> list[int]:
        if _expected is not None and len(epochs) < _expected.min_ticks:
            raise ValueError(
                f"{len(epochs)} ticks given; the model needs at least {_expected.min_ticks} "
                f"(feature look-back plus a window of {_expected.window})"
            )
        values = np.asarray(epochs, np.int64)
        bad = np.flatnonzero(np.diff(values) <= 0)
        if bad.size:
            i = int(bad[0]) + 1
            raise ValueError(f"epochs must increase strictly: epochs[{i}] = {values[i]} follows {values[i - 1]}")
        return epochs

    @field_validator("quotes")
    @classmethod
    def _positive(cls, quotes: list[float]) -> list[float]:
        bad = np.flatnonzero(np.asarray(quotes, np.float64) <= 0)
        if bad.size:
            raise ValueError(f"quotes must be positive: quotes[{bad[0]}] = {quotes[bad[0]]}")
        return quotes

    @model_validator(mode="after")
    def _aligned(self) -> TickWindow:
        if len(self.epochs) != len(self.quotes):
            raise ValueError(f"{len(self.epochs)} epochs but {len(self.quotes)} quotes: one quote per epoch")
        return self


# Checked by pydantic's core, element by element: fast, and the error names row and column.
FeatureValue = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_FEATURE, le=MAX_FEATURE)]


class FeatureWindow(BaseModel):
    """A precomputed raw feature window (rows oldest first, columns in /info's `features` order)."""

    symbol: str
    features: list[list[FeatureValue]] = Field(description="window x features, the feature code's units (unscaled)")
    client_id: str = CLIENT_ID

    _symbol = field_validator("symbol")(check_symbol)

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


class BatchWindow(NamedTuple):
    """One window of a batch request once its body is read and checked, whichever format it came in
    (JSON or Arrow): what adaptive batching merges across requests."""

    symbol: str
    client_id: str
    features: np.ndarray  # (window, features) float64, raw


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
