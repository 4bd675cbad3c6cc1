"""An agent's report, checked field by field (the contract is docs/telemetry.md).

Hand-written rather than a DRF serializer: a report carries dozens of values per GPU and
arrives every second from every node, and this check is most of its cost.
Errors come back in DRF's shape (`{"gpus": {"0": {"uuid": ["…"]}}}`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

MAX_GPUS = 64
MAX_RUNTIMES = 16
MAX_MODELS = 2000
MAX_NAME = 128
RUNTIME_STATES = ("READY", "UNAVAILABLE", "LOADING", "UNLOADING")
NVML_STATUSES = ("ok", "missing", "error", "simulated")
SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,63}$")
# Metrics the mesh reads (history, scoring, inventory); the rest are kept as sent.
NUMERIC_METRICS = {
    "memory_used_bytes": (0, 2**53),
    "memory_free_bytes": (0, 2**53),
    "utilization_gpu_pct": (0, 100),
    "utilization_memory_pct": (0, 100),
    "temperature_gpu_c": (-50, 200),
    "power_usage_w": (0, 100_000),
}
NUMERIC_STATS = ("queue_depth", "success_per_s", "failure_per_s", "inference_per_s", "latency_ms", "queue_time_ms")


class ReportInvalid(Exception):
    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__("invalid report")
        self.errors = errors


@dataclass
class Report:
    node: str
    agent_id: str
    agent: dict[str, Any]
    seq: int
    kind: str
    interval_s: float
    nvml: dict[str, Any]
    gpus: list[dict[str, Any]]
    removed_gpus: list[str]
    runtimes: list[dict[str, Any]]
    removed_runtimes: list[str]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any, limit: int = MAX_NAME) -> str | None:
    """The problem with a required short string, or None."""
    if not isinstance(value, str) or not value:
        return "Must be a non-empty string."
    if len(value) > limit:
        return f"At most {limit} characters."
    if "\x00" in value:
        return "Must not contain NUL characters."
    return None


class _Errors:
    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}

    def add(self, path: tuple[str | int, ...], message: str) -> None:
        node = self.tree
        for part in path[:-1]:
            node = node.setdefault(str(part), {})
        node.setdefault(str(path[-1]), []).append(message)


def _check_gpu(gpu: Any, at: tuple, kind: str, errors: _Errors) -> None:
    if not isinstance(gpu, dict):
        errors.add(at, "Must be an object.")
        return
    if problem := _text(gpu.get("uuid"), 96):
        errors.add((*at, "uuid"), problem)
    index = gpu.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 1024:
        errors.add((*at, "index"), "Must be an integer from 0 to 1023.")
    if not isinstance(gpu.get("simulated", False), bool):
        errors.add((*at, "simulated"), "Must be true or false.")
    info = gpu.get("info")
    if info is None:
        if kind == "snapshot":
            errors.add((*at, "info"), "A snapshot carries every GPU's info.")
    elif not isinstance(info, dict):
        errors.add((*at, "info"), "Must be an object.")
    else:
        if "name" in info and (problem := _text(info["name"])):
            errors.add((*at, "info", "name"), problem)
        total = info.get("memory_total_bytes")
        if total is not None and (not _is_number(total) or total < 0):
            errors.add((*at, "info", "memory_total_bytes"), "Must be a number of bytes, 0 or more.")
    metrics = gpu.get("metrics")
    if not isinstance(metrics, dict):
        errors.add((*at, "metrics"), "Must be an object.")
        return
    for name, (low, high) in NUMERIC_METRICS.items():
        value = metrics.get(name)
        if value is not None and (not _is_number(value) or not low <= value <= high):
            errors.add((*at, "metrics", name), f"Must be a number from {low} to {high}.")
    for optional in ("mig_instances",):
        if optional in gpu and not isinstance(gpu[optional], list):
            errors.add((*at, optional), "Must be a list.")
    if "errors" in gpu and not isinstance(gpu["errors"], dict):
        errors.add((*at, "errors"), "Must be an object.")


def _check_model(model: Any, at: tuple, errors: _Errors) -> None:
    if not isinstance(model, dict):
        errors.add(at, "Must be an object.")
        return
    if problem := _text(model.get("name")):
        errors.add((*at, "name"), problem)
    version = model.get("version")
    if version is None:
        model["version"] = ""  # Triton's index has no version for a model that was never loaded
    elif not isinstance(version, str) or len(version) > 64:
        errors.add((*at, "version"), "Must be a string of at most 64 characters.")
    if model.get("state") not in RUNTIME_STATES:
        errors.add((*at, "state"), f"Must be one of {', '.join(RUNTIME_STATES)}.")
    if not isinstance(model.get("reason", ""), str):
        errors.add((*at, "reason"), "Must be a string.")
    stats = model.get("stats", {})
    if not isinstance(stats, dict):
        errors.add((*at, "stats"), "Must be an object.")
        return
    for name in NUMERIC_STATS:
        value = stats.get(name)
        if value is not None and (not _is_number(value) or value < 0):
            errors.add((*at, "stats", name), "Must be a number, 0 or more.")


def _check_runtime(runtime: Any, at: tuple, errors: _Errors) -> None:
    if not isinstance(runtime, dict):
        errors.add(at, "Must be an object.")
        return
    name = runtime.get("name")
    if not isinstance(name, str) or not SLUG.match(name):
        errors.add((*at, "name"), "Must be a slug (letters, digits, - and _), at most 63 characters.")
    url = runtime.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 255:
        errors.add((*at, "url"), "Must be an http(s) URL of at most 255 characters.")
    for flag in ("live", "ready"):
        if not isinstance(runtime.get(flag), bool):
            errors.add((*at, flag), "Must be true or false.")
    models = runtime.get("models", [])
    if not isinstance(models, list) or len(models) > MAX_MODELS:
        errors.add((*at, "models"), f"Must be a list of at most {MAX_MODELS} models.")
        return
    for position, model in enumerate(models):
        _check_model(model, (*at, "models", position), errors)


def _names(value: Any, field: str, errors: _Errors, limit: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > limit or not all(isinstance(item, str) for item in value):
        errors.add((field,), f"Must be a list of at most {limit} strings.")
        return []
    return value


def parse_report(data: Any) -> Report:
    """The report in `data` (decoded JSON), or ReportInvalid with every problem found."""
    errors = _Errors()
    if not isinstance(data, dict):
        raise ReportInvalid({"non_field_errors": ["The body must be a JSON object (see docs/telemetry.md)."]})
    node = data.get("node")
    if not isinstance(node, str) or not SLUG.match(node):
        errors.add(("node",), "Must be the node's name.")
    agent = data.get("agent")
    if not isinstance(agent, dict):
        errors.add(("agent",), "Must be an object with the agent's id.")
        agent = {}
    elif problem := _text(agent.get("id"), 64):
        errors.add(("agent", "id"), problem)
    seq = data.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < 2**63:
        errors.add(("seq",), "Must be a positive integer.")
    kind = data.get("kind")
    if kind not in ("snapshot", "delta"):
        errors.add(("kind",), "Must be 'snapshot' or 'delta'.")
    interval = data.get("interval_s")
    if not _is_number(interval) or not 0.05 <= interval <= 3600:
        errors.add(("interval_s",), "Must be a number of seconds from 0.05 to 3600.")
    nvml = data.get("nvml", {})
    if not isinstance(nvml, dict) or nvml.get("status", "ok") not in NVML_STATUSES:
        errors.add(("nvml",), f"Must be an object whose status is one of {', '.join(NVML_STATUSES)}.")
        nvml = {}
    gpus = data.get("gpus", [])
    if not isinstance(gpus, list) or len(gpus) > MAX_GPUS:
        errors.add(("gpus",), f"Must be a list of at most {MAX_GPUS} GPUs.")
        gpus = []
    for position, gpu in enumerate(gpus):
        _check_gpu(gpu, ("gpus", position), kind, errors)
    runtimes = data.get("runtimes", [])
    if not isinstance(runtimes, list) or len(runtimes) > MAX_RUNTIMES:
        errors.add(("runtimes",), f"Must be a list of at most {MAX_RUNTIMES} runtimes.")
        runtimes = []
    for position, runtime in enumerate(runtimes):
        _check_runtime(runtime, ("runtimes", position), errors)
    removed_gpus = _names(data.get("removed_gpus"), "removed_gpus", errors, MAX_GPUS)
    removed_runtimes = _names(data.get("removed_runtimes"), "removed_runtimes", errors, MAX_RUNTIMES)
    if not errors.tree:
        uuids = [gpu["uuid"] for gpu in gpus]
        if len(set(uuids)) != len(uuids):
            errors.add(("gpus",), "Each GPU uuid may appear once.")
        names = [runtime["name"] for runtime in runtimes]
        if len(set(names)) != len(names):
            errors.add(("runtimes",), "Each runtime name may appear once.")
        if kind == "snapshot" and (removed_gpus or removed_runtimes):
            errors.add(("kind",), "A snapshot lists what exists; removed_gpus and removed_runtimes belong in deltas.")
    if errors.tree:
        raise ReportInvalid(errors.tree)
    return Report(
        node=node,
        agent_id=agent["id"],
        agent=agent,
        seq=seq,
        kind=kind,
        interval_s=float(interval),
        nvml=nvml,
        gpus=gpus,
        removed_gpus=removed_gpus,
        runtimes=runtimes,
        removed_runtimes=removed_runtimes,
    )
