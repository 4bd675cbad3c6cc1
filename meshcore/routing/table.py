"""One immutable routing table: desired state joined with observed state.

A target is a runtime (a Triton endpoint) on a node. It is routable for a model when its
node is registered and not draining, its agent's last report is fresh and healthy, the
runtime is live and ready, and it reports the model (and version) READY. The table keeps,
per model, the routable targets and, for the others, why not: that is what a 503 says and
what explain shows. Built off the request path; a request only reads it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshcore import policies
from meshcore.models import PolicyKind
from meshcore.routing.desired import DesiredSnapshot, NodeInfo, PolicyInfo
from meshcore.routing.scoring import TargetSignals

ANY_VERSION = ""

# Why a target that has (or had) the model is not a candidate.
DRAINING = "node draining"
UNHEALTHY = "node unhealthy"
STALE = "report stale"
RUNTIME_DOWN = "runtime not ready"
NOT_READY = "model not ready"
PINNED_OUT = "pinned out"


@dataclass(frozen=True, slots=True)
class Target:
    key: str  # "node/runtime"
    node: str
    runtime: str
    url: str  # the runtime's HTTP base URL
    runtime_id: int


@dataclass(frozen=True, slots=True)
class Excluded:
    target: Target
    reason: str
    detail: str = ""


@dataclass
class ModelRoutes:
    """The targets of one model: routable ones per version, and the excluded ones with reasons."""

    by_version: dict[str, tuple[Target, ...]] = field(default_factory=dict)
    excluded: list[Excluded] = field(default_factory=list)

    def targets(self, version: str = ANY_VERSION) -> tuple[Target, ...]:
        return self.by_version.get(version, ())


@dataclass
class RoutingTable:
    desired: DesiredSnapshot
    models: dict[str, ModelRoutes]
    built_at: float
    signals: dict[str, TargetSignals] = field(default_factory=dict)  # by target key
    # What depends on this table alone, computed on first use (policies per model, ACL verdicts, ...).
    memo: dict[Any, Any] = field(default_factory=dict)

    @property
    def any_routable(self) -> bool:
        return any(routes.by_version for routes in self.models.values())

    def knows(self, model: str) -> bool:
        """A model the catalog lists or some runtime reports, in any state."""
        return model in self.models or model in self.desired.catalog

    def routes(self, model: str) -> ModelRoutes:
        return self.models.get(model) or ModelRoutes()

    def balancing_policy(self, model: str) -> PolicyInfo | None:
        key = ("balancing_policy", model)
        if key not in self.memo:
            self.memo[key] = policies.effective_policy(self.desired.policies, PolicyKind.LOAD_BALANCING, model)
        return self.memo[key]

    def unroutable_reason(self, model: str, version: str = ANY_VERSION) -> str:
        """Why a known model has no routable target, in words a client can act on."""
        routes = self.routes(model)
        had_it = [e for e in routes.excluded if e.reason != NOT_READY]
        if not routes.excluded and not routes.by_version:
            return f"model {model!r} is loaded nowhere"
        if version != ANY_VERSION and routes.by_version and not routes.targets(version):
            return f"version {version!r} of model {model!r} is loaded nowhere"
        if had_it and all(e.reason == DRAINING for e in had_it):
            return f"every node serving model {model!r} is draining"
        if had_it and all(e.reason == PINNED_OUT for e in had_it):
            return f"model {model!r} is loaded only on nodes its pin policy leaves out ({had_it[0].detail})"
        if not had_it:
            return f"model {model!r} is loaded nowhere (reported but not READY)"
        reasons = sorted({f"{e.target.key}: {e.reason}" for e in routes.excluded})
        return f"no routable target for model {model!r} ({'; '.join(reasons)})"


def build_table(
    desired: DesiredSnapshot, live: Mapping[str, Mapping[str, str]], now: float, stale_after_s: float
) -> RoutingTable:
    """Join desired state with the live records (`LiveStore.read()`), as of `now`."""
    models: dict[str, ModelRoutes] = {}
    signals: dict[str, TargetSignals] = {}
    pins: dict[str, PolicyInfo | None] = {}
    for runtime in desired.runtimes:
        node = desired.nodes.get(runtime.node)
        if node is None:
            continue
        target = Target(runtime.key, runtime.node, runtime.name, runtime.http_url, runtime.id)
        record = live.get(runtime.node) or {}
        sample = _runtime_sample(record, runtime.name)
        node_reason, detail = _node_exclusion(node.draining, record, now, stale_after_s)
        if node_reason is None and not (sample.get("live") and sample.get("ready")):
            node_reason, detail = RUNTIME_DOWN, str(sample.get("error", ""))
        signals[target.key] = _signals(record, sample, now)
        for entry in sample.get("models", []):
            routes = models.setdefault(entry["name"], ModelRoutes())
            version = str(entry.get("version", ""))
            if entry["name"] not in pins:
                pins[entry["name"]] = policies.effective_policy(desired.policies, PolicyKind.PIN, entry["name"])
            pin = pins[entry["name"]]
            if node_reason is not None:
                routes.excluded.append(Excluded(target, node_reason, detail))
            elif pin is not None and not pin_admits(pin.spec, node, version):
                routes.excluded.append(Excluded(target, PINNED_OUT, f"policy {pin.name}"))
            elif entry.get("state") != "READY":
                routes.excluded.append(Excluded(target, NOT_READY, f"{entry.get('state')} {entry.get('reason', '')}"))
            else:
                for key in {ANY_VERSION, version}:
                    if target not in routes.by_version.get(key, ()):
                        routes.by_version[key] = (*routes.by_version.get(key, ()), target)
    return RoutingTable(desired=desired, models=models, built_at=now, signals=signals)


def pin_admits(spec: dict[str, Any], node: NodeInfo, version: str) -> bool:
    """Whether a pin policy's nodes or selector (and revision, if it names one) include this node."""
    if spec.get("revision") not in (None, version):
        return True  # the pin is for another revision: it says nothing about this one
    if "nodes" in spec:
        return node.name in spec["nodes"]
    return all(node.labels.get(key) == value for key, value in spec.get("selector", {}).items())


