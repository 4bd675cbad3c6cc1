"""One GPU host's agent: collectors, the latest samples, and the reporter.

The same `Agent` runs in the Celery worker on a GPU host (tasks call `collect_gpus` and
`collect_runtimes`) and inside `serve` for the local node when no broker is configured.
Nothing here imports Django: a GPU host needs only the agent's own settings.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from agents.gpus import make_gpu_collector
from agents.report import HttpSink, LatestSamples, ReportBuilder, Reporter, ReportSink
from agents.triton import TritonCollector

logger = logging.getLogger(__name__)


class AgentConfigError(Exception):
    """A setting the agent needs is missing or wrong; the message says which."""


@dataclass(frozen=True)
class TritonTarget:
    name: str
    url: str
    metrics_url: str | None = None

    @classmethod
    def parse(cls, text: str, position: int = 0) -> TritonTarget:
        """`URL`, `NAME=URL` or `NAME=URL,METRICS_URL`."""
        name, _, rest = text.partition("=") if "=" in text.split("://")[0] else ("", "", text)
        url, _, metrics = rest.partition(",")
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise AgentConfigError(f"Triton URL {text!r} must start with http:// or https:// (NAME=URL[,METRICS_URL]).")
        name = name.strip() or ("triton" if position == 0 else f"triton-{position + 1}")
        return cls(name=name, url=url, metrics_url=metrics.strip() or None)


@dataclass
class AgentConfig:
    node: str
    control_plane_url: str = ""
    token: str = ""
    triton: list[TritonTarget] = field(default_factory=list)
    gpus: str = "auto"
    simulated_gpus: int = 2
    interval_s: float = 1.0
    runtime_interval_s: float = 1.0
    snapshot_every_s: float = 60.0
    verify_tls: bool | str = True

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AgentConfig:
        """The agent's settings from `MESH_AGENT_*` variables (`python -m agents` sets them)."""
        env = os.environ if environ is None else environ
        node = env.get("MESH_AGENT_NODE", "")
        if not node:
            raise AgentConfigError("Set MESH_AGENT_NODE (or --node) to this host's node name.")
        token = env.get("MESH_AGENT_TOKEN", "")
        if not token and env.get("MESH_AGENT_TOKEN_FILE"):
            try:
                with open(env["MESH_AGENT_TOKEN_FILE"]) as handle:
                    token = handle.read().strip()
            except OSError as error:
                raise AgentConfigError(f"Cannot read MESH_AGENT_TOKEN_FILE: {error}") from error
        control_plane = env.get("MESH_AGENT_CONTROL_PLANE", "")
        if not control_plane.startswith(("http://", "https://")):
            raise AgentConfigError("Set MESH_AGENT_CONTROL_PLANE (or --control-plane) to the control plane's URL.")
        if not token:
            raise AgentConfigError(
                "Set MESH_AGENT_TOKEN_FILE (or --token-file) to a file holding the node's token "
                "(printed when the node was registered; `manage.py node rotate-token NAME` issues a new one)."
            )
        targets = [item for item in env.get("MESH_AGENT_TRITON", "").split(" ") if item]
        gpus = env.get("MESH_AGENT_GPUS", "auto")
        if gpus not in ("auto", "nvml", "simulated"):
            raise AgentConfigError("MESH_AGENT_GPUS must be auto, nvml or simulated.")
        try:
            interval = float(env.get("MESH_AGENT_INTERVAL", "1"))
            runtime_interval = float(env.get("MESH_AGENT_RUNTIME_INTERVAL", str(interval)))
            simulated = int(env.get("MESH_AGENT_SIMULATED_GPUS", "2"))
        except ValueError as error:
            raise AgentConfigError(f"An agent interval or GPU count is not a number: {error}") from error
        if not 0.1 <= interval <= 3600 or not 0.1 <= runtime_interval <= 3600:
            raise AgentConfigError("MESH_AGENT_INTERVAL and MESH_AGENT_RUNTIME_INTERVAL must be 0.1 to 3600 seconds.")
        return cls(
            node=node,
            control_plane_url=control_plane,
            token=token,
            triton=[TritonTarget.parse(item, position) for position, item in enumerate(targets)],
            gpus=gpus,
            simulated_gpus=simulated,
            interval_s=interval,
            runtime_interval_s=runtime_interval,
            verify_tls=env.get("MESH_AGENT_CA_BUNDLE") or True,
        )


