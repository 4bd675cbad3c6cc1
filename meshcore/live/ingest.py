"""One agent report into the live state store, noticing what changed slowly.

The hot path is: turn the report into field writes, apply them atomically (sequence check
included), compare the watched previous values, and hand any slow change (GPU inventory,
model states, health, a stale `last_seen`) to the mirror and telemetry to the publisher.
Nothing here touches the database.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from meshcore.jsontext import canonical, compact
from meshcore.live.reports import Report
from meshcore.live.store import ACCEPTED, HEALTHY, UNHEALTHY, ApplyResult, LiveStore, NodeWrite

# Triton's reasons for a model in its repository that is simply not loaded (not a failure).
NOT_LOADED_REASONS = ("unloaded", "not loaded")

# How often `last_seen` reaches the database while nothing else changes.
LAST_SEEN_MIRROR_S = 30.0


@dataclass
class ModelTransition:
    event_type: str  # MODEL_LOADED, MODEL_UNLOADED or MODEL_FAILED
    runtime: str
    model: str
    version: str
    reason: str = ""


@dataclass
class FleetChange:
    """What the database and the event stream need to hear about after one report."""

    node: str
    seen_at: float
    agent_version: str = ""
    became_healthy: bool = False
    was_unhealthy: bool = False
    gpus: list[dict[str, Any]] = field(default_factory=list)  # inventory of new or changed GPUs
    all_gpus: list[str] | None = None  # a snapshot's complete list of uuids
    removed_gpus: list[str] = field(default_factory=list)
    runtimes: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> url, live, ready, states
    all_runtimes: list[str] | None = None
    removed_runtimes: list[str] = field(default_factory=list)
    transitions: list[ModelTransition] = field(default_factory=list)
    # Also bring the database in line with the whole record in the store (periodically, and
    # after a mirror that failed): heals what a failed or another process's mirror missed.
    reconcile: bool = False

    @property
    def is_slow_change(self) -> bool:
        return bool(
            self.became_healthy
            or self.gpus
            or self.removed_gpus
            or self.runtimes
            or self.removed_runtimes
            or self.transitions
            or self.all_gpus is not None
        )


class ChangeSink(Protocol):
    def submit(self, change: FleetChange) -> None: ...


class TelemetrySink(Protocol):
    def submit(
        self, node: str, seen_at: float, gpus: list[dict[str, Any]], instances: list[dict[str, Any]]
    ) -> None: ...


@dataclass
class IngestOutcome:
    verdict: str
    seq: int

    def as_json(self) -> dict[str, Any]:
        return {"status": self.verdict, "seq": self.seq, "snapshot_required": self.verdict == "snapshot_required"}


def model_states(runtime: dict[str, Any]) -> dict[str, list[str]]:
    return {
        f"{model['name']}:{model.get('version', '')}": [model["state"], model.get("reason", "")]
        for model in runtime.get("models", [])
    }


def state_transitions(runtime: str, old: dict[str, list[str]], new: dict[str, list[str]]) -> list[ModelTransition]:
    """Events for the models whose Triton state changed meaningfully between two reports."""
    transitions = []
    for key in sorted(set(old) | set(new)):
        model, _, version = key.rpartition(":")
        old_state, old_reason = old.get(key, ["", ""])
        new_state, new_reason = new.get(key, ["", ""])
        if new_state == "READY" and old_state != "READY":
            transitions.append(ModelTransition("MODEL_LOADED", runtime, model, version))
        elif new_state == "UNAVAILABLE" and new_reason not in NOT_LOADED_REASONS:
            if (old_state, old_reason) != (new_state, new_reason):
                transitions.append(ModelTransition("MODEL_FAILED", runtime, model, version, new_reason))
        elif old_state == "READY" and new_state in ("", "UNAVAILABLE"):
            reason = new_reason or "no longer reported by the runtime"
            transitions.append(ModelTransition("MODEL_UNLOADED", runtime, model, version, reason))
    return transitions


class TelemetryIngest:
    def __init__(
        self,
        store: LiveStore,
        changes: ChangeSink | None = None,
        telemetry: TelemetrySink | None = None,
        clock: Any = time.time,
    ) -> None:
        self.store = store
        self.changes = changes
        self.telemetry = telemetry
        self.clock = clock
        self._last_seen_mirrored: dict[str, float] = {}

    def ingest(self, report: Report) -> IngestOutcome:
        now = self.clock()
        return self._after_apply(report, now, self.store.apply(self._write_for(report, now)))

    async def ingest_async(self, report: Report) -> IngestOutcome:
        """The same from an event loop: the store write does not block the loop."""
        now = self.clock()
        return self._after_apply(report, now, await self.store.apply_async(self._write_for(report, now)))

    def _after_apply(self, report: Report, now: float, result: ApplyResult) -> IngestOutcome:
        if result.verdict != ACCEPTED:
            return IngestOutcome(result.verdict, report.seq)
        change = self._change_for(report, now, result.previous, result.previous_health, result.replaced_fields)
        due = now - self._last_seen_mirrored.get(report.node, 0.0) >= LAST_SEEN_MIRROR_S
        if self.changes is not None and (change.is_slow_change or due):
            if due:
                self._last_seen_mirrored[report.node] = now
                change.reconcile = True
            self.changes.submit(change)
        if self.telemetry is not None:
            self.telemetry.submit(report.node, now, report.gpus, _instances(report), seq=report.seq)
        return IngestOutcome(ACCEPTED, report.seq)

    def _write_for(self, report: Report, now: float) -> NodeWrite:
        meta = {"agent": report.agent, "nvml": report.nvml, "kind": report.kind}
        write = NodeWrite(
            node=report.node,
            agent_id=report.agent_id,
            seq=report.seq,
            kind=report.kind,
            now=now,
            interval_s=report.interval_s,
            meta=compact(meta),
        )
        for gpu in report.gpus:
            uuid = gpu["uuid"]
            metrics = gpu["metrics"]
            live = {key: value for key, value in gpu.items() if key != "info"}
            live["t"] = now
            write.fields[f"gpu:{uuid}"] = compact(live)
            if "info" in gpu:
                write.fields[f"info:{uuid}"] = canonical(gpu["info"])
                write.watch.append(f"info:{uuid}")
            point = [
                round(now, 3),
                metrics.get("utilization_gpu_pct"),
                metrics.get("memory_used_bytes"),
                metrics.get("temperature_gpu_c"),
                metrics.get("power_usage_w"),
            ]
            write.history.append((f"gpu:{uuid}", compact(point)))
        for runtime in report.runtimes:
            name = runtime["name"]
            write.fields[f"rt:{name}"] = compact({**runtime, "t": now})
            write.fields[f"states:{name}"] = canonical(model_states(runtime))
            write.watch.append(f"states:{name}")
            for model in runtime.get("models", []):
                if model["state"] == "READY":
                    stats = model.get("stats", {})
                    point = [
                        round(now, 3),
                        stats.get("queue_depth"),
                        stats.get("inference_per_s"),
                        stats.get("latency_ms"),
                    ]
                    write.history.append((f"model:{name}:{model['name']}:{model.get('version', '')}", compact(point)))
        for uuid in report.removed_gpus:
            write.removed += [f"gpu:{uuid}", f"info:{uuid}"]
        for name in report.removed_runtimes:
            write.removed += [f"rt:{name}", f"states:{name}"]
            write.watch.append(f"states:{name}")
        return write

    def _change_for(
        self,
        report: Report,
        now: float,
        previous: dict[str, str | None],
        previous_health: str | None,
        replaced_fields: list[str],
    ) -> FleetChange:
        change = FleetChange(
            node=report.node,
            seen_at=now,
            agent_version=str(report.agent.get("version", ""))[:64],
            became_healthy=previous_health != HEALTHY,
            was_unhealthy=previous_health == UNHEALTHY,
        )
        for gpu in report.gpus:
            info = gpu.get("info")
            if info is not None and previous.get(f"info:{gpu['uuid']}") != canonical(info):
                change.gpus.append(
                    {
                        "uuid": gpu["uuid"],
                        "index": gpu["index"],
                        "simulated": gpu.get("simulated", False),
                        "info": info,
                        "mig_profile": ",".join(
                            sorted({mig.get("profile", "") for mig in gpu.get("mig_instances", [])} - {""})
                        ),
                    }
                )
        for runtime in report.runtimes:
            name = runtime["name"]
            new_states = model_states(runtime)
            old_text = previous.get(f"states:{name}")
            old_states = json.loads(old_text) if old_text else {}
            if old_text != canonical(new_states) or previous_health != HEALTHY:
                change.runtimes[name] = {
                    "url": runtime["url"],
                    "metrics_url": runtime.get("metrics_url") or "",
                    "live": runtime["live"],
                    "ready": runtime["ready"],
                    "states": new_states,
                }
                change.transitions += state_transitions(name, old_states, new_states)
        for name in report.removed_runtimes:
            old_text = previous.get(f"states:{name}")
            change.removed_runtimes.append(name)
            change.transitions += state_transitions(name, json.loads(old_text) if old_text else {}, {})
        change.removed_gpus = list(report.removed_gpus)
        if report.kind == "snapshot":
            change.all_gpus = [gpu["uuid"] for gpu in report.gpus]
            change.all_runtimes = [runtime["name"] for runtime in report.runtimes]
            reported = {f"info:{uuid}" for uuid in change.all_gpus}
            change.removed_gpus = [
                name[5:] for name in replaced_fields if name.startswith("info:") and name not in reported
            ]
            kept = {f"states:{name}" for name in change.all_runtimes}
            change.removed_runtimes = [
                name[7:] for name in replaced_fields if name.startswith("states:") and name not in kept
            ]
        return change


def _instances(report: Report) -> list[dict[str, Any]]:
    """Per model instance, the values a dashboard or router shows."""
    instances = []
    for runtime in report.runtimes:
        for model in runtime.get("models", []):
            instances.append(
                {
                    "runtime": runtime["name"],
                    "model": model["name"],
                    "version": model.get("version", ""),
                    "state": model["state"],
                    "stats": model.get("stats", {}),
                }
            )
    return instances
