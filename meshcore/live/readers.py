"""Reading the live state store for the API (and the dashboard): nodes, GPUs, instances, router aggregates."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from meshcore.live.store import LiveStore, live_store


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


class NodeLive:
    """One node's record in the store, decoded on demand."""

    def __init__(self, name: str, record: dict[str, str], now: float) -> None:
        self.name = name
        self.record = record
        self.received_at = float(record.get("received_at", "0"))
        self.age_s = round(max(0.0, now - self.received_at), 3)
        self.meta = json.loads(record.get("meta", "{}"))

    def summary(self) -> dict[str, Any]:
        return {
            "health": self.record.get("health"),
            "last_report_at": _iso(self.received_at),
            "age_s": self.age_s,
            "interval_s": float(self.record.get("interval", "0")),
            "seq": int(self.record.get("seq", "0")),
            "agent": self.meta.get("agent", {}),
            "nvml": self.meta.get("nvml", {}),
            "gpus": sum(1 for key in self.record if key.startswith("gpu:")),
            "runtimes": sorted(key[3:] for key in self.record if key.startswith("rt:")),
        }

    def gpu(self, uuid: str, now: float) -> dict[str, Any] | None:
        raw = self.record.get(f"gpu:{uuid}")
        if raw is None:
            return None
        sample = json.loads(raw)
        # Every report vouches for the GPUs it leaves out of a delta: unchanged since.
        return {
            "age_s": self.age_s,
            "health": self.record.get("health"),
            "metrics": sample.get("metrics", {}),
            "mig_instances": sample.get("mig_instances", []),
            "errors": sample.get("errors", {}),
        }

    def runtime(self, name: str) -> dict[str, Any] | None:
        raw = self.record.get(f"rt:{name}")
        return json.loads(raw) if raw is not None else None

    def instance(self, runtime: str, model: str, version: str, now: float) -> dict[str, Any] | None:
        sample = self.runtime(runtime)
        if sample is None:
            return None
        for entry in sample.get("models", []):
            if entry["name"] == model and entry.get("version", "") == version:
                return {
                    "age_s": self.age_s,
                    "state": entry["state"],
                    "reason": entry.get("reason", ""),
                    "stats": entry.get("stats", {}),
                    "runtime_live": sample.get("live"),
                }
        return None


def read_live(names: Iterable[str], store: LiveStore | None = None) -> tuple[dict[str, NodeLive], float]:
    """The named nodes' live records (one round trip), and the time they were read at."""
    store = store or live_store()
    now = time.time()
    records = store.read(sorted(set(names)))
    return {name: NodeLive(name, record, now) for name, record in records.items()}, now


def router_stats_by_target(store: LiveStore | None = None) -> dict[tuple[str, str], dict]:
    """Every router process's latest aggregates, summed per (model, target): rates and errors add,
    percentiles are the worst process's (percentiles do not add)."""
    combined: dict[tuple[str, str], dict] = {}
    for text in (store or live_store()).router_stats().values():
        for entry in json.loads(text).get("targets", []):
            key = (entry["model"], entry["target"])
            total = combined.get(key)
            if total is None:
                combined[key] = {**entry, "processes": 1}
                continue
            total["rate"] += entry["rate"]
            total["errors"] += entry["errors"]
            total["p50_ms"] = max(total["p50_ms"], entry["p50_ms"])
            total["p99_ms"] = max(total["p99_ms"], entry["p99_ms"])
            total["processes"] += 1
    return combined
