"""What a canary rollout keeps in the registry: its state with the config it started with (the
registered-model tag `canary`) and the history of the alias moves it made (the tag `alias_history`).

The registry is the one source of truth every consumer already reads: each worker of the prediction
service resolves the share of clients it routes to the challenger from the same tag as the aliases,
and the controller (`canary.py`) keeps nothing between its evaluations but this tag. Kept apart from
the controller so the service imports only this (the controller reaches the promotion gate, whose
statistics the service has no use for).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from ..models.tracking import Tracker

CANARY_TAG = "canary"  # registered-model tag: the CanaryState; version tag: how its canary ended
HISTORY_TAG = "alias_history"
# The registry's column for a tag's value is 5,000 characters (MLflow's own check allows more; SQLite
# stores it anyway, PostgreSQL refuses it): the state and the history must each fit.
TAG_LIMIT = 5000
_WHY_CHARS = 1000  # a state's reason; an event's is cut shorter so that many fit the history
_EVENT_WHY_CHARS = 300


class CanaryStateError(ValueError):
    """A registry tag that does not hold what the canary wrote there; the message names the tag and field."""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


Share = Annotated[float, Field(gt=0, le=1)]


class CanaryConfig(BaseModel):
    """How a canary steps up and what rolls it back; the state keeps the one it started with."""

    steps: list[Share] = Field(
        default=[0.1, 0.5, 1.0], min_length=1, description="shares of clients routed to the challenger, step by step"
    )
    hold_s: float = Field(default=3600, gt=0, description="seconds each step must hold before the next")
    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="of the challenger's predictions since the step began, at most"
    )
    max_p99_ms: float = Field(default=50, gt=0, description="the challenger's model time per request (p99), at most")
    min_requests: int = Field(
        default=100, ge=1, description="challenger predictions a step needs before it is judged or completes"
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[float]) -> list[float]:
        for i in range(1, len(steps)):
            if steps[i] <= steps[i - 1]:
                raise ValueError(f"steps must increase: steps[{i}] = {steps[i]} follows {steps[i - 1]}")
        return steps


class CanaryState(BaseModel):
    """A canary rollout of one challenger version: the share of clients the service routes to it now."""

    model_config = ConfigDict(frozen=True)

    version: str = Field(description="the challenger version rolled out")
    champion: str | None = Field(description="the champion version when the canary started")
    config: CanaryConfig = Field(description="what it started with: the shares it steps through, its limits")
    step: int = Field(ge=0, description="index into config.steps")
    share: float = Field(ge=0, le=1, description="of clients routed to the challenger now; 0 once the canary ended")
    started: datetime
    step_started: datetime
    status: Literal["running", "rolled_back", "completed"]
    why: str = Field(default="", description="why it ended")

    @property
    def running(self) -> bool:
        return self.status == "running"

    def ended(self, status: Literal["rolled_back", "completed"], why: str) -> CanaryState:
        return self.model_copy(update={"status": status, "share": 0.0, "why": _cut(why, _WHY_CHARS)})


class AliasEvent(BaseModel):
    """One entry of the alias history: a canary's start, step or end, or an alias it moved."""

    at: datetime
    event: Literal["started", "stepped", "rolled back", "completed", "alias set", "alias removed"]
    alias: str
    version: str
    why: str = ""


_HISTORY = TypeAdapter(list[AliasEvent])
_STATE = TypeAdapter(CanaryState)
T = TypeVar("T")


def _parse(tracker: Tracker, name: str, tag: str, adapter: TypeAdapter[T]) -> T | None:
    text = tracker.model_tag(name, tag)
    if text is None:
        return None
    try:
        return adapter.validate_json(text)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()[:3])
        raise CanaryStateError(f"{name}'s tag {tag!r} is not what the canary writes ({where})") from None


def read_canary(tracker: Tracker, name: str) -> CanaryState | None:
    """The canary of registered model `name` (None: it never had one)."""
    return _parse(tracker, name, CANARY_TAG, _STATE)


def write_canary(tracker: Tracker, name: str, state: CanaryState) -> None:
    tracker.set_model_tag(name, CANARY_TAG, state.model_dump_json())


def alias_history(tracker: Tracker, name: str) -> list[AliasEvent]:
    """The alias history of `name`, oldest first (the oldest entries dropped once it outgrew a tag)."""
    return _parse(tracker, name, HISTORY_TAG, _HISTORY) or []


def record(tracker: Tracker, name: str, events: list[AliasEvent]) -> None:
    """Append `events` to the alias history, dropping the oldest entries that no longer fit a tag. One
    writer at a time: the canary controller, which a single sensor runs."""
    cut = [e.model_copy(update={"why": _cut(e.why, _EVENT_WHY_CHARS)}) for e in events]
    history = alias_history(tracker, name) + cut
    text = _HISTORY.dump_json(history).decode()
    while len(text) > TAG_LIMIT:  # bounded: a tenth of the entries (at least one) fewer each time
        history = history[max(1, len(history) // 10) :]
        text = _HISTORY.dump_json(history).decode()
    tracker.set_model_tag(name, HISTORY_TAG, text)


def routed_share(canary: CanaryState | None, challenger: str | None, static: float) -> float:
    """The share of clients to route to the `challenger` version: a canary's share while the canary is
    about that version (0 once it ended: a rolled-back version gets no traffic from the static share
    either), else the static share (SCALPING_CHALLENGER_SHARE)."""
    if challenger is None:
        return 0.0
    if canary is not None and canary.version == challenger:
        return canary.share
    return static
