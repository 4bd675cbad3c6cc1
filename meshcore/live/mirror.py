"""Slow changes into this process's database and the event stream, off the request path.

Ingest hands over a `FleetChange` only when something slow changed (GPU inventory, model
states, health) or `last_seen` is due; the health sweeper hands over silent nodes. One
thread applies them in order: `Gpu`, `ModelInstance` and the observed fields of `Node`
and `Runtime`, then the events (`NODE_HEALTHY`, `NODE_UNHEALTHY`, `MODEL_*`).

Each change is noticed once, where the store applied it atomically, so its event is
recorded and published once whichever process received the report.
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction

from meshcore import registry
from meshcore.events import record_event
from meshcore.live.ingest import NOT_LOADED_REASONS, FleetChange
from meshcore.live.store import live_store
from meshcore.models import Gpu, Health, Model, ModelInstance, Node, Runtime

logger = logging.getLogger(__name__)

INSTANCE_STATES = {"READY": "ready", "LOADING": "loading", "UNLOADING": "unloading", "UNAVAILABLE": "failed"}


RETRY_RECONCILE_S = 2.0


class Reconcile:
    """Bring one node's rows in line with its record in the live state store (no events)."""

    def __init__(self, node: str) -> None:
        self.node = node


class NodeSilent:
    def __init__(self, node: str, last_report_at: float | None) -> None:
        self.node = node
        self.last_report_at = last_report_at


def mig_profile(gpu: dict[str, Any]) -> str:
    """The MIG profiles a GPU is split into, as `Gpu.mig_profile` keeps them (`1g.10gb,3g.40gb`)."""
    return ",".join(sorted({instance.get("profile", "") for instance in gpu.get("mig_instances", [])} - {""}))


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


class FleetMirror:
    name = "fleet mirror"

    def __init__(self, max_pending: int = 50_000) -> None:
        self._queue: queue.Queue[FleetChange | NodeSilent | Reconcile | None] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._dropped = 0

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="fleet-mirror", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout=10)
        self._thread = None

    def submit(self, change: FleetChange | NodeSilent | Reconcile) -> None:
        self.start()
        try:
            self._queue.put_nowait(change)
        except queue.Full:
            self._dropped += 1
            if self._dropped % 1000 == 1:
                logger.warning("fleet mirror is behind; dropped %d change(s) so far", self._dropped)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            close_old_connections()
            try:
                if isinstance(item, NodeSilent):
                    apply_silence(item)
                elif isinstance(item, Reconcile):
                    complete = reconcile(item.node)
                else:
                    complete = apply_change(item)
                    if complete and item.reconcile:
                        complete = reconcile(item.node)
                if not isinstance(item, NodeSilent) and not complete:
                    self._retry_later(item.node)
            except Exception:
                logger.exception("could not mirror a change for node %s", item.node)
                self._retry_later(item.node)

    def _retry_later(self, node: str) -> None:
        timer = threading.Timer(RETRY_RECONCILE_S, self.submit, args=(Reconcile(node),))
        timer.daemon = True
        timer.start()


def apply_silence(silent: NodeSilent) -> None:

    updated = Node.objects.filter(name=silent.node).exclude(health=Health.UNHEALTHY).update(health=Health.UNHEALTHY)
    data: dict[str, Any] = {"reason": "missed 3 report intervals"}
    if silent.last_report_at is not None:
        data["last_report_at"] = _time(silent.last_report_at).isoformat()
    logger.info("node %s stopped reporting: unhealthy (%d row)", silent.node, updated)
    record_event("NODE_UNHEALTHY", node_name=silent.node, data=data)


def reconcile(node_name: str) -> bool:
    """Mirror the node's whole record from the store; False if something must be tried again."""
    import json

    record = live_store().read([node_name]).get(node_name)
    if record is None:
        return True
    change = FleetChange(node=node_name, seen_at=float(record["received_at"]))
    change.all_gpus = []
    for key, value in record.items():
        if key.startswith("gpu:"):
            uuid = key[4:]
            sample = json.loads(value)
            change.all_gpus.append(uuid)
            info = record.get(f"info:{uuid}")
            if info is not None:
                change.gpus.append(
                    {
                        "uuid": uuid,
                        "index": sample["index"],
                        "simulated": sample.get("simulated", False),
                        "info": json.loads(info),
                        "mig_profile": mig_profile(sample),
                    }
                )
        elif key.startswith("rt:"):
            runtime = json.loads(value)
            change.runtimes[key[3:]] = {
                "url": runtime["url"],
                "metrics_url": runtime.get("metrics_url") or "",
                "live": runtime["live"],
                "ready": runtime["ready"],
                "states": json.loads(record.get(f"states:{key[3:]}", "{}")),
            }

    complete = apply_change(change, announce=False)
    Node.objects.filter(name=node_name).update(health=record.get("health", "unknown"))
    return complete