class AsyncRunner:
    """A private event loop in a thread: Triton's asyncio client lives there between collections."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="agent-asyncio", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout_s: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


class Agent:
    def __init__(self, config: AgentConfig, sink: ReportSink | None = None, only_found_runtimes: bool = False) -> None:
        self.config = config
        self.samples = LatestSamples()
        self.builder = ReportBuilder(
            config.node, config.interval_s, config.snapshot_every_s, hostname=socket.gethostname()
        )
        self.sink = sink or HttpSink(config.control_plane_url, config.token, verify=config.verify_tls)
        self.reporter = Reporter(self.builder, self.samples, self.sink)
        # Embedded use lists a runtime only once it has answered: "a local Triton where one is found".
        self.only_found_runtimes = only_found_runtimes
        self._found: set[str] = set()
        self._gpu_collector: Any = None
        self._runner: AsyncRunner | None = None
        self._triton: dict[str, TritonCollector] = {}
        self._lock = threading.Lock()

    def _runtime_runner(self) -> AsyncRunner:
        with self._lock:
            if self._runner is None:
                self._runner = AsyncRunner()
                self._triton = {
                    target.name: TritonCollector(target.url, target.metrics_url, name=target.name)
                    for target in self.config.triton
                }
            return self._runner

    def collect_gpus(self) -> dict[str, Any]:
        """Read every GPU now (NVML is initialised here, in the process that uses it)."""
        with self._lock:
            if self._gpu_collector is None:
                self._gpu_collector = make_gpu_collector(
                    self.config.gpus, simulated_count=self.config.simulated_gpus, node_name=self.config.node
                )
        _, _, runtimes = self.samples.read()
        result = self._gpu_collector.collect(runtimes=runtimes)
        self.samples.set_gpus(result["nvml"], result["gpus"])
        self.reporter.start()
        self.reporter.poke()
        return result

    def collect_runtimes(self) -> list[dict[str, Any]]:
        """Ask every Triton for its state, models, statistics and metrics."""
        if not self.config.triton:
            return []
        runner = self._runtime_runner()

        async def collect_all() -> list[dict[str, Any]]:
            return list(await asyncio.gather(*(collector.collect() for collector in self._triton.values())))

        samples = runner.run(collect_all(), timeout_s=max(5.0, self.config.runtime_interval_s * 3))
        for sample in samples:
            if sample.get("live"):
                self._found.add(sample["name"])
        if self.only_found_runtimes:
            samples = [sample for sample in samples if sample["name"] in self._found]
        self.samples.set_runtimes(samples)
        self.reporter.start()
        return samples

    def load_model(self, runtime: str, model: str) -> None:
        runner = self._runtime_runner()
        runner.run(self._collector(runtime).load_model(model), timeout_s=300)

    def unload_model(self, runtime: str, model: str) -> None:
        runner = self._runtime_runner()
        runner.run(self._collector(runtime).unload_model(model), timeout_s=300)

    def _collector(self, runtime: str) -> TritonCollector:
        if runtime not in self._triton:
            raise AgentConfigError(f"This agent has no runtime named {runtime!r}; it has {sorted(self._triton)}.")
        return self._triton[runtime]

    def close(self) -> None:
        self.reporter.stop()
        if self._runner is not None:
            for collector in self._triton.values():
                try:
                    self._runner.run(collector.close(), timeout_s=5)
                except Exception:
                    logger.debug("closing a Triton collector failed", exc_info=True)
            self._runner.close()
        if self._gpu_collector is not None:
            self._gpu_collector.close()
        close = getattr(self.sink, "close", None)
        if close is not None:
            close()


_agent: Agent | None = None
_agent_lock = threading.Lock()


def current_agent() -> Agent:
    """This worker process's agent, made from `MESH_AGENT_*` on first use."""
    global _agent
    with _agent_lock:
        if _agent is None:
            _agent = Agent(AgentConfig.from_env())
        return _agent