def _signals(record: Mapping[str, str], sample: dict[str, Any], now: float) -> TargetSignals:
    """The node's GPU utilization and free memory (averaged over its GPUs) and the runtime's queues.

    Their age is the node's last report: a delta report vouches for the values it leaves out."""
    utilizations, free = [], []
    for key, raw in record.items():
        if not key.startswith("gpu:"):
            continue
        metrics = json.loads(raw).get("metrics", {})
        if metrics.get("utilization_gpu_pct") is not None:
            utilizations.append(float(metrics["utilization_gpu_pct"]))
        used, unused = metrics.get("memory_used_bytes"), metrics.get("memory_free_bytes")
        if used is not None and unused is not None and used + unused > 0:
            free.append(100.0 * unused / (used + unused))
    queues = {
        entry["name"]: float(entry["stats"]["queue_depth"])
        for entry in sample.get("models", [])
        if entry.get("stats", {}).get("queue_depth") is not None
    }
    age = now - float(record.get("received_at", "0")) if record else float("inf")
    return TargetSignals(
        gpu_utilization_pct=sum(utilizations) / len(utilizations) if utilizations else None,
        gpu_memory_free_pct=sum(free) / len(free) if free else None,
        gpu_age_s=age if utilizations or free else float("inf"),
        queue_depth=queues,
        queue_age_s=age if queues else float("inf"),
    )


def _runtime_sample(record: Mapping[str, str], name: str) -> dict[str, Any]:
    raw = record.get(f"rt:{name}")
    return json.loads(raw) if raw else {}


def _node_exclusion(
    draining: bool, record: Mapping[str, str], now: float, stale_after_s: float
) -> tuple[str | None, str]:
    if draining:
        return DRAINING, ""
    age = now - float(record.get("received_at", "0"))
    interval = float(record.get("interval", "1") or 1)
    if age > max(stale_after_s, 3 * interval):
        return STALE, f"last report {age:.1f} s ago"
    if record.get("health") != "healthy":
        return UNHEALTHY, ""
    return None, ""


def empty_table() -> RoutingTable:
    return RoutingTable(desired=DesiredSnapshot(), models={}, built_at=time.time())
