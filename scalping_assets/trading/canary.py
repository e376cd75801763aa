"""A canary rollout of the registry's `challenger`: its share of clients stepped up (10 % → 50 % →
100 % by default) while it holds, rolled back on its own the moment a check says the live system
breaches, and crowned `champion` once it held every step.

`CanaryController.step` is one evaluation and keeps nothing between calls: the state is the registry's
(`canary_state`), so a Dagster sensor can run it every minute and a restart loses nothing but the
metrics baseline of the step under way (judged from the restart on). The service reads the share from
the same tag and follows within SCALPING_FOLLOW_INTERVAL. Every alias the canary moves, and its start,
steps and end, are appended to the registry's alias history.

Checks are anything with a `name` and a `breach(since)` (the paper trader's P&L band is one); the
traffic a step needs is counted by a `CanaryTraffic`. `ServiceMetricsCheck` is both: it judges the
challenger's error rate and model-time p99, and counts its predictions, from the service's /metrics.
No Dagster here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field, SecretStr

from ..backtest.promotion import crown
from ..models.tracking import CHALLENGER, CHAMPION, PREVIOUS, Tracker
from .canary_state import CANARY_TAG, AliasEvent, CanaryConfig, CanaryState, read_canary, record, write_canary


class CanaryError(RuntimeError):
    """A canary that cannot start or step; the message names the registered model."""


class CanaryCheck(Protocol):
    name: str

    def breach(self, since: float) -> str | None:
        """Why the live system breaches since `since` (wall-clock seconds); None: it holds."""
        ...


class CanaryTraffic(Protocol):
    def requests(self, since: float) -> int:
        """The challenger's predictions since `since` (wall-clock seconds)."""
        ...


class MetricsUnavailable(RuntimeError):
    """The service's /metrics could not be read: nothing can be judged (neither a breach nor a hold)."""


class Counts(BaseModel):
    """One variant's cumulative counters on /metrics."""

    predictions: float = 0.0
    errors: float = 0.0
    buckets: dict[str, float] = Field(default_factory=dict)  # model-time histogram: bound ("0.001" … "+Inf") -> count

    def minus(self, base: Counts) -> Counts:
        return Counts(
            predictions=self.predictions - base.predictions,
            errors=self.errors - base.errors,
            buckets={le: n - base.buckets.get(le, 0.0) for le, n in self.buckets.items()},
        )

    def went_down(self, base: Counts) -> bool:
        """Whether a counter is below `base`: the service restarted and counts from zero again."""
        d = self.minus(base)
        return d.predictions < 0 or d.errors < 0 or any(n < 0 for n in d.buckets.values())

    def histogram(self) -> tuple[tuple[float, float], ...]:
        """(upper bound in s, cumulative count), ascending, +Inf last."""
        return tuple(sorted((float(le), n) for le, n in self.buckets.items()))


class Baseline(BaseModel):
    """The counters at the first look at the step that began at `since` (wall-clock seconds)."""

    since: float
    counts: Counts


def quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float:
    """The q-quantile of a histogram's cumulative buckets, as Prometheus' histogram_quantile: linear
    within the bucket it falls in, the highest finite bound when it falls in +Inf; NaN when empty."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan
    rank, lower, below = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower
            return le if count == below else lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


class ServiceMetricsCheck:
    """The challenger's error rate and p99 model time over the step, from the deltas of the service's
    counters (`scalping_predictions`, `scalping_prediction_errors`, `scalping_inference_seconds`) since
    the first look at the step. BentoML sums them over its workers. Fewer than `min_requests`
    predictions is not a breach: there is nothing to judge yet. Also the controller's traffic count.

    A caller that builds a new check for every evaluation (a sensor) keeps `baseline()` between them
    and hands it back with `restore`; without it each evaluation would judge only its own look."""

    name = "service metrics"

    def __init__(
        self, url: str, api_key: SecretStr | str, config: CanaryConfig, variant: str = CHALLENGER, timeout_s: float = 5.0
    ) -> None:
        self.url, self.config, self.variant, self.timeout_s = url.rstrip("/"), config, variant, timeout_s
        self._key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self._base: Baseline | None = None

    def baseline(self) -> dict | None:
        """The step's baseline as JSON-able data (None: no look yet)."""
        return None if self._base is None else self._base.model_dump()

    def restore(self, saved: dict | None) -> None:
        """Take up a `baseline()` again (None: the next look is the step's first)."""
        self._base = None if saved is None else Baseline.model_validate(saved)

    def _scrape(self) -> Counts:
        key = self._key.get_secret_value()
        try:
            response = httpx.get(f"{self.url}/metrics", headers={"x-api-key": key} if key else {}, timeout=self.timeout_s)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise MetricsUnavailable(f"{self.url}/metrics: {type(exc).__name__}: {exc}") from None
        counts = Counts()
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.labels.get("variant") != self.variant:
                    continue
                if sample.name == "scalping_predictions_total":
                    counts.predictions += sample.value  # summed over versions: one challenger per step
                elif sample.name == "scalping_prediction_errors_total":
                    counts.errors += sample.value
                elif sample.name == "scalping_inference_seconds_bucket":  # summed over endpoints
                    le = sample.labels["le"]
                    counts.buckets[le] = counts.buckets.get(le, 0.0) + sample.value
        return counts

    def _delta(self, since: float) -> Counts:
        """The counters' growth since the first look at the step that began at `since`."""
        now = self._scrape()
        if self._base is None or self._base.since != since or now.went_down(self._base.counts):
            self._base = Baseline(since=since, counts=now)
        return now.minus(self._base.counts)

    def requests(self, since: float) -> int:
        d = self._delta(since)
        return int(d.predictions + d.errors)

    def breach(self, since: float) -> str | None:
        d, c = self._delta(since), self.config
        requests = d.predictions + d.errors
        if requests < c.min_requests:
            return None
        rate = d.errors / requests
        if rate > c.max_error_rate:
            return (
                f"{self.variant} error rate {rate:.1%} ({d.errors:.0f} of {requests:.0f} predictions this step) "
                f"> max_error_rate {c.max_error_rate:.1%}"
            )
        histogram = d.histogram()
        p99_ms = quantile(0.99, histogram) * 1e3
        if p99_ms > c.max_p99_ms:  # NaN (no successful prediction) compares false: the error rate said it
            timed = histogram[-1][1]
            return f"{self.variant} p99 model time {p99_ms:.1f} ms over {timed:.0f} requests > max_p99_ms {c.max_p99_ms:g}"
        return None


def _at(clock: Callable[[], float]) -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


def start_canary(tracker: Tracker, name: str, config: CanaryConfig, clock: Callable[[], float] = time.time) -> CanaryState:
    """Start rolling out `name@challenger` at the first step's share. A canary of that version already
    running is left as it is (starting twice is starting once)."""
    version = tracker.alias_version(name, CHALLENGER)
    if version is None:
        raise CanaryError(f"{name} has no {CHALLENGER} alias: nothing to roll out (the promotion gate names one)")
    current = read_canary(tracker, name)
    if current is not None and current.running and current.version == version:
        return current
    at = _at(clock)
    champion = tracker.alias_version(name, CHAMPION)
    state = CanaryState(
        version=version,
        champion=champion,
        config=config,
        step=0,
        share=config.steps[0],
        started=at,
        step_started=at,
        status="running",
    )
    write_canary(tracker, name, state)
    plan = " -> ".join(f"{s:.0%}" for s in config.steps)
    record(
        tracker,
        name,
        [AliasEvent(at=at, event="started", alias=CHALLENGER, version=version, why=f"shares {plan}; champion v{champion}")],
    )
    return state


