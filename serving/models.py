"""The served models: the registry's `champion` (and `challenger`) as loaded ONNX bundles, kept in
step across the service's workers, and the route of a client to one of them.

The share of clients routed to the challenger is the registry's while a canary rollout is about it
(the registered-model tag `canary`, which the canary controller steps up or sets to 0 on a rollback),
else the static SCALPING_CHALLENGER_SHARE. A reload resolves the aliases and that share again; the
worker that took it writes what it resolved to a marker file in the bundle cache, and every other
worker loads exactly that on its next request. Each worker also follows the registry on its own
(`follow_registry`): when the gate moves an alias or a canary its share, the service reloads within
`SCALPING_FOLLOW_INTERVAL` seconds and logs what it switched to, and while the registry cannot be
reached it keeps serving what it has.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from datetime import UTC, datetime
from typing import NamedTuple

from pydantic import BaseModel

from scalping_assets.models.tracking import CHALLENGER, CHAMPION
from scalping_assets.settings import Settings
from scalping_assets.trading.canary_state import CanaryState, CanaryStateError, read_canary, routed_share

from .bundle import OnnxPredictor
from .metrics import MODEL_INFO
from .registry import BundleRegistry
from .schemas import Expected, expect

log = logging.getLogger("bentoml.scalping")  # BentoML's handlers print it with the server's own lines


class Pinned(BaseModel):
    """The versions to serve, as the aliases named them when resolved: what a reload writes to the
    marker file, so the other workers load these rather than whatever the registry says later."""

    name: str | None
    versions: dict[str, str]  # alias -> version
    problems: dict[str, str]  # alias -> why it is not served
    share: float = 0.0  # of clients routed to the challenger
    canary: CanaryState | None = None

    def routing(self) -> dict:
        """What decides which model answers whom: a change of any of it is followed."""
        return self.model_dump(exclude={"problems"})


class ReloadResult(BaseModel):
    """What POST /reload answers: the version served per alias, whether any changed, what is missing."""

    served: dict[str, str]
    changed: bool
    problems: dict[str, str]


class Route(NamedTuple):
    variant: str  # champion or challenger
    model: OnnxPredictor


def bucket(client_id: str) -> float:
    """A client's fixed place in [0, 1): the same client always lands on the same side of the split."""
    return int.from_bytes(hashlib.sha256(client_id.encode()).digest()[:8], "big") / 2**64


