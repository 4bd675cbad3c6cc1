"""What the dashboard shows of one GPU, node or model instance, from the live state store's values.

Pure functions: a GPU sample (as agents report it, docs/telemetry.md) becomes a flat "view" of
rounded values in display units, so that two samples that look the same on screen compare equal
and the socket sends only what a person would see change. The keys are the wire format of
`/ws/dashboard/` (docs/dashboard.md).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Mapping
from typing import Any

from meshcore.jsontext import loads

MIB = 1024**2
# The fleet page's sparklines: 5 minutes in buckets of this many seconds (60 points a series).
SPARK_BUCKET_S = 5.0
HISTORY_WINDOW_S = 300.0
# An XID error marks its GPU's tile for this long after it was reported.
XID_RECENT_S = HISTORY_WINDOW_S

# Inventory: rarely changes; sent with a node, and again only when it changes.
INVENTORY_KEYS = ("index", "name", "sim", "mem_total", "power_limit")


def _mib(value: Any) -> int | None:
    return round(value / MIB) if isinstance(value, int | float) else None


def _round(value: Any) -> int | None:
    return round(value) if isinstance(value, int | float) else None


def inventory_view(info: Mapping[str, Any] | None, *, index: Any = None, simulated: Any = None) -> dict[str, Any]:
    """The GPU's name, memory and power limit, from its `info` (NVML inventory) where known."""
    view: dict[str, Any] = {}
    if index is not None:
        view["index"] = index
    if simulated is not None:
        view["sim"] = bool(simulated)
    if info:
        if "name" in info:
            view["name"] = str(info["name"])
        if "memory_total_bytes" in info:
            view["mem_total"] = _mib(info["memory_total_bytes"])
        if "power_limit_w" in info:
            view["power_limit"] = _round(info["power_limit_w"])
    return view


def metrics_view(
    metrics: Mapping[str, Any], errors: Mapping[str, Any] | None, *, detail: bool = False
) -> dict[str, Any]:
    """The values a GPU tile shows (and, with `detail`, the node page's extras), rounded for display.

    A metric the device does not report is None; `err` names the fields NVML failed to read.
    """
    clocks = metrics.get("clocks_mhz") or {}
    ecc = metrics.get("ecc_errors") or {}
    xid = metrics.get("xid_errors") or {}
    view: dict[str, Any] = {
        "util": _round(metrics.get("utilization_gpu_pct")),
        "mem": _mib(metrics.get("memory_used_bytes")),
        "temp": _round(metrics.get("temperature_gpu_c")),
        "power": _round(metrics.get("power_usage_w")),
        "sm": _round(clocks.get("sm")),
        # Uncorrected volatile ECC errors since the driver loaded: the ones that take a GPU out of service.
        "ecc": ecc.get("uncorrected_volatile") if ecc else None,
        "xid": recent_xid(xid),
        "err": sorted(errors) if errors else [],
    }
    if detail:
        view.update(
            mem_util=_round(metrics.get("utilization_memory_pct")),
            temp_mem=_round(metrics.get("temperature_memory_c")),
            clocks={key: _round(value) for key, value in sorted(clocks.items())},
            pstate=metrics.get("performance_state"),
            throttle=list(metrics.get("throttle_reasons") or []),
            fans=list(metrics.get("fan_speeds_pct") or []),
            enc=_round(metrics.get("encoder_utilization_pct")),
            dec=_round(metrics.get("decoder_utilization_pct")),
            ecc_all=dict(ecc),
            xid_all=dict(xid),
            procs=[
                {"pid": proc.get("pid"), "type": proc.get("type", ""), "mem": _mib(proc.get("used_memory_bytes"))}
                for proc in metrics.get("processes") or []
            ],
            errors=dict(errors or {}),
        )
    return view


def recent_xid(xid: Mapping[str, Any], now: float | None = None) -> int | None:
    """The last XID error's code while it is recent (within the dashboard's history window), else None."""
    last_at = xid.get("last_at")
    if xid.get("last") is None or not isinstance(last_at, int | float):
        return None
    return int(xid["last"]) if (now or time.time()) - last_at <= XID_RECENT_S else None


def mig_view(instances: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "uuid": mig.get("uuid", ""),
            "profile": mig.get("profile", ""),
            "gi": mig.get("gpu_instance_id"),
            "ci": mig.get("compute_instance_id"),
            "mem": _mib(mig.get("memory_used_bytes")),
            "mem_total": _mib(mig.get("memory_total_bytes")),
        }
        for mig in instances
    ]


