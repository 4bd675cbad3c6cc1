"""What each dashboard page shows, read at one moment from the database and the live state store.

The same functions give the server-rendered first paint and the WebSocket's snapshot, so the
two never disagree. The database holds desired state (nodes, their zone, labels, drain) and the
mirrored inventory; the store holds the last values and short history (`meshcore.live`).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.urls import reverse

from dashboard.readings import (
    HISTORY_WINDOW_S,
    chart_history,
    decode_field,
    gpu_view,
    instance_history,
    instance_key,
    instance_view,
    inventory_view,
    spark_history,
)
from meshcore import events
from meshcore.live.readers import NodeLive, read_live, router_stats_by_target
from meshcore.live.store import LiveStore, live_store
from meshcore.models import Event, EventType, Gpu, Model, ModelInstance, Node, Runtime

# Events whose arrival changes what a page shows beyond the event itself.
NODE_STRUCTURE_EVENTS = frozenset(
    {
        EventType.NODE_JOINED,
        EventType.NODE_UPDATED,
        EventType.NODE_DRAINING,
        EventType.NODE_UNDRAINED,
        EventType.RUNTIME_CREATED,
        EventType.RUNTIME_UPDATED,
        EventType.RUNTIME_DELETED,
        EventType.RUNTIME_DISCOVERED,
        EventType.MODEL_LOADED,
        EventType.MODEL_UNLOADED,
        EventType.MODEL_FAILED,
    }
)
HEALTH_EVENTS = {EventType.NODE_HEALTHY: "healthy", EventType.NODE_UNHEALTHY: "unhealthy"}
MODEL_EVENTS = frozenset(
    {
        EventType.MODEL_CREATED,
        EventType.MODEL_UPDATED,
        EventType.MODEL_DELETED,
        EventType.MODEL_LOADED,
        EventType.MODEL_UNLOADED,
        EventType.MODEL_FAILED,
        EventType.TARGET_EJECTED,
        EventType.TARGET_RESTORED,
        EventType.RUNTIME_DELETED,
        EventType.NODE_LEFT,
    }
)
RECENT_EVENTS = 100
NODE_RECENT_EVENTS = 20


def _live_gpus(live: NodeLive | None, rows: list[Gpu], *, detail: bool) -> list[dict[str, Any]]:
    """A node's GPUs: those its last report names (values from the store), else the mirrored inventory."""
    gpus: list[dict[str, Any]] = []
    if live is not None:
        for key in live.record:
            if not key.startswith("gpu:"):
                continue
            uuid = key[4:]
            sample = decode_field(live.record, key) or {}
            info = decode_field(live.record, f"info:{uuid}")
            gpus.append({"uuid": uuid, **gpu_view(sample, info, detail=detail)})
    if not gpus:
        for row in rows:
            info = {"name": row.name, "memory_total_bytes": row.memory_total_bytes}
            gpus.append({"uuid": row.uuid, **inventory_view(info, index=row.index, simulated=row.simulated)})
    gpus.sort(key=lambda gpu: (gpu.get("index") if isinstance(gpu.get("index"), int) else 1_000_000, gpu["uuid"]))
    return gpus


def node_view(node: Node, live: NodeLive | None, rows: list[Gpu], *, detail: bool = False) -> dict[str, Any]:
    """A node card: its desired state, its health and age, and its GPUs."""
    if live is not None:
        health = live.record.get("health") or node.health
        seen = live.received_at
        interval = float(live.record.get("interval") or 0) or None
        nvml = live.meta.get("nvml", {}).get("status", "")
    else:
        health = node.health
        seen = node.last_seen.timestamp() if node.last_seen else None
        interval = None
        nvml = ""
    gpus = _live_gpus(live, rows, detail=detail)
    return {
        "name": node.name,
        "zone": node.zone,
        "roles": list(node.roles or []),
        "labels": dict(node.labels or {}),
        "draining": node.draining,
        "health": health,
        "seen": seen,
        "interval": interval,
        "nvml": nvml,
        "sim": nvml == "simulated" or any(gpu.get("sim") for gpu in gpus),
        "agent_version": node.agent_version,
        "admin": reverse("admin:meshcore_node_change", args=[node.pk]),
        "gpus": gpus,
    }


def _gpu_rows(names: list[str] | None) -> dict[str, list[Gpu]]:
    rows = Gpu.objects.select_related("node").order_by("node__name", "index")
    if names is not None:
        rows = rows.filter(node__name__in=names)
    by_node: dict[str, list[Gpu]] = defaultdict(list)
    for row in rows:
        by_node[row.node.name].append(row)
    return by_node


def fleet_nodes(names: Iterable[str] | None = None, *, store: LiveStore | None = None) -> tuple[list[dict], float]:
    """The node cards of the fleet page (all nodes, or the named ones), and when they were read."""
    nodes = Node.objects.all()
    wanted = sorted(set(names)) if names is not None else None
    if wanted is not None:
        nodes = nodes.filter(name__in=wanted)
    nodes = list(nodes)
    live, now = read_live([node.name for node in nodes], store=store)
    rows = _gpu_rows(wanted)
    return [node_view(node, live.get(node.name), rows.get(node.name, [])) for node in nodes], now


