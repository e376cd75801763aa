"""The symbol catalog: every Deriv synthetic index, how the simulator generates it, and what trading
it costs on each Deriv product.

The catalog itself is data (`symbols.yml`); this module only validates and serves it. Cost figures
carry their source; a figure nobody has published is `null` (unknown), and a backtest that needs it
fails naming the symbol and the field (`scalping_assets.backtest.instruments`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
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


class Figure(_Frozen):
    """One cost figure and where it comes from; `value` None: unknown."""

    value: float | None = Field(ge=0)
    source: str = Field(min_length=1)


class MultiplierCosts(_Frozen):
    """Multipliers (MULTUP/MULTDOWN): commission = rate x stake x multiplier, charged at the start."""

    commission: dict[int, Figure] | None = Field(
        description="commission rate per multiplier; null: unknown at every multiplier (whether the rate "
        "changes with the multiplier is not known, so a rate holds for its own multiplier only)"
    )

    @model_validator(mode="after")
    def _rates(self) -> MultiplierCosts:
        for multiplier, figure in (self.commission or {}).items():
            if multiplier < 1 or (figure.value is not None and figure.value >= 1):
                raise ValueError(f"commission rate {figure.value} at x{multiplier}: a multiplier >= 1 and a rate < 1 expected")
        return self


class RiseFallCosts(_Frozen):
    """Rise/Fall on ticks (CALL/PUT): a win pays payout_ratio x stake, a loss (or an equal quote) loses the stake."""

    payout_ratio: Figure

    @model_validator(mode="after")
    def _ratio(self) -> RiseFallCosts:
        ratio = self.payout_ratio.value
        if ratio is not None and not 1 < ratio <= 2:
            raise ValueError(f"payout ratio {ratio}: a win pays more than the stake and at most twice it")
        return self


class CfdCosts(_Frozen):
    """CFDs on Deriv MT5: the cost is the spread (swap, charged at the daily rollover, is left out)."""

    spread: Figure = Field(description="ask - bid in price units (quote currency), with its date in the source")


class SymbolCosts(_Frozen):
    multiplier: MultiplierCosts
    rise_fall: RiseFallCosts
    cfd: CfdCosts


_NOT_IN_CATALOG = "not in the symbol catalog: unknown"
UNKNOWN_COSTS = SymbolCosts(
    multiplier=MultiplierCosts(commission=None),
    rise_fall=RiseFallCosts(payout_ratio=Figure(value=None, source=_NOT_IN_CATALOG)),
    cfd=CfdCosts(spread=Figure(value=None, source=_NOT_IN_CATALOG)),
)


class CallLimits(_Frozen):
    """How many API calls Deriv allows (`website_status.api_call_limits`); None: no limit known."""

    minutely: int | None = Field(ge=1)
    hourly: int | None = Field(ge=1)
    source: str = Field(min_length=1)

    @classmethod
    def from_website_status(cls, status: dict, where: str) -> CallLimits:
        """The general limits of a `website_status` reply (buys and sells are general calls: neither
        pricing nor outcome ones), stamped with where and when they were read."""
        try:
            general = status["api_call_limits"]["max_requestes_general"]  # sic: the API's spelling
            minutely, hourly = int(general["minutely"]), int(general["hourly"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"website_status.api_call_limits.max_requestes_general unreadable in {where}: {exc!r}") from exc
        read = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(minutely=minutely, hourly=hourly, source=f"{where}, read {read}")


class ProductCalls(_Frozen):
    calls: int | None = Field(ge=1, description="API calls one trade spends; null: not traded through the API")
    source: str = Field(min_length=1)


class MultiplierRules(_Frozen):
    stop_out_loss: Figure = Field(description="share of the stake lost when the venue closes the contract")
    min_commission: Figure = Field(description="floor of the commission, account currency")


class Venue(_Frozen):
    """What the venue imposes on every symbol: call limits, calls per trade, the multiplier's rules."""

    api_call_limits: CallLimits
    calls_per_trade: dict[str, ProductCalls]
    multiplier: MultiplierRules


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
    costs: SymbolCosts = UNKNOWN_COSTS

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
def _raw() -> dict:
    return yaml.safe_load(resources.files(__package__).joinpath("symbols.yml").read_text())


@cache
def catalog() -> dict[str, SymbolSpec]:
    return {name: SymbolSpec(symbol=name, **fields) for name, fields in _raw()["symbols"].items()}


@cache
def venue() -> Venue:
    """Deriv's venue-wide rules (`venue:` in symbols.yml)."""
    return Venue(**_raw()["venue"])


def get_symbol(symbol: str) -> SymbolSpec:
    try:
        return catalog()[symbol]
    except KeyError:
        valid = ", ".join(catalog())
        raise UnknownSymbolError(f"unknown symbol {symbol!r}; valid symbols: {valid}") from None


def simulated_symbols() -> list[str]:
    return [name for name, spec in catalog().items() if spec.simulated]