def apply_change(change: FleetChange, announce: bool = True) -> bool:
    """Mirror one change and record its events; False if part of it must be tried again."""

    seen = _time(change.seen_at)
    node = Node.objects.filter(name=change.node).first()
    if node is None:
        return True  # deleted since it reported: its token no longer works either
    fields: dict[str, Any] = {"last_seen": seen}
    if change.became_healthy:
        fields["health"] = Health.HEALTHY
    if change.agent_version:
        fields["agent_version"] = change.agent_version
    with transaction.atomic():
        Node.objects.filter(pk=node.pk).update(**fields)
        _mirror_gpus(node, change, seen)
    complete = True
    for name, runtime in change.runtimes.items():
        complete = _mirror_runtime(node, name, runtime, seen) and complete
    for name in change.removed_runtimes:
        _forget_runtime_instances(node, name)
    if not announce:
        return complete
    if change.became_healthy:
        record_event("NODE_HEALTHY", node_name=change.node, data={"recovered": change.was_unhealthy})
    for transition in change.transitions:
        data = {"runtime": transition.runtime, "model": transition.model, "version": transition.version}
        if transition.reason:
            data["reason"] = transition.reason
        record_event(transition.event_type, node_name=change.node, data=data)
    return complete


def _gpu_row(node: Any, gpu: dict[str, Any]) -> dict[str, Any]:
    info = gpu["info"]
    return {
        "node_id": node.pk,
        "index": gpu["index"],
        "name": str(info.get("name", ""))[:128],
        "memory_total_bytes": int(info.get("memory_total_bytes") or 0),
        "mig_profile": gpu.get("mig_profile", "")[:64],
        "simulated": bool(gpu["simulated"]),
    }


def _mirror_gpus(node: Any, change: FleetChange, seen: datetime) -> None:
    """Write only the GPUs whose inventory differs; `last_seen` for all of them in one statement."""

    wanted = {gpu["uuid"]: _gpu_row(node, gpu) for gpu in change.gpus}
    existing = (
        {
            row["uuid"]: row
            for row in Gpu.objects.filter(uuid__in=wanted).values("uuid", *next(iter(wanted.values()), {}).keys())
        }
        if wanted
        else {}
    )
    for uuid, row in wanted.items():
        current = existing.get(uuid)
        if current is None or any(current[key] != value for key, value in row.items()):
            Gpu.objects.update_or_create(uuid=uuid, defaults={**row, "last_seen": seen})
    stale = Gpu.objects.filter(node=node)
    if change.all_gpus is not None:
        stale.exclude(uuid__in=change.all_gpus).delete()
    elif change.removed_gpus:
        stale.filter(uuid__in=change.removed_gpus).delete()
    Gpu.objects.filter(node=node).update(last_seen=seen)


def _mirror_runtime(node: Any, name: str, runtime: dict[str, Any], seen: datetime) -> bool:

    row = Runtime.objects.filter(node=node, name=name).first()
    if row is None:
        if not settings.MESH_RUNTIME_DISCOVERY:
            _warn_unregistered(node.name, name)
            return True  # nothing to retry: it is ignored until an operator registers it
        try:
            row = registry.register_discovered_runtime(
                node_name=node.name, name=name, http_url=runtime["url"], metrics_url=runtime["metrics_url"]
            )
        except registry.RegistryError as error:
            logger.warning("could not register runtime %s/%s reported by its agent: %s", node.name, name, error)
            return False
    health = Health.HEALTHY if runtime["live"] and runtime["ready"] else Health.UNHEALTHY
    Runtime.objects.filter(pk=row.pk).update(health=health, last_seen=seen)
    wanted = {}
    for key, (state, reason) in runtime["states"].items():
        model_name, _, version = key.rpartition(":")
        if not (state == "UNAVAILABLE" and reason in NOT_LOADED_REASONS):
            wanted[(model_name, version)] = (INSTANCE_STATES[state], reason if state == "UNAVAILABLE" else "")
    existing = {(row.model_name, row.model_revision): row for row in ModelInstance.objects.filter(runtime=row)}
    changed = [
        key
        for key, value in wanted.items()
        if key not in existing or (existing[key].state, existing[key].reason) != value
    ]
    gone = [instance.pk for key, instance in existing.items() if key not in wanted]
    if not changed and not gone:
        return True  # the common case on a periodic reconcile: nothing to write
    catalog = {
        (model.name, model.revision): model
        for model in Model.objects.filter(name__in={model_name for model_name, _ in changed})
    }
    with transaction.atomic():
        for model_name, version in changed:
            state, reason = wanted[(model_name, version)]
            ModelInstance.objects.update_or_create(
                runtime=row,
                model_name=model_name,
                model_revision=version,
                defaults={
                    "model": catalog.get((model_name, version)) or catalog.get((model_name, "1")),
                    "state": state,
                    "reason": reason,
                    "updated_at": seen,
                },
            )
        ModelInstance.objects.filter(pk__in=gone).delete()
    return True


_warned_unregistered: set[tuple[str, str]] = set()


def _warn_unregistered(node: str, runtime: str) -> None:
    if (node, runtime) not in _warned_unregistered:
        _warned_unregistered.add((node, runtime))
        logger.warning(
            "node %s reports runtime %r, which is not registered and runtime discovery is off "
            "(MESH_RUNTIME_DISCOVERY=false): register it (POST /api/v1/runtimes/) to route to it",
            node,
            runtime,
        )


def _forget_runtime_instances(node: Any, name: str) -> None:

    ModelInstance.objects.filter(runtime__node=node, runtime__name=name).delete()
