"""What a Triton server is doing, as one RuntimeSample (docs/telemetry.md) per collect.

`TritonCollector` asks Triton's HTTP API (health, metadata, repository index) through
tritonclient's asyncio client and scrapes its Prometheus metrics endpoint. Triton's counters
are cumulative, so rates and average times come from the difference between two collects;
a counter that went down (the model reloaded) restarts the difference.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp
from tritonclient.http.aio import InferenceServerClient, InferenceServerException

T = TypeVar("T")

DEFAULT_METRICS_PORT = 8002
LOAD_TIMEOUT_S = 300.0

# Prometheus series → counter name. Sums per model version: failures come per reason, and the
# compute time is input + infer + output.
COUNTER_SERIES = {
    "nv_inference_request_success": "success",
    "nv_inference_request_failure": "failure",
    "nv_inference_count": "inferences",
    "nv_inference_request_duration_us": "request_us",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_input_duration_us": "compute_us",
    "nv_inference_compute_infer_duration_us": "compute_us",
    "nv_inference_compute_output_duration_us": "compute_us",
}
QUEUE_DEPTH_SERIES = "nv_inference_pending_request_count"

_SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_LABEL_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

Metrics = dict[str, list[tuple[dict[str, str], float]]]
ModelKey = tuple[str, str]


class TritonError(Exception):
    """Triton refused or could not be asked to change its models; the message is Triton's."""


class _Unreachable(Exception):
    """A call to the runtime failed; the message says which call and why."""


def parse_metrics(text: str) -> Metrics:
    """Prometheus text exposition → {series name: [(labels, value), ...]}."""
    metrics: Metrics = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_LINE.match(line)
        if match is None:
            raise ValueError(f"metrics line {number} is not a Prometheus sample: {line!r}")
        name, label_text, value = match.groups()
        labels = {}
        if label_text:
            position = 0
            while position < len(label_text):
                label = _LABEL.match(label_text, position)
                if label is None:
                    raise ValueError(f"metrics line {number} has malformed labels: {line!r}")
                labels[label[1]] = re.sub(r"\\[\\\"n]", lambda escape: _LABEL_ESCAPES[escape[0]], label[2])
                position = label.end()
        metrics.setdefault(name, []).append((labels, float(value)))
    return metrics


def _counters_from_metrics(metrics: Metrics) -> tuple[dict[ModelKey, dict[str, float]], dict[ModelKey, float]]:
    counters: dict[ModelKey, dict[str, float]] = {}
    for series, counter in COUNTER_SERIES.items():
        for labels, value in metrics.get(series, []):
            key = (labels.get("model", ""), labels.get("version", ""))
            totals = counters.setdefault(key, dict.fromkeys(set(COUNTER_SERIES.values()), 0.0))
            totals[counter] += value
    queue_depths = {
        (labels.get("model", ""), labels.get("version", "")): value
        for labels, value in metrics.get(QUEUE_DEPTH_SERIES, [])
    }
    return counters, queue_depths


def _counters_from_statistics(statistics: dict) -> dict[ModelKey, dict[str, float]]:
    counters = {}
    for model in statistics.get("model_stats", []):
        stats = model["inference_stats"]
        compute_ns = sum(stats[part]["ns"] for part in ("compute_input", "compute_infer", "compute_output"))
        counters[(model["name"], model["version"])] = {
            "success": stats["success"]["count"],
            "failure": stats["fail"]["count"],
            "inferences": model["inference_count"],
            "request_us": stats["success"]["ns"] / 1000,
            "queue_us": stats["queue"]["ns"] / 1000,
            "compute_us": compute_ns / 1000,
        }
    return counters


@dataclass(frozen=True)
class _Reading:
    source: str
    at: float
    counters: dict[str, float]


