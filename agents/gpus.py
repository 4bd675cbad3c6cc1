"""Choosing the agent's GPU collector: NVML, simulated GPUs, or NVML when the host has it ("auto")."""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Protocol

from agents.nvml import NvmlCollector
from agents.simulated import SimulatedGpus

logger = logging.getLogger(__name__)

MODES = ("auto", "nvml", "simulated")


class GpuCollector(Protocol):
    def collect(self, runtimes: list[dict] | None = None) -> dict: ...

    def close(self) -> None: ...


class NvmlGpus:
    """NvmlCollector with the collect(runtimes) signature all GPU collectors share; NVML needs no runtime state."""

    def __init__(self, collector: NvmlCollector) -> None:
        self._collector = collector

    def collect(self, runtimes: list[dict] | None = None) -> dict:
        return self._collector.collect()

    def close(self) -> None:
        self._collector.close()


class AutoGpus:
    """NVML when it initialises and sees a GPU, simulated GPUs otherwise.

    Decided on the first collect(), in the process that collects, and kept: switching later would swap
    the node's GPU uuids under the control plane.
    """

    def __init__(self, nvml: NvmlCollector, simulated: SimulatedGpus) -> None:
        self._nvml = nvml
        self._simulated = simulated
        self._chosen: GpuCollector | None = None
        self._why_simulated: str | None = None

    def collect(self, runtimes: list[dict] | None = None) -> dict:
        if self._chosen is None:
            return self._choose(runtimes)
        report = self._chosen.collect(runtimes)
        if self._why_simulated:
            report["nvml"]["detail"] = self._why_simulated
        return report

    def close(self) -> None:
        (self._chosen or self._nvml).close()

    def _choose(self, runtimes: list[dict] | None) -> dict:
        report = self._nvml.collect()
        nvml = report["nvml"]
        if nvml["status"] == "ok" and report["gpus"]:
            logger.info("GPU collector: NVML, %d GPU(s)", len(report["gpus"]))
            self._chosen = NvmlGpus(self._nvml)
            return report
        self._nvml.close()
        if nvml["status"] == "ok":
            self._why_simulated = "NVML sees no GPU on this host"
        else:
            self._why_simulated = f"NVML is {nvml['status']}: {nvml.get('detail', 'no detail')}"
        logger.warning("GPU collector: %d simulated GPU(s), because %s", self._simulated.count, self._why_simulated)
        self._chosen = self._simulated
        return self.collect(runtimes)


def make_gpu_collector(
    mode: str = "auto",
    simulated_count: int = 2,
    node_name: str = "local",
    nvml: ModuleType | None = None,
) -> GpuCollector:
    """The GPU collector for `mode`: "nvml" (no fallback), "simulated", or "auto"; `nvml` replaces pynvml."""
    if mode == "nvml":
        return NvmlGpus(NvmlCollector(nvml))
    if mode == "simulated":
        return SimulatedGpus(count=simulated_count, node_name=node_name)
    if mode == "auto":
        return AutoGpus(NvmlCollector(nvml), SimulatedGpus(count=simulated_count, node_name=node_name))
    raise ValueError(f"Unknown GPU collector mode {mode!r}: use one of {', '.join(MODES)}.")
