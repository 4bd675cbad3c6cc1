"""The proxy's measurements: Prometheus metrics, and per-second aggregates for the dashboard and API.

Prometheus (`GET /metrics`, prometheus-client's text format): requests by model, target and
code; latency histograms (total, and upstream per target); requests in flight per target;
retries; ejections. Label children are cached, so a request costs a few dictionary lookups.

Aggregates: every second this process publishes, per model and target, the request rate, the
errors, and p50/p99 latency to the live state store (`router:<process>`, expiring after a few
seconds), where the API's `instances/` live values and the dashboard read them.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from meshcore.background import BackgroundLoop
from meshcore.live.store import LiveStore, live_store

logger = logging.getLogger(__name__)

# The `_created` series double the output and say nothing a scraper needs.
disable_created_metrics()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "infermesh_proxy_requests", "Proxied requests by model, target and status code.", ["model", "target", "code"]
)
REQUEST_SECONDS = Histogram(
    "infermesh_proxy_request_duration_seconds",
    "Time from request to response, in the proxy.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_SECONDS = Histogram(
    "infermesh_proxy_upstream_duration_seconds",
    "Time the upstream Triton took to answer.",
    ["model", "target"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge("infermesh_proxy_in_flight", "Requests in flight to each target.", ["target"])
RETRIES = Counter("infermesh_proxy_retries", "Requests sent again to another target.", ["model"])
RETRIES_REFUSED = Counter("infermesh_proxy_retries_refused", "Retries the retry budget refused.", ["model"])
EJECTIONS = Counter("infermesh_proxy_ejections", "Targets ejected after consecutive failures.", ["target"])
EJECTED = Gauge("infermesh_proxy_target_ejected", "1 while a target is ejected.", ["target"])


class ProxyMetrics:
    """Cached label children (prometheus-client's `labels()` takes a lock and builds a tuple each call)."""

    def __init__(self) -> None:
        self._children: dict[tuple, object] = {}

    def _child(self, metric: object, *labels: str) -> object:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request_done(self, model: str, target: str, code: int, total_s: float, upstream_s: float | None) -> None:
        self._child(REQUESTS, model, target, str(code)).inc()
        self._child(REQUEST_SECONDS, model).observe(total_s)
        if upstream_s is not None:
            self._child(UPSTREAM_SECONDS, model, target).observe(upstream_s)

    def in_flight(self, target: str, delta: int) -> None:
        self._child(IN_FLIGHT, target).inc(delta)

    def retried(self, model: str, allowed: bool) -> None:
        self._child(RETRIES if allowed else RETRIES_REFUSED, model).inc()

    def ejection(self, target: str, ejected: bool) -> None:
        if ejected:
            self._child(EJECTIONS, target).inc()
        self._child(EJECTED, target).set(1 if ejected else 0)


class RouterAggregates(BackgroundLoop):
    """Per-second request rate, errors and latency percentiles per model and target, published to the store."""

    name = "router aggregates"
    thread_name = "router-aggregates"

    def __init__(self, store: Callable[[], LiveStore] = live_store, period_s: float = 1.0) -> None:
        super().__init__(period_s)
        self.store = store
        self.source = f"{socket.gethostname()}:{os.getpid()}"
        self._window: dict[tuple[str, str], list] = {}
        self.last: dict[str, dict] = {}

    def record(self, model: str, target: str, seconds: float, error: bool) -> None:
        entry = self._window.get((model, target))
        if entry is None:
            entry = self._window[(model, target)] = [0, []]
        entry[0] += error
        entry[1].append(seconds)

    def flush(self) -> dict[str, dict]:
        """Aggregate the last window and publish it; returns what was published."""
        # Swapped, not locked: the event loop appends to whichever window it holds (at worst one
        # request lands in the next second).
        window, self._window = self._window, {}
        stats = {}
        for (model, target), (errors, latencies) in window.items():
            latencies.sort()
            stats[f"{model}|{target}"] = {
                "model": model,
                "target": target,
                "rate": len(latencies) / self.period_s,
                "errors": errors,
                "p50_ms": round(_percentile(latencies, 0.50) * 1000, 3),
                "p99_ms": round(_percentile(latencies, 0.99) * 1000, 3),
            }
        self.last = stats
        if stats:
            payload = {"at": time.time(), "period_s": self.period_s, "targets": list(stats.values())}
            self.store().publish_router_stats(self.source, json.dumps(payload), ttl_s=3 * self.period_s)
        return stats

    def step(self) -> None:
        self.flush()


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