class TritonCollector:
    """Collects one Triton server's state; keeps one connection pool across collects.

    `url` is Triton's HTTP endpoint (`http://host:8000`); `metrics_url` its Prometheus
    endpoint, by default port 8002 on the same host.
    """

    def __init__(
        self,
        url: str,
        metrics_url: str | None = None,
        name: str = "triton",
        timeout_s: float = 2.0,
        *,
        load_timeout_s: float = LOAD_TIMEOUT_S,
    ) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self._api_address = parts.netloc
        self._api_ssl = parts.scheme == "https"
        if metrics_url is None:
            metrics_url = f"{parts.scheme}://{parts.hostname}:{DEFAULT_METRICS_PORT}/metrics"
        elif urlsplit(metrics_url).path in ("", "/"):
            metrics_url = metrics_url.rstrip("/") + "/metrics"
        self.metrics_url = metrics_url
        self.name = name
        self.timeout_s = timeout_s
        self.load_timeout_s = load_timeout_s
        self._api: InferenceServerClient | None = None
        self._scraper: aiohttp.ClientSession | None = None
        self._readings: dict[ModelKey, _Reading] = {}

    def _client(self) -> InferenceServerClient:
        # Made on first use: aiohttp sessions belong to the running event loop.
        if self._api is None:
            self._api = InferenceServerClient(self._api_address, ssl=self._api_ssl, conn_timeout=None)
        return self._api

    async def _ask(self, what: str, call: Awaitable[T], timeout_s: float | None = None) -> T:
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):
                return await call
        except TimeoutError:
            raise _Unreachable(f"{what}: no answer within {timeout_s or self.timeout_s:g} s") from None
        except InferenceServerException as error:
            raise _Unreachable(f"{what}: {error.message()}") from error
        except (aiohttp.ClientError, OSError, ValueError) as error:
            raise _Unreachable(f"{what}: {error}") from error

    async def collect(self) -> dict:
        """One RuntimeSample. Never raises: a runtime that cannot be asked is reported with `error`."""
        sample = {
            "name": self.name,
            "url": self.url,
            "metrics_url": self.metrics_url,
            "live": False,
            "ready": False,
            "server": None,
            "error": None,
            "models": [],
        }
        client = self._client()
        try:
            if not await self._ask(f"GET {self.url}/v2/health/live", client.is_server_live()):
                raise _Unreachable(f"GET {self.url}/v2/health/live: not answered with 200, so no live Triton there")
            ready = await self._ask(f"GET {self.url}/v2/health/ready", client.is_server_ready())
            metadata = await self._ask(f"GET {self.url}/v2", client.get_server_metadata())
            index = await self._ask(f"POST {self.url}/v2/repository/index", client.get_model_repository_index())
            now = time.monotonic()
            try:
                counters, queue_depths = _counters_from_metrics(await self._scrape())
                source = "metrics"
            except _Unreachable as error:
                # Without the metrics endpoint the same counters come from the statistics API, less queue depths.
                statistics = await self._ask(f"GET {self.url}/v2/models/stats", client.get_inference_statistics())
                counters, queue_depths, source = _counters_from_statistics(statistics), {}, "statistics"
                sample["error"] = f"{error}; counters from /v2/models/stats, queue depths unknown"
        except _Unreachable as error:
            # The runtime may come back restarted: its counters start again from nothing.
            self._readings = {}
            sample["error"] = str(error)
            return sample

        readings = {}
        for entry in index:
            # Triton lists a model it never tried to load with neither version nor state.
            key = (entry["name"], entry.get("version"))
            model = {
                "name": entry["name"],
                "version": entry.get("version"),
                "state": entry.get("state", "UNAVAILABLE"),
                "reason": entry.get("reason", "" if "state" in entry else "not loaded"),
                "stats": {},
            }
            if model["state"] == "READY" and key in counters:
                readings[key] = _Reading(source, now, counters[key])
                model["stats"] = self._stats(readings[key], self._readings.get(key), queue_depths.get(key))
            sample["models"].append(model)
        # Only models ready now keep a reading: one that reloads meanwhile starts a new difference.
        self._readings = readings
        sample.update(
            live=True, ready=ready, server={key: metadata.get(key) for key in ("name", "version", "extensions")}
        )
        return sample

    async def _scrape(self) -> Metrics:
        if self._scraper is None:
            self._scraper = aiohttp.ClientSession()

        async def get() -> Metrics:
            assert self._scraper is not None
            async with self._scraper.get(self.metrics_url) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                return parse_metrics(await response.text())

        return await self._ask(f"GET {self.metrics_url}", get())

    @staticmethod
    def _stats(reading: _Reading, previous: _Reading | None, queue_depth: float | None) -> dict:
        current = reading.counters
        stats: dict[str, float] = {}
        if queue_depth is not None:
            stats["queue_depth"] = int(queue_depth)
        stats.update(success_total=int(current["success"]), failure_total=int(current["failure"]))
        if (
            previous is None
            or previous.source != reading.source
            or reading.at <= previous.at
            or any(current[counter] < previous.counters[counter] for counter in current)
        ):
            return stats
        seconds = reading.at - previous.at
        delta = {counter: current[counter] - previous.counters[counter] for counter in current}
        stats.update(
            success_per_s=round(delta["success"] / seconds, 3),
            failure_per_s=round(delta["failure"] / seconds, 3),
            inference_per_s=round(delta["inferences"] / seconds, 3),
        )
        if delta["success"]:
            # Triton adds durations for successful requests only, one per request (not per batch item).
            stats.update(
                queue_time_ms=round(delta["queue_us"] / delta["success"] / 1000, 3),
                compute_time_ms=round(delta["compute_us"] / delta["success"] / 1000, 3),
                latency_ms=round(delta["request_us"] / delta["success"] / 1000, 3),
            )
        return stats

    async def load_model(self, name: str, config: str | None = None) -> None:
        """Load (or reload) `name`; `config` is a model configuration in JSON replacing config.pbtxt."""
        await self._change(f"load {name!r}", self._client().load_model(name, config=config))

    async def unload_model(self, name: str) -> None:
        """Ask Triton to unload `name`; it goes UNLOADING, then UNAVAILABLE once in-flight requests finish."""
        await self._change(f"unload {name!r}", self._client().unload_model(name))

    async def _change(self, what: str, call: Awaitable[None]) -> None:
        try:
            await self._ask(what, call, timeout_s=self.load_timeout_s)
        except _Unreachable as error:
            cause = error.__cause__
            message = cause.message() if isinstance(cause, InferenceServerException) else str(error)
            raise TritonError(f"Triton at {self.url} could not {what}: {message}") from cause

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None
        if self._scraper is not None:
            await self._scraper.close()
            self._scraper = None