class CanaryController:
    """One evaluation per `step()` of the canary of registered model `name`: roll back on a breach,
    step up once a step held `hold_s` with `min_requests`, crown the challenger after the last step."""

    def __init__(
        self,
        tracker: Tracker,
        name: str,
        config: CanaryConfig,
        checks: Sequence[CanaryCheck],
        alert: Callable[[str], None],
        *,
        traffic: CanaryTraffic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tracker, self.name, self.config = tracker, name, config
        self.checks, self.alert, self.traffic, self.clock = list(checks), alert, traffic, clock

    def step(self) -> CanaryState:
        state = read_canary(self.tracker, self.name)
        if state is None:
            raise CanaryError(f"{self.name} has no canary: start one (start_canary)")
        if not state.running:
            return state  # rolled back or completed: what it decided stands
        challenger = self.tracker.alias_version(self.name, CHALLENGER)
        if challenger != state.version:  # the gate named another challenger, or someone removed it
            moved = f"moved to v{challenger}" if challenger else "was removed"
            return self._roll_back(state, f"the {CHALLENGER} alias {moved} while v{state.version} was rolled out")
        since = state.step_started.timestamp()
        for check in self.checks:
            if (why := check.breach(since)) is not None:
                return self._roll_back(state, f"{check.name}: {why}")
        held = self.clock() - since
        if held < self.config.hold_s:
            return state
        requests = self.traffic.requests(since)
        if requests < self.config.min_requests:
            return state
        why = f"held {held:.0f} s with {requests} requests"
        return self._complete(state, why) if state.step + 1 == len(state.config.steps) else self._advance(state, why)

    def _advance(self, state: CanaryState, why: str) -> CanaryState:
        at, nxt = _at(self.clock), state.step + 1
        stepped = state.model_copy(update={"step": nxt, "share": state.config.steps[nxt], "step_started": at})
        write_canary(self.tracker, self.name, stepped)
        event = AliasEvent(
            at=at,
            event="stepped",
            alias=CHALLENGER,
            version=state.version,
            why=f"share {state.share:.0%} -> {stepped.share:.0%}: {why}",
        )
        record(self.tracker, self.name, [event])
        return stepped

    def _complete(self, state: CanaryState, why: str) -> CanaryState:
        at, version = _at(self.clock), state.version
        # Crowned before the state says so: a crash in between crowns again (a no-op) on the next step.
        replaced = crown(self.tracker, self.name, version)
        done = state.ended("completed", f"every step held; the last {why}")
        write_canary(self.tracker, self.name, done)
        moved = [(PREVIOUS, replaced, "the champion it replaced")] if replaced else []
        events = [
            AliasEvent(at=at, event="alias set", alias=alias, version=v, why=what)
            for alias, v, what in [*moved, (CHAMPION, version, "the canary completed")]
        ]
        events += self._remove_challenger(state, at, "now champion")
        self.tracker.set_version_tag(
            self.name, version, CANARY_TAG, f"completed at {at.isoformat(timespec='seconds')}: {done.why}"
        )
        record(
            self.tracker,
            self.name,
            [*events, AliasEvent(at=at, event="completed", alias=CHAMPION, version=version, why=done.why)],
        )
        return done

    def _roll_back(self, state: CanaryState, why: str) -> CanaryState:
        at, version = _at(self.clock), state.version
        where = f"step {state.step + 1} of {len(state.config.steps)} (share {state.share:.0%})"
        done = state.ended("rolled_back", f"at {where}: {why}")
        # The state first: share 0 stops the routing on the service's next look, whatever happens after.
        write_canary(self.tracker, self.name, done)
        events = self._remove_challenger(state, at, "rolled back")
        self.tracker.set_version_tag(
            self.name, version, CANARY_TAG, f"rolled back at {at.isoformat(timespec='seconds')} {done.why}"
        )
        record(
            self.tracker,
            self.name,
            [AliasEvent(at=at, event="rolled back", alias=CHALLENGER, version=version, why=done.why), *events],
        )
        champion = self.tracker.alias_version(self.name, CHAMPION)
        # Sent once: the state says rolled_back before the alert goes, and a rolled-back canary is left alone.
        self.alert(f"Canary of {self.name} v{version} rolled back at {where}; champion v{champion} keeps serving. {why}")
        return done

    def _remove_challenger(self, state: CanaryState, at: datetime, why: str) -> list[AliasEvent]:
        if self.tracker.alias_version(self.name, CHALLENGER) != state.version:
            return []  # moved on by someone else: not the canary's to remove
        self.tracker.delete_alias(self.name, CHALLENGER)
        return [AliasEvent(at=at, event="alias removed", alias=CHALLENGER, version=state.version, why=why)]
