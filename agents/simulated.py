"""Simulated GPUs for hosts without NVML (demos, tests): GpuSamples driven by the runtimes' actual load.

The busy fraction is the GPU time the served models ask for (inference_per_s x compute_time_ms, plus
pressure from queued requests) spread evenly over the GPUs. Utilization follows it within seconds,
power follows utilization, temperature follows it with a thermal lag; memory grows with READY models.
Given the same runtimes and the same elapsed times, the samples are the same.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GIB = 1024**3

IDLE_TEMPERATURE_C = 30.0
FULL_LOAD_TEMPERATURE_C = 78.0
IDLE_POWER_W = 22.0
FULL_LOAD_POWER_W = 280.0
POWER_LIMIT_W = 300.0
IDLE_CLOCKS_MHZ = {"graphics": 210, "memory": 405, "sm": 210}
ACTIVE_CLOCKS_MHZ = {"graphics": 1980, "memory": 9501, "sm": 1980}
IDLE_PSTATE, ACTIVE_PSTATE = 8, 0
# Memory bandwidth use relative to GPU utilization, typical of inference.
MEMORY_UTILIZATION_RATIO = 0.4
# What one READY model holds on each GPU (Triton places an instance of each model on every GPU by default).
MODEL_MEMORY_BYTES = 2 * GIB
# Memory the driver and CUDA context hold however much is loaded.
RESERVED_MEMORY_BYTES = 512 * 1024**2
# A pending request asks for this share of a GPU: a standing queue means the GPUs are not keeping up.
QUEUE_PRESSURE_PER_REQUEST = 0.05

# Time constants (seconds) of the first-order lags that make the values follow their targets.
UTILIZATION_TAU_S = 2.0
POWER_TAU_S = 3.0
TEMPERATURE_TAU_S = 30.0


def simulated_uuid(node_name: str, index: int) -> str:
    """A uuid stable across restarts for the same node and GPU index, shaped like NVML's GPU-… ones."""
    return f"SIM-{uuid.uuid5(uuid.NAMESPACE_OID, f'infermesh/simulated-gpu/{node_name}/{index}')}"


def gpu_demand(runtimes: list[dict]) -> float:
    """GPUs' worth of work the runtimes ask for: busy time per second of what they serve, plus their queues."""
    demand = 0.0
    for runtime in runtimes:
        for model in runtime.get("models") or []:
            stats = model.get("stats") or {}
            # The first scrape after a (re)start has no rates yet: None counts as no load.
            rate = stats.get("inference_per_s") or 0.0
            compute_s = (stats.get("compute_time_ms") or 0.0) / 1000
            demand += rate * compute_s + QUEUE_PRESSURE_PER_REQUEST * (stats.get("queue_depth") or 0)
    return demand


def ready_models(runtimes: list[dict]) -> int:
    return sum(1 for runtime in runtimes for model in runtime.get("models") or [] if model.get("state") == "READY")


def _follow(value: float, target: float, elapsed_s: float, tau_s: float) -> float:
    # Exact first-order step: the result depends on elapsed time, not on how often collect() is called.
    return target + (value - target) * math.exp(-elapsed_s / tau_s)


@dataclass
class _GpuState:
    utilization: float = 0.0
    power_w: float = IDLE_POWER_W
    temperature_c: float = IDLE_TEMPERATURE_C

    def advance(self, busy: float, elapsed_s: float) -> None:
        self.utilization = _follow(self.utilization, busy, elapsed_s, UTILIZATION_TAU_S)
        power_target = IDLE_POWER_W + (FULL_LOAD_POWER_W - IDLE_POWER_W) * self.utilization
        self.power_w = _follow(self.power_w, power_target, elapsed_s, POWER_TAU_S)
        temperature_target = IDLE_TEMPERATURE_C + (FULL_LOAD_TEMPERATURE_C - IDLE_TEMPERATURE_C) * self.utilization
        self.temperature_c = _follow(self.temperature_c, temperature_target, elapsed_s, TEMPERATURE_TAU_S)


class SimulatedGpus:
    """GPUs that answer like NVML would, with values that follow the load reported by the runtimes."""

    def __init__(
        self,
        count: int = 2,
        name: str = "Simulated GPU 24GB",
        memory_total_bytes: int = 24 * GIB,
        node_name: str = "local",
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if count < 1:
            raise ValueError(f"A simulated host needs at least one GPU, not {count}.")
        self.count = count
        self._name = name
        self._memory_total_bytes = memory_total_bytes
        self._uuids = [simulated_uuid(node_name, index) for index in range(count)]
        self._states = [_GpuState() for _ in range(count)]
        self._now = now
        self._collected_at: float | None = None

    def collect(self, runtimes: list[dict] | None = None) -> dict:
        """{"nvml": {"status": "simulated"}, "gpus": [GpuSample, ...]} after the load of `runtimes` (RuntimeSamples)."""
        runtimes = runtimes or []
        now = self._now()
        elapsed_s = 0.0 if self._collected_at is None else max(0.0, now - self._collected_at)
        self._collected_at = now
        busy = min(1.0, gpu_demand(runtimes) / self.count)
        memory_used = min(
            RESERVED_MEMORY_BYTES + ready_models(runtimes) * MODEL_MEMORY_BYTES,
            int(self._memory_total_bytes * 0.95),
        )
        for state in self._states:
            state.advance(busy, elapsed_s)
        return {
            "nvml": {"status": "simulated"},
            "gpus": [self._sample(index, state, memory_used) for index, state in enumerate(self._states)],
        }

    def close(self) -> None:
        """Nothing to release; here so every GPU collector can be closed alike."""

    def _sample(self, index: int, state: _GpuState, memory_used: int) -> dict[str, Any]:
        active = state.utilization >= 0.01
        return {
            "uuid": self._uuids[index],
            "index": index,
            "simulated": True,
            "info": {
                "name": self._name,
                "memory_total_bytes": self._memory_total_bytes,
                "power_limit_w": POWER_LIMIT_W,
            },
            "metrics": {
                "memory_used_bytes": memory_used,
                "memory_free_bytes": self._memory_total_bytes - memory_used,
                "utilization_gpu_pct": round(state.utilization * 100),
                "utilization_memory_pct": round(state.utilization * MEMORY_UTILIZATION_RATIO * 100),
                "temperature_gpu_c": round(state.temperature_c),
                "power_usage_w": round(state.power_w, 1),
                "clocks_mhz": dict(ACTIVE_CLOCKS_MHZ if active else IDLE_CLOCKS_MHZ),
                "performance_state": ACTIVE_PSTATE if active else IDLE_PSTATE,
            },
            "errors": {},
        }
