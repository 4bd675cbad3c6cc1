"""`score_based`: each candidate's expected wait, combined with its GPU and health signals.

The cost of a target for one more request of a model is its expected wait:

    wait = (requests ahead + 1) x service time / concurrency

- requests ahead: this router's requests in flight to the target for the model, or the
  Triton queue the agent reported if larger (the reported queue holds this router's own
  requests too, so the two are not added);
- service time: a peak-EWMA of this router's observed latencies for the model on the
  target (Finagle's and Linkerd's): a slower sample takes effect at once, a faster one
  decays in with a time constant of `DECAY_S` (10 s); a failure counts as at least the
  request's timeout, so a target that fails fast does not look fast;
- concurrency: the model's instance count on that target (Triton's `instance_group`),
  learned from its configuration.

Each signal scores 0..100 (higher is better) and counts with its weight; the sum is
divided by the weights of the signals present, so a missing or stale signal does not
punish a target. The wait scores relative to the best candidate (the best scores 100, a
target twice as slow 50). Ties break at random. With more than `SAMPLE` candidates, a
random sample of that many is scored, which bounds the decision's time (docs/routing.md).
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

SIGNALS = ("expected_wait", "recent_performance", "gpu_utilization", "gpu_memory", "queue_depth", "network_latency")
DEFAULT_WEIGHTS: dict[str, float] = {
    "expected_wait": 60.0,
    "recent_performance": 20.0,
    "gpu_utilization": 5.0,
    "gpu_memory": 5.0,
    "queue_depth": 5.0,
    "network_latency": 5.0,
}
DECAY_S = 10.0
# Candidates scored per decision at most; more are sampled (the power of d choices).
SAMPLE = 16
# A telemetry signal older than this is dropped (and shown stale in explain).
SIGNAL_FRESH_S = 5.0


@dataclass(slots=True)
class ServiceStats:
    """Router-local view of one model on one target."""

    in_flight: int = 0
    cost_s: float = 0.0  # peak-EWMA service time; 0 until the first sample
    stamp: float = 0.0
    error_rate: float = 0.0  # EWMA of failures (0..1), same decay
    concurrency: int = 1
    samples: int = 0

    def cost_now(self, now: float) -> float:
        """The cost decayed for the time since the last sample (as Finagle's PeakEwma reads it): a
        target left alone after a slow spell looks cheaper as time passes, so it is tried again."""
        return self.cost_s * math.exp(-(now - self.stamp) / DECAY_S) if self.samples else 0.0

    def forget(self) -> None:
        """Back to unmeasured (a target that returns after being unroutable starts afresh)."""
        self.cost_s = self.error_rate = 0.0
        self.samples = 0

    def observe(self, seconds: float, failed: bool, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        weight = math.exp(-(now - self.stamp) / DECAY_S) if self.samples else 0.0
        if seconds > self.cost_s:
            self.cost_s = seconds  # peak: a slower sample takes effect at once
        else:
            self.cost_s = self.cost_s * weight + seconds * (1 - weight)
        self.error_rate = self.error_rate * weight + (1.0 if failed else 0.0) * (1 - weight)
        self.stamp = now
        self.samples += 1


@dataclass(frozen=True, slots=True)
class TargetSignals:
    """Telemetry about a target, from its node's last report: values and their ages."""

    gpu_utilization_pct: float | None = None
    gpu_memory_free_pct: float | None = None
    gpu_age_s: float = math.inf
    queue_depth: dict[str, float] = field(default_factory=dict)  # per model
    queue_age_s: float = math.inf


@dataclass
class SignalScore:
    raw: Any
    score: float
    weight: float
    age_s: float | None = None
    stale: bool = False


@dataclass
class Scored:
    key: str
    score: float
    signals: dict[str, SignalScore]
    wait_s: float


def weights_for(policy_weights: Mapping[str, float] | None) -> dict[str, float]:
    """The policy's weights over the defaults (a signal it names gets its weight; 0 turns one off)."""
    return {**DEFAULT_WEIGHTS, **(policy_weights or {})}


def rank(
    candidates: Sequence[Any],
    model: str,
    stats: Mapping[str, ServiceStats],
    signals: Mapping[str, TargetSignals],
    weights: Mapping[str, float],
    latency_ms: Mapping[str, tuple[float, float]] | None = None,
    explain: bool = False,
    rng: random.Random | None = None,
    now: float | None = None,
) -> list[Scored]:
    """Candidates (objects with `.key`) ranked best first; each with its score and, to explain, its signals."""
    rng = rng or random
    pool = list(candidates) if len(candidates) <= SAMPLE or explain else rng.sample(list(candidates), SAMPLE)
    now = time.monotonic() if now is None else now
    default_cost = _typical_cost(pool, stats, now)
    waits = []
    for candidate in pool:
        stat = stats.get(candidate.key)
        if stat is None:
            waits.append(default_cost)
            continue
        queued = signals.get(candidate.key)
        reported = queued.queue_depth.get(model, 0.0) if queued and queued.queue_age_s <= SIGNAL_FRESH_S else 0.0
        ahead = stat.in_flight if stat.in_flight > reported else reported
        waits.append((ahead + 1) * (stat.cost_now(now) or default_cost) / (stat.concurrency or 1))
    best_wait = min(waits) if waits else 0.0
    w_wait = weights.get("expected_wait", 0.0)
    w_perf = weights.get("recent_performance", 0.0)
    w_util = weights.get("gpu_utilization", 0.0)
    w_mem = weights.get("gpu_memory", 0.0)
    w_queue = weights.get("queue_depth", 0.0)
    w_net = weights.get("network_latency", 0.0)
    latency_ms = latency_ms or {}
    ranked = []
    for candidate, wait in zip(pool, waits, strict=True):
        stat = stats.get(candidate.key)
        target = signals.get(candidate.key)
        total = weight_sum = 0.0
        wait_score = 100.0 * (best_wait + 1e-6) / (wait + 1e-6)
        total += wait_score * w_wait
        weight_sum += w_wait
        perf = None
        if stat is not None and stat.samples:
            perf = 100.0 * (1.0 - stat.error_rate)
            total += perf * w_perf
            weight_sum += w_perf
        gpu_fresh = target is not None and target.gpu_age_s <= SIGNAL_FRESH_S
        util = mem = queue = None
        if gpu_fresh and target.gpu_utilization_pct is not None:
            util = 100.0 - target.gpu_utilization_pct
            total += util * w_util
            weight_sum += w_util
        if gpu_fresh and target.gpu_memory_free_pct is not None:
            mem = target.gpu_memory_free_pct
            total += mem * w_mem
            weight_sum += w_mem
        if target is not None and target.queue_age_s <= SIGNAL_FRESH_S and model in target.queue_depth:
            queue = 100.0 / (1.0 + target.queue_depth[model])
            total += queue * w_queue
            weight_sum += w_queue
        net = None
        measured = latency_ms.get(candidate.key)
        if measured is not None and now - measured[1] <= SIGNAL_FRESH_S:
            net = min(100.0, 1000.0 / (measured[0] + 1.0))
            total += net * w_net
            weight_sum += w_net
        score = total / weight_sum if weight_sum else 50.0
        detail = {}
        if explain:
            detail = _explain_signals(
                stat, target, model, wait, wait_score, perf, util, mem, queue, net, measured, weights, now
            )
        ranked.append(Scored(candidate.key, score + rng.random() * 1e-9, detail, wait))  # random tie-break
    ranked.sort(key=lambda scored: scored.score, reverse=True)
    return ranked


def _typical_cost(pool: Sequence[Any], stats: Mapping[str, ServiceStats], now: float) -> float:
    """For a target with no sample yet: the median known cost (so it is tried, not flooded), or 1."""
    known = sorted(s.cost_now(now) for c in pool if (s := stats.get(c.key)) is not None and s.samples)
    return known[len(known) // 2] if known else 1.0


def _explain_signals(
    stat: ServiceStats | None,
    target: TargetSignals | None,
    model: str,
    wait: float,
    wait_score: float,
    perf: float | None,
    util: float | None,
    mem: float | None,
    queue: float | None,
    net: float | None,
    measured: tuple[float, float] | None,
    weights: Mapping[str, float],
    now: float,
) -> dict[str, SignalScore]:
    gpu_age = target.gpu_age_s if target else None
    queue_age = target.queue_age_s if target else None
    return {
        "expected_wait": SignalScore(
            {
                "wait_ms": round(wait * 1000, 3),
                "in_flight": stat.in_flight if stat else 0,
                "service_ms": round(stat.cost_s * 1000, 3) if stat and stat.samples else None,
                "concurrency": stat.concurrency if stat else 1,
            },
            wait_score,
            weights.get("expected_wait", 0.0),
            0.0,
        ),
        "recent_performance": SignalScore(
            {"error_rate": round(stat.error_rate, 4)} if stat and stat.samples else None,
            perf or 0.0,
            weights.get("recent_performance", 0.0) if perf is not None else 0.0,
            (now - stat.stamp) if stat and stat.samples else None,
        ),
        "gpu_utilization": _telemetry(
            target.gpu_utilization_pct if target else None, util, weights, "gpu_utilization", gpu_age
        ),
        "gpu_memory": _telemetry(target.gpu_memory_free_pct if target else None, mem, weights, "gpu_memory", gpu_age),
        "queue_depth": _telemetry(
            target.queue_depth.get(model) if target else None, queue, weights, "queue_depth", queue_age
        ),
        "network_latency": SignalScore(
            measured[0] if measured else None,
            net or 0.0,
            weights.get("network_latency", 0.0) if net is not None else 0.0,
            (now - measured[1]) if measured else None,
            stale=measured is not None and net is None,
        ),
    }


def _telemetry(
    raw: Any, score: float | None, weights: Mapping[str, float], name: str, age: float | None
) -> SignalScore:
    stale = raw is not None and score is None
    return SignalScore(raw, score or 0.0, weights.get(name, 0.0) if score is not None else 0.0, age, stale)


def telemetry_scores(
    signals: Mapping[str, TargetSignals], model: str, weights: Mapping[str, float]
) -> dict[str, tuple[float, float, float]]:
    """Per target: (weighted score sum, weight sum, reported queue) of the telemetry signals.

    They change only with the table (every 0.5 s), so `decide` computes them once per table and
    model; a decision then adds the router-local signals."""
    w_util, w_mem, w_queue = (
        weights.get("gpu_utilization", 0.0),
        weights.get("gpu_memory", 0.0),
        weights.get("queue_depth", 0.0),
    )
    scores = {}
    for key, target in signals.items():
        total = weight_sum = reported = 0.0
        if target.gpu_age_s <= SIGNAL_FRESH_S:
            if target.gpu_utilization_pct is not None:
                total += (100.0 - target.gpu_utilization_pct) * w_util
                weight_sum += w_util
            if target.gpu_memory_free_pct is not None:
                total += target.gpu_memory_free_pct * w_mem
                weight_sum += w_mem
        if target.queue_age_s <= SIGNAL_FRESH_S and model in target.queue_depth:
            reported = target.queue_depth[model]
            total += 100.0 / (1.0 + reported) * w_queue
            weight_sum += w_queue
        scores[key] = (total, weight_sum, reported)
    return scores


_NO_TELEMETRY = (0.0, 0.0, 0.0)


# A candidate as `choose` reads it: the target, its stats for the model, and its telemetry part
# (weighted sum, weight sum, reported queue). `decide` builds these rows once per table and model.
Row = tuple[Any, ServiceStats, float, float, float]


def candidate_rows(
    candidates: Sequence[Any],
    stats: dict[str, ServiceStats],
    telemetry: Mapping[str, tuple[float, float, float]],
) -> list[Row]:
    rows = []
    for candidate in candidates:
        stat = stats.get(candidate.key)
        if stat is None:
            stat = stats[candidate.key] = ServiceStats()
        rows.append((candidate, stat, *telemetry.get(candidate.key, _NO_TELEMETRY)))
    return rows


def choose(
    rows: Sequence[Row],
    weights: Mapping[str, float],
    latency_ms: Mapping[str, tuple[float, float]],
    rng: random.Random,
    limit: int = 1,
) -> list[Any]:
    """The `limit` best candidates, best first: `rank`'s order without its explanations, for the hot path."""
    if len(rows) > SAMPLE:
        # With replacement: a repeat costs one more score, and drawing is O(SAMPLE), not O(candidates).
        rows = rng.choices(rows, k=SAMPLE)
    w_wait = weights.get("expected_wait", 0.0)
    w_perf = weights.get("recent_performance", 0.0)
    w_net = weights.get("network_latency", 0.0)
    now = time.monotonic()
    probe_latency = bool(w_net and latency_ms)
    exp = math.exp
    scored_rows = []
    best = math.inf
    default = None
    for candidate, stat, total, weight_sum, reported in rows:
        if stat.samples:
            in_flight = stat.in_flight
            cost = stat.cost_s * exp((stat.stamp - now) / DECAY_S)
            wait = ((in_flight if in_flight > reported else reported) + 1) * cost / stat.concurrency
            if w_perf:
                total += 100.0 * (1.0 - stat.error_rate) * w_perf
                weight_sum += w_perf
        else:
            if default is None:
                default = _typical_cost([row[0] for row in rows], {row[0].key: row[1] for row in rows}, now)
            wait = (stat.in_flight + 1) * default
        if probe_latency:
            measured = latency_ms.get(candidate.key)
            if measured is not None and now - measured[1] <= SIGNAL_FRESH_S:
                total += min(100.0, 1000.0 / (measured[0] + 1.0)) * w_net
                weight_sum += w_net
        if wait < best:
            best = wait
        scored_rows.append((wait + 1e-6, total, weight_sum + w_wait))
    scale = 100.0 * (best + 1e-6) * w_wait
    random_tie = rng.random
    first = second = None
    first_score = second_score = -1.0
    scores = []
    for index, (wait, total, weight_sum) in enumerate(scored_rows):
        score = (total + scale / wait) / weight_sum if weight_sum else 50.0
        score += random_tie() * 1e-9  # ties break at random
        if limit > 2:
            scores.append((score, index))
        elif score > first_score:
            second, second_score, first, first_score = first, first_score, index, score
        elif score > second_score:
            second, second_score = index, score
    if limit > 2:
        order = [index for _, index in heapq.nlargest(limit, scores, key=_FIRST)]
    else:
        order = [first] if limit == 1 or second is None else [first, second]
    return [rows[index][0] for index in order]


_FIRST = itemgetter(0)
