"""The symbol catalog: every Deriv synthetic index and how the simulator generates it.

The catalog itself is data (`symbols.yml`); this module only validates and serves it.
"""

from __future__ import annotations

import math
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

SECONDS_PER_YEAR = 365 * 86_400
SECONDS_PER_DAY = 86_400


class UnknownSymbolError(KeyError):
    """A symbol that is not in the catalog; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Family(StrEnum):
    VOLATILITY = "volatility"
    CRASH_BOOM = "crash_boom"
    JUMP = "jump"
    STEP = "step"
    DAILY_RESET = "daily_reset"
    RANGE_BREAK = "range_break"
    PLANTED = "planted"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GBMGenerator(_Frozen):
    """Driftless GBM; with `dividend` and `daily_reset` it is the Bull/Bear market index."""

    kind: Literal["gbm"]
    sigma: float = Field(gt=0)
    dividend: float = 0.0
    daily_reset: bool = False


class CrashBoomGenerator(_Frozen):
    """One event every `mean_event_gap` ticks on average; folded-normal move sizes."""

    kind: Literal["crash_boom"]
    mean_event_gap: int = Field(gt=1)
    event: Literal["down", "up"]
    mdt: float = Field(lt=0)
    mut: float = Field(gt=0)


class JumpGenerator(_Frozen):
    kind: Literal["jump"]
    sigma: float = Field(gt=0)
    jumps_per_day: float = Field(gt=0)
    jump_scale: float = Field(gt=0)


class StepGenerator(_Frozen):
    kind: Literal["step"]
    step: float = Field(gt=0)


class AR1Generator(_Frozen):
    """Planted signal: log-returns r_t = phi * r_{t-1} + sigma * eps_t."""

    kind: Literal["ar1"]
    phi: float = Field(gt=-1, lt=1)
    sigma: float = Field(gt=0)


Generator = Annotated[
    GBMGenerator | CrashBoomGenerator | JumpGenerator | StepGenerator | AR1Generator,
    Field(discriminator="kind"),
]


class SymbolSpec(_Frozen):
    symbol: str
    display_name: str
    family: Family
    pip_size: float = Field(gt=0)
    pip_decimals: int = Field(ge=0)
    tick_interval_s: int | None = Field(default=None, gt=0)
    initial_quote: float | None = Field(default=None, gt=0)
    deriv: bool = True
    generator: Generator | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SymbolSpec:
        if not math.isclose(self.pip_size, 10.0**-self.pip_decimals):
            raise ValueError(f"{self.symbol}: pip_size {self.pip_size} does not match pip_decimals {self.pip_decimals}")
        if self.generator is not None and (self.tick_interval_s is None or self.initial_quote is None):
            raise ValueError(f"{self.symbol}: a simulated symbol needs tick_interval_s and initial_quote")
        return self

    @property
    def simulated(self) -> bool:
        return self.generator is not None

    @property
    def dt(self) -> float:
        """Tick interval as a fraction of a 365-day year (the `dt` of the generation formulas)."""
        if self.tick_interval_s is None:
            raise ValueError(f"{self.symbol} has no known tick interval")
        return self.tick_interval_s / SECONDS_PER_YEAR

    @property
    def ticks_per_day(self) -> int:
        if self.tick_interval_s is None:
            raise ValueError(f"{self.symbol} has no known tick interval")
        return SECONDS_PER_DAY // self.tick_interval_s


@cache
def catalog() -> dict[str, SymbolSpec]:
    raw = yaml.safe_load(resources.files(__package__).joinpath("symbols.yml").read_text())
    return {name: SymbolSpec(symbol=name, **fields) for name, fields in raw["symbols"].items()}


def get_symbol(symbol: str) -> SymbolSpec:
    try:
        return catalog()[symbol]
    except KeyError:
        valid = ", ".join(catalog())
        raise UnknownSymbolError(f"unknown symbol {symbol!r}; valid symbols: {valid}") from None


def simulated_symbols() -> list[str]:
    return [name for name, spec in catalog().items() if spec.simulated]