class ModelSet:
    """The champion and, when a share of clients is routed to it, the challenger of one registered model."""

    def __init__(self, settings: Settings) -> None:
        self.registry = BundleRegistry(settings.mlflow_uri(), settings.bundle_cache_dir())
        self.model_name = settings.model
        self.static_share = settings.challenger_share  # while no canary is about the challenger
        self.precision = settings.precision
        self.loaded: dict[str, OnnxPredictor] = {}  # alias -> model
        self.problems: dict[str, str] = {}  # alias -> why it is not served
        self._lock = threading.RLock()
        self._info_labels: list[tuple[str, str, str]] = []
        self._marker = self.registry.cache / "reload.marker"
        # A marker left by an earlier server names versions resolved then: start from the registry instead.
        self._marker_seen = self._marker_time()
        try:
            self.pinned = self._resolve()
        except Exception as exc:  # MLflow unreachable at start: start anyway, unready (503), the follower retries
            log.warning(f"registry unreachable at start ({type(exc).__name__}: {exc}); serving nothing until it answers")
            self.pinned = Pinned(name=None, versions={}, problems={CHAMPION: f"registry unreachable: {type(exc).__name__}"})
        self._load(self.pinned)

    @property
    def ready(self) -> bool:
        return CHAMPION in self.loaded

    @property
    def challenger_share(self) -> float:
        """The share of clients actually routed to the challenger: none while it is not served."""
        return self.pinned.share if CHALLENGER in self.loaded else 0.0

    def route(self, client_id: str | None) -> Route:
        """The model a client is served by; the champion must be loaded."""
        if CHALLENGER in self.loaded and client_id and bucket(client_id) < self.pinned.share:
            return Route(CHALLENGER, self.loaded[CHALLENGER])
        return Route(CHAMPION, self.loaded[CHAMPION])

    def reload(self) -> ReloadResult:
        """Resolve the aliases again and load whatever changed; the other workers follow."""
        with self._lock:
            pinned = self.pinned = self._resolve()
            result = self._load(pinned)
            self._marker.parent.mkdir(parents=True, exist_ok=True)
            staged = self._marker.with_suffix(f".{os.getpid()}")
            staged.write_text(pinned.model_dump_json())
            os.replace(staged, self._marker)  # a follower never reads half a file
            self._marker_seen = self._marker_time()
        return result

    def follow_reloads(self) -> None:
        """Load the versions another worker's reload pinned, if it made one since the last look."""
        seen = self._marker_time()
        if seen != self._marker_seen:
            with self._lock:
                self._marker_seen = seen
                self.pinned = Pinned.model_validate_json(self._marker.read_text())
                self._load(self.pinned)

    def follow_registry(self, interval_s: float, stop: threading.Event) -> None:
        """Until `stop` is set: every `interval_s` seconds, resolve the aliases and the challenger's share
        and reload when they moved since the last resolution (a new champion, a rollback, a canary's
        step), logging what is served from when."""
        while not stop.wait(interval_s):
            try:
                pinned = self._resolve()
            except Exception as exc:  # the registry down or unreachable: what is loaded keeps serving
                log.warning(f"registry unreachable ({type(exc).__name__}: {exc}); still serving {self.served()}")
                continue
            if pinned.routing() == self.pinned.routing() and self._serves(pinned):
                continue
            # Aliases or a share that moved, or a version pinned before its bundle was exported (the
            # gate promotes, then the export runs): tried again every interval until it loads.
            before, share = self.served(), self.challenger_share
            result = self.reload()
            if result.changed or self.challenger_share != share:
                at = datetime.now(UTC).isoformat(timespec="seconds")
                moved = f"; challenger share {share:g} -> {self.challenger_share:g}" if self.challenger_share != share else ""
                log.info(f"followed the registry at {at}: {pinned.name} {before} -> {result.served}{moved}")

    def _serves(self, pinned: Pinned) -> bool:
        """Whether every pinned version is loaded (or, for a challenger, was refused as incompatible)."""
        for alias, version in pinned.versions.items():
            model = self.loaded.get(alias)
            refused = alias == CHALLENGER and "not routed" in self.problems.get(CHALLENGER, "")
            if not refused and (model is None or (model.registered_model, model.version) != (pinned.name, version)):
                return False
        return True

    def served(self) -> dict[str, str]:
        """alias -> the version served now."""
        return {alias: m.version for alias, m in self.loaded.items()}

    def _marker_time(self) -> int:
        try:
            return self._marker.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def _resolve(self) -> Pinned:
        """The versions the registry's aliases point at now, and the share of clients routed to the challenger."""
        try:
            name = self.model_name or self.registry.default_model_name()
        except LookupError as exc:
            return Pinned(name=None, versions={}, problems={CHAMPION: str(exc)})
        problems: dict[str, str] = {}
        try:
            canary = read_canary(self.registry.tracker, name)
        except CanaryStateError as exc:  # a tag edited by hand: route nobody to a challenger it may be about
            canary, problems[CHALLENGER] = None, f"{exc}: not routed"
        champion, challenger = self.registry.resolve(name, CHAMPION), self.registry.resolve(name, CHALLENGER)
        share = 0.0 if problems else routed_share(canary, challenger, self.static_share)
        versions = {alias: v for alias, v in ((CHAMPION, champion), (CHALLENGER, challenger if share > 0 else None)) if v}
        if champion is None:
            problems[CHAMPION] = f"{name} has no {CHAMPION}"
        if challenger is None and (self.static_share > 0 or (canary is not None and canary.running)):
            problems[CHALLENGER] = f"{name} has no {CHALLENGER}"
        return Pinned(name=name, versions=versions, problems=problems, share=share, canary=canary)

    def _load(self, pinned: Pinned) -> ReloadResult:
        """Serve the pinned versions (a failing one keeps nothing, but a champion that fails to load
        keeps the last good one)."""
        before = {alias: m.version for alias, m in self.loaded.items()}
        models: dict[str, OnnxPredictor] = {}
        problems = dict(pinned.problems)
        for alias, version in pinned.versions.items():
            current = self.loaded.get(alias)
            if current is not None and (current.registered_model, current.version) == (pinned.name, version):
                models[alias] = current
                continue
            try:
                folder = self.registry.fetch(pinned.name, version)
                models[alias] = OnnxPredictor(folder, self.precision, (pinned.name, version))
            except LookupError as exc:
                problems[alias] = f"{alias}: {exc}"
        challenger = models.get(CHALLENGER)
        if challenger is not None and CHAMPION in models and not _compatible(models[CHAMPION], challenger):
            problems[CHALLENGER] = "challenger reads other windows or symbols than the champion: not routed"
            models.pop(CHALLENGER)
        if CHAMPION not in models and CHAMPION in self.loaded:
            models = self.loaded  # keep serving the last good champion rather than nothing
        self.loaded, self.problems = models, problems
        champion = models.get(CHAMPION)
        expect(_expected(champion) if champion else None)  # what the request schemas check from now on
        for labels in self._info_labels:  # prometheus cannot clear labels across worker processes
            MODEL_INFO.labels(*labels).set(0)
        self._info_labels = [(a, m.registered_model, m.version) for a, m in models.items()]
        for labels in self._info_labels:
            MODEL_INFO.labels(*labels).set(1)
        after = {alias: m.version for alias, m in models.items()}
        return ReloadResult(served=after, changed=after != before, problems=problems)


def _expected(model: OnnxPredictor) -> Expected:
    m = model.manifest
    return Expected(tuple(m.symbols), m.window, len(m.feature_names), m.min_ticks)


def _compatible(a: OnnxPredictor, b: OnnxPredictor) -> bool:
    return _expected(a) == _expected(b)