class _SparkCache:
    """Sparkline histories read lately, shared by this process's connections.

    Reading a GPU's history means parsing its stored points (300 by default): for a thousand
    GPUs, the most expensive part of a fleet page's start. Pages that connect within TTL_S of
    each other (a reconnecting crowd after a restart, several SREs) share one read; the newest
    seconds missing from a shared read arrive with the next updates.
    """

    TTL_S = 5.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, tuple[float, dict[str, list]]] = {}

    def get(self, uuid: str, now: float) -> dict[str, list] | None:
        with self.lock:
            entry = self.entries.get(uuid)
        return entry[1] if entry is not None and now - entry[0] < self.TTL_S else None

    def clear(self) -> None:
        with self.lock:
            self.entries = {}

    def put(self, uuid: str, now: float, series: dict[str, list]) -> None:
        with self.lock:
            self.entries[uuid] = (now, series)
            if len(self.entries) > 256 and now - min(at for at, _ in self.entries.values()) > 10 * self.TTL_S:
                self.entries = {key: entry for key, entry in self.entries.items() if now - entry[0] < self.TTL_S}


spark_cache = _SparkCache()


def spark_histories(nodes: list[dict], now: float, *, store: LiveStore | None = None) -> dict[str, dict]:
    """Each GPU's last five minutes for the fleet page's sparklines, by GPU uuid."""
    store = store or live_store()
    since = now - HISTORY_WINDOW_S
    histories = {}
    for node in nodes:
        for gpu in node["gpus"]:
            series = spark_cache.get(gpu["uuid"], now)
            if series is None:
                series = spark_history(store.history(node["name"], f"gpu:{gpu['uuid']}", since), now)
                spark_cache.put(gpu["uuid"], now, series)
            histories[gpu["uuid"]] = series
    return histories


def fleet_totals(nodes: list[dict]) -> dict[str, Any]:
    """The figures at the top of the fleet page (the browser keeps them current the same way)."""
    gpus = [gpu for node in nodes for gpu in node["gpus"]]
    utilization = [gpu["util"] for gpu in gpus if gpu.get("util") is not None]
    return {
        "nodes": len(nodes),
        "healthy": sum(node["health"] == "healthy" for node in nodes),
        "unhealthy": sum(node["health"] == "unhealthy" for node in nodes),
        "draining": sum(bool(node["draining"]) for node in nodes),
        "gpus": len(gpus),
        "util": round(sum(utilization) / len(utilization)) if utilization else None,
        "mem": sum(gpu.get("mem") or 0 for gpu in gpus),
        "mem_total": sum(gpu.get("mem_total") or 0 for gpu in gpus),
        "power": sum(gpu.get("power") or 0 for gpu in gpus),
        "power_limit": sum(gpu.get("power_limit") or 0 for gpu in gpus),
    }


def fleet_snapshot(*, store: LiveStore | None = None) -> dict[str, Any]:
    """Every node card with current values; the sparklines' history follows separately (`spark_histories`)."""
    nodes, now = fleet_nodes(store=store)
    return {"page": "fleet", "time": now, "nodes": nodes}


def recent_events(
    *, node: str | None = None, subscription: events.Subscription | None = None, limit: int = RECENT_EVENTS
) -> list[dict[str, Any]]:
    """The latest events (of the node, or matching the subscription's types and nodes), newest first."""
    rows = Event.objects.all()
    if node is not None:
        rows = rows.filter(node_name=node)
    if subscription is not None and subscription.types:
        rows = rows.filter(type__in=subscription.types)
    if subscription is not None and subscription.nodes:
        rows = rows.filter(node_name__in=subscription.nodes)
    return [events.event_payload(events.event_message(event)) for event in rows.order_by("-id")[:limit]]


def _runtime_views(node: Node, live: NodeLive | None, store: LiveStore, now: float) -> list[dict[str, Any]]:
    runtimes = {runtime.name: runtime for runtime in Runtime.objects.filter(node=node)}
    names = set(runtimes)
    if live is not None:
        names |= {key[3:] for key in live.record if key.startswith("rt:")}
    views = []
    for name in sorted(names):
        sample = live.runtime(name) if live is not None else None
        row = runtimes.get(name)
        models = []
        for model in (sample or {}).get("models", []):
            key = instance_key(node.name, name, model["name"], model.get("version", ""))
            series = f"model:{name}:{model['name']}:{model.get('version', '')}"
            models.append(
                {
                    "key": key,
                    "model": model["name"],
                    "version": model.get("version", ""),
                    **instance_view(model["state"], model.get("stats"), model.get("reason", "")),
                    "history": instance_history(store.history(node.name, series, now - HISTORY_WINDOW_S)),
                }
            )
        views.append(
            {
                "name": name,
                "url": (sample or {}).get("url") or (row.http_url if row else ""),
                "live": (sample or {}).get("live"),
                "ready": (sample or {}).get("ready"),
                "version": ((sample or {}).get("server") or {}).get("version", ""),
                "error": (sample or {}).get("error"),
                "registered": row is not None,
                "admin": reverse("admin:meshcore_runtime_change", args=[row.pk]) if row else "",
                "models": models,
            }
        )
    return views


