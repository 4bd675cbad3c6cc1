"""Router-local state and the strategies that order targets for one request.

Each process keeps its own: requests in flight per target, consecutive failures, outlier
ejection, round-robin positions and the retry budget. Nothing here is shared or persisted;
decisions read it without locks (the proxy runs on one event loop per process).

Strategies return the targets to try in order: the first choice, then where a retry goes.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from meshcore.routing import scoring
from meshcore.routing.scoring import ServiceStats
from meshcore.routing.table import Target

STRATEGIES = ("round_robin", "random", "least_request", "consistent_hash", "score_based")


@dataclass
class TargetState:
    """One target, as this process sees it."""

    in_flight: int = 0  # requests sent and not answered yet, all models
    consecutive_failures: int = 0  # reset by any success
    times_ejected: int = 0  # each ejection lasts longer than the one before
    ejected_until: float = 0.0  # monotonic time; 0 when not ejected
    failures: int = 0  # all failures seen (requests and port checks)


@dataclass
class OutlierSettings:
    """When a target is ejected, and for how long (Envoy's outlier detection, consecutive 5xx)."""

    consecutive_failures: int = 5  # failures in a row that eject
    base_ejection_s: float = 30.0  # x the times ejected
    max_ejection_s: float = 300.0
    max_ejected_fraction: float = 0.5  # beyond it, ejection is ignored (panic mode)


@dataclass
class RetryBudget:
    """Retries may be at most `fraction` of the requests in flight, or `minimum` (Envoy's retry budget)."""

    fraction: float = 0.2
    minimum: int = 3
    active_requests: int = 0
    active_retries: int = 0

    def allows_retry(self) -> bool:
        return self.active_retries < max(self.minimum, self.fraction * self.active_requests)


@dataclass
class Ejection:
    target: str
    ejected: bool  # True: just ejected; False: just restored
    for_s: float = 0.0
    failures: int = 0  # all failures seen (requests and port checks)


class Balancer:
    """The router-local state of one process and the choices made from it."""

    def __init__(self, outliers: OutlierSettings | None = None, budget: RetryBudget | None = None) -> None:
        self.outliers = outliers or OutlierSettings()
        self.budget = budget or RetryBudget()
        self.states: dict[str, TargetState] = {}
        self._round_robin: dict[str, itertools.count] = {}
        self._rings: dict[int, tuple[Sequence[Target], HashRing]] = {}
        self._rings_by_keys: dict[tuple[str, ...], HashRing] = {}
        self.random = random.Random()  # noqa: S311  (load spreading, not secrets)
        # Per model, per target: in flight, peak-EWMA service time, errors, concurrency (score_based).
        self.service: dict[str, dict[str, ServiceStats]] = {}
        # Per target: the last measured round trip to it (ms) and when (monotonic).
        self.latency_ms: dict[str, tuple[float, float]] = {}
        self._ejected: set[str] = set()
        # Told of each ejection and restoration (events, metrics); set by the proxy.
        self.on_ejection: Callable[[Ejection], None] = lambda ejection: None

    def service_stats(self, model: str, key: str) -> ServiceStats:
        by_target = self.service.get(model)
        if by_target is None:
            by_target = self.service[model] = {}
        stats = by_target.get(key)
        if stats is None:
            stats = by_target[key] = ServiceStats()
        return stats

    def state(self, key: str) -> TargetState:
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = TargetState()
        return state

    # ---- outliers ----

    def eligible(self, targets: Sequence[Target], now: float | None = None) -> tuple[Sequence[Target], bool]:
        """The targets not ejected, and whether the router is in panic mode (too many ejected: all of them)."""
        if not self._ejected:
            return targets, False  # the common case: nothing to look at, nothing copied
        now = time.monotonic() if now is None else now
        kept = []
        for target in targets:
            state = self.states.get(target.key)
            if state is not None and state.ejected_until:
                if state.ejected_until > now:
                    continue
                self._restore(target.key, state)
            kept.append(target)
        if targets and len(kept) < len(targets) * (1 - self.outliers.max_ejected_fraction):
            return list(targets), True
        return kept, False

    def record_success(self, key: str) -> None:
        state = self.state(key)
        state.consecutive_failures = 0

    def record_failure(self, key: str, now: float | None = None, refused: bool = False) -> None:
        """A connect error, reset or 5xx from the target: enough in a row eject it.

        A refused connection (nothing listens on the target's port) ejects at once: it is not a
        slow or flaky target but a stopped one, and score_based would send it too few requests
        to count five failures in a row (Linkerd likewise takes an endpoint whose connect fails
        out of its balancer until it can connect again)."""
        now = time.monotonic() if now is None else now
        state = self.state(key)
        state.failures += 1
        state.consecutive_failures += 1
        enough = refused or state.consecutive_failures >= self.outliers.consecutive_failures
        if enough and state.ejected_until <= now:
            state.times_ejected += 1
            for_s = min(self.outliers.base_ejection_s * state.times_ejected, self.outliers.max_ejection_s)
            state.ejected_until = now + for_s
            self._ejected.add(key)
            self.on_ejection(Ejection(key, True, for_s, state.consecutive_failures))
            state.consecutive_failures = 0

    def _restore(self, key: str, state: TargetState) -> None:
        state.ejected_until = 0.0
        self._ejected.discard(key)
        self.on_ejection(Ejection(key, False))

    def restore(self, key: str) -> None:
        """End the target's ejection now (its agent saw it come back)."""
        state = self.states.get(key)
        if state is not None and state.ejected_until:
            self._restore(key, state)

    def restore_due(self, now: float | None = None) -> None:
        """Restore targets whose ejection ended, even if no request asked for them (called periodically)."""
        now = time.monotonic() if now is None else now
        for key in list(self._ejected):
            state = self.states[key]
            if state.ejected_until <= now:
                self._restore(key, state)

    def ejected(self, now: float | None = None) -> dict[str, float]:
        """Ejected targets and the seconds left."""
        now = time.monotonic() if now is None else now
        return {key: s.ejected_until - now for key, s in self.states.items() if s.ejected_until > now}

    # ---- strategies ----

    def order(
        self,
        strategy: str,
        model: str,
        targets: Sequence[Target],
        hash_key: str | None = None,
        telemetry: dict[str, tuple[float, float, float]] | None = None,
        weights: dict[str, float] | None = None,
        limit: int | None = None,
    ) -> list[Target]:
        """The first `limit` targets (all: None) to try under `strategy`, best first.

        Each strategy costs the same whatever the number of targets, except score_based up to
        its sample size: nothing here sorts or copies the whole list for one request."""
        count = len(targets)
        limit = count if limit is None else min(limit, count)
        if count <= 1 or limit == 0:
            return list(targets[:limit])
        if strategy == "score_based":
            rows = scoring.candidate_rows(targets, self.service.setdefault(model, {}), telemetry or {})
            chosen = scoring.choose(rows, weights or scoring.DEFAULT_WEIGHTS, self.latency_ms, self.random, limit)
            if len(chosen) < limit:  # a sample was scored: others follow as retries
                chosen += [t for t in targets if t not in chosen][: limit - len(chosen)]
            return chosen
        if strategy == "round_robin":
            start = next(self._round_robin.setdefault(model, itertools.count())) % count
            return [targets[(start + step) % count] for step in range(limit)]
        if strategy == "random":
            return self.random.sample(targets, limit)
        if strategy == "consistent_hash" and hash_key is not None:
            first = self._ring(targets).lookup(hash_key)
            rest = [t for t in self.order("least_request", model, targets, limit=limit + 1) if t is not first]
            return [first, *rest][:limit]
        # least_request (and consistent_hash without its header): power of two choices on in-flight.
        chosen: list[Target] = []
        while len(chosen) < limit:
            pair = self.random.sample(range(count), 2)
            a, b = targets[pair[0]], targets[pair[1]]
            best = a if self._in_flight(a) <= self._in_flight(b) else b
            if best in chosen:
                best = b if best is a else a
            if best in chosen:  # both taken already: the next one not taken
                best = next(t for t in targets if t not in chosen)
            chosen.append(best)
        return chosen

    def _in_flight(self, target: Target) -> int:
        state = self.states.get(target.key)
        return state.in_flight if state is not None else 0

    def _ring(self, targets: Sequence[Target]) -> HashRing:
        # The table hands out the same tuple for a model until it changes: known by identity, in O(1).
        held = self._rings.get(id(targets))
        if held is not None and held[0] is targets:
            return held[1]
        keys = tuple(t.key for t in targets)
        ring = self._rings_by_keys.get(keys)
        if ring is None:
            if len(self._rings_by_keys) > 1024:
                self._rings_by_keys.clear()  # target sets change rarely; this only bounds memory
            ring = self._rings_by_keys[keys] = HashRing(targets)
        if len(self._rings) > 1024:
            self._rings.clear()
        self._rings[id(targets)] = (targets, ring)  # holding `targets` keeps its id from being reused
        return ring


@dataclass
class HashRing:
    """Consistent hashing with virtual nodes: a target's removal moves only its own keys."""

    targets: Sequence[Target]
    replicas: int = 64
    _points: list[int] = field(default_factory=list)
    _owners: list[Target] = field(default_factory=list)

    def __post_init__(self) -> None:
        points = sorted(
            ((_hash(f"{target.key}#{replica}"), target) for target in self.targets for replica in range(self.replicas)),
            key=lambda point: point[0],
        )
        self._points = [point for point, _ in points]
        self._owners = [target for _, target in points]

    def lookup(self, key: str) -> Target:
        index = bisect.bisect(self._points, _hash(key)) % len(self._points)
        return self._owners[index]


def _hash(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")