def gpu_view(sample: Mapping[str, Any], info: Mapping[str, Any] | None, *, detail: bool = False) -> dict[str, Any]:
    """One GPU as a tile (or, with `detail`, the node page) shows it: inventory plus current values."""
    view = inventory_view(info or sample.get("info"), index=sample.get("index"), simulated=sample.get("simulated"))
    view.update(metrics_view(sample.get("metrics") or {}, sample.get("errors"), detail=detail))
    if detail:
        view["mig"] = mig_view(sample.get("mig_instances") or [])
    return view


def instance_key(node: str, runtime: str, model: str, version: str) -> str:
    return f"{node}/{runtime}/{model}/{version}"


def instance_view(state: str, stats: Mapping[str, Any] | None, reason: str = "") -> dict[str, Any]:
    """A model instance's state and Triton's figures for it, rounded for display."""
    stats = stats or {}

    def figure(name: str, digits: int) -> float | None:
        value = stats.get(name)
        return round(value, digits) if isinstance(value, int | float) else None

    return {
        "state": state,
        "reason": reason,
        "queue": figure("queue_depth", 0),
        "rate": figure("inference_per_s", 1),
        "latency": figure("latency_ms", 1),
        "queue_ms": figure("queue_time_ms", 1),
        "compute_ms": figure("compute_time_ms", 1),
        "failures": figure("failure_per_s", 2),
    }


def changed(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of `current` whose values differ from `previous` (all of them without one)."""
    if previous is None:
        return dict(current)
    return {key: value for key, value in current.items() if previous.get(key, _MISSING) != value}


_MISSING = object()


class TelemetryUpdate:
    """One node's telemetry message, decoded once per process for every dashboard that receives it."""

    __slots__ = ("details", "gpus", "instances", "node", "seq", "time")

    def __init__(self, payload: Mapping[str, Any]) -> None:
        self.node: str = payload.get("node") or ""
        self.time: float = float(payload.get("time") or 0.0)
        self.seq = payload.get("seq")
        samples = payload.get("gpus") or []
        # Tile values for the fleet page; the node page decodes details lazily (one node's worth).
        self.gpus: dict[str, dict[str, Any]] = {
            sample["uuid"]: gpu_view(sample, sample.get("info")) for sample in samples if sample.get("uuid")
        }
        self.details = samples
        self.instances: dict[str, dict[str, Any]] = {
            instance_key(self.node, item.get("runtime", ""), item.get("model", ""), item.get("version", "")): {
                "node": self.node,
                "runtime": item.get("runtime", ""),
                "model": item.get("model", ""),
                "version": item.get("version", ""),
                **instance_view(item.get("state", ""), item.get("stats")),
            }
            for item in payload.get("instances") or []
        }

    def gpu_details(self) -> dict[str, dict[str, Any]]:
        return {
            sample["uuid"]: gpu_view(sample, sample.get("info"), detail=True)
            for sample in self.details
            if sample.get("uuid")
        }


@functools.lru_cache(maxsize=2048)
def decode_telemetry(text: str) -> TelemetryUpdate:
    """The update a `mesh.telemetry` text carries; cached, so N dashboards in a process decode it once.

    Callers must not change what it returns.
    """
    return TelemetryUpdate(loads(text))


def spark_history(points: Iterable[list[Any]], now: float) -> dict[str, list[Any]]:
    """A GPU's stored history ([t, util, mem bytes, temp, power] points) as the fleet page's sparklines
    want it: the last point of each SPARK_BUCKET_S bucket of the window, columns of display units."""
    buckets: dict[int, list[Any]] = {}
    start = now - HISTORY_WINDOW_S
    for point in points:
        if point[0] >= start:
            buckets[int(point[0] // SPARK_BUCKET_S)] = point
    rows = [buckets[key] for key in sorted(buckets)]
    return {
        "t": [round(row[0], 1) for row in rows],
        "util": [_round(row[1]) for row in rows],
        "mem": [_mib(row[2]) for row in rows],
        "temp": [_round(row[3]) for row in rows],
        "power": [_round(row[4]) for row in rows],
    }


def chart_history(points: Iterable[list[Any]]) -> dict[str, list[Any]]:
    """A GPU's full stored history for the node page's charts, in display units."""
    rows = list(points)
    return {
        "t": [round(row[0], 3) for row in rows],
        "util": [row[1] for row in rows],
        "mem": [_mib(row[2]) for row in rows],
        "temp": [row[3] for row in rows],
        "power": [row[4] for row in rows],
    }


def instance_history(points: Iterable[list[Any]]) -> dict[str, list[Any]]:
    """A model instance's stored history ([t, queue depth, inference/s, latency ms])."""
    rows = list(points)
    return {
        "t": [round(row[0], 3) for row in rows],
        "queue": [row[1] for row in rows],
        "rate": [row[2] for row in rows],
        "latency": [row[3] for row in rows],
    }


def decode_field(record: Mapping[str, str], name: str) -> Any:
    raw = record.get(name)
    return loads(raw) if raw else None