def node_snapshot(name: str, *, store: LiveStore | None = None) -> dict[str, Any] | None:
    """Everything the node page shows: GPU details with their history, runtimes and models, recent events."""
    node = Node.objects.filter(name=name).first()
    if node is None:
        return None
    store = store or live_store()
    live, now = read_live([name], store=store)
    view = node_view(node, live.get(name), list(node.gpus.order_by("index")), detail=True)
    since = now - HISTORY_WINDOW_S
    history = {gpu["uuid"]: chart_history(store.history(name, f"gpu:{gpu['uuid']}", since)) for gpu in view["gpus"]}
    return {
        "page": "node",
        "time": now,
        "node": view,
        "history": history,
        "runtimes": _runtime_views(node, live.get(name), store, now),
        "events": recent_events(node=name, limit=NODE_RECENT_EVENTS),
    }


def ejected_targets(now: float | None = None) -> dict[str, dict[str, Any]]:
    """Targets ("node/runtime") a router ejected and has not restored, with until when, from the events."""
    now = now or time.time()
    latest: dict[str, tuple[Event, bool]] = {}
    rows = Event.objects.filter(type__in=[EventType.TARGET_EJECTED, EventType.TARGET_RESTORED]).order_by("-id")
    for event in rows[:500]:
        target = (event.data or {}).get("target")
        if target and target not in latest:
            latest[target] = (event, event.type == EventType.TARGET_EJECTED)
    ejected = {}
    for target, (event, is_ejected) in latest.items():
        until = event.created_at.timestamp() + float((event.data or {}).get("for_s") or 0)
        if is_ejected and until > now:
            ejected[target] = {"until": until, "failures": (event.data or {}).get("failures")}
    return ejected


def router_view(store: LiveStore | None = None) -> dict[str, dict[str, Any]]:
    """Routers' per-second figures by "model|target", with each target's share of its model's requests."""
    combined = router_stats_by_target(store)
    totals: dict[str, float] = defaultdict(float)
    for (model, _), stats in combined.items():
        totals[model] += stats["rate"]
    return {
        f"{model}|{target}": {
            "rate": round(stats["rate"], 1),
            "errors": stats["errors"],
            "p50": stats["p50_ms"],
            "p99": stats["p99_ms"],
            "share": round(stats["rate"] / totals[model], 3) if totals[model] else None,
        }
        for (model, target), stats in combined.items()
    }


def models_snapshot(*, store: LiveStore | None = None) -> dict[str, Any]:
    """Where each model is loaded and in what state, per target figures from Triton and the routers."""
    store = store or live_store()
    instances = list(ModelInstance.objects.select_related("runtime__node", "model"))
    live, now = read_live({instance.runtime.node.name for instance in instances}, store=store)
    catalog = {(model.name, model.revision): model for model in Model.objects.all()}
    models: dict[str, dict[str, Any]] = {}
    for instance in instances:
        node = instance.runtime.node.name
        runtime = instance.runtime.name
        entry = models.setdefault(
            instance.model_name,
            {"name": instance.model_name, "admin": "", "targets": []},
        )
        known = catalog.get((instance.model_name, instance.model_revision or "1"))
        if known is not None:
            entry["admin"] = reverse("admin:meshcore_model_change", args=[known.pk])
        node_live = live.get(node)
        sample = node_live.instance(runtime, instance.model_name, instance.model_revision, now) if node_live else None
        state = sample["state"] if sample else instance.state.upper()
        series = f"model:{runtime}:{instance.model_name}:{instance.model_revision}"
        entry["targets"].append(
            {
                "key": instance_key(node, runtime, instance.model_name, instance.model_revision),
                "node": node,
                "runtime": runtime,
                "target": f"{node}/{runtime}",
                "version": instance.model_revision,
                **instance_view(state, (sample or {}).get("stats"), (sample or {}).get("reason", instance.reason)),
                "history": instance_history(store.history(node, series, now - HISTORY_WINDOW_S)),
            }
        )
    for model in catalog.values():
        models.setdefault(
            model.name,
            {"name": model.name, "admin": reverse("admin:meshcore_model_change", args=[model.pk]), "targets": []},
        )
    return {
        "page": "models",
        "time": now,
        "models": sorted(models.values(), key=lambda model: model["name"]),
        "router": router_view(store),
        "ejected": ejected_targets(now),
    }
