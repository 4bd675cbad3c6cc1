"""The embedded agent: with no broker configured, `serve` collects for its own machine.

The same `agents.Agent` a GPU host runs under Celery, driven by a thread here, reporting
straight into this process's ingest (no HTTP, no token) as the local node, which is
registered on first start. GPUs come from NVML, or are simulated where NVML is absent;
a local Triton is reported once it has answered.
"""

from __future__ import annotations

import logging
import re
import socket
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from agents.agent import Agent, AgentConfig, TritonTarget
from agents.report import SendFailed
from meshcore import registry
from meshcore.background import BackgroundLoop
from meshcore.live.parts import telemetry_ingest
from meshcore.live.reports import ReportInvalid, parse_report
from meshcore.models import Node

logger = logging.getLogger(__name__)


def local_node_name() -> str:
    if settings.MESH_LOCAL_NODE:
        return settings.MESH_LOCAL_NODE
    name = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().split(".")[0].lower()).strip("-")
    return name[:63] or "local"


def local_triton_targets() -> list[TritonTarget]:
    metrics = settings.MESH_LOCAL_TRITON_METRICS_URLS
    targets = []
    for position, url in enumerate(settings.MESH_LOCAL_TRITON_URLS):
        target = TritonTarget.parse(url, position)
        if position < len(metrics):
            target = TritonTarget(target.name, target.url, metrics[position])
        targets.append(target)
    return targets


class InProcessSink:
    """Hands reports to this process's ingest, checked exactly as an HTTP report would be."""

    def __init__(self, node: str) -> None:
        self.node = node

    def send(self, report: dict[str, Any]) -> dict[str, Any]:
        try:
            return telemetry_ingest().ingest(parse_report(report)).as_json()
        except ReportInvalid as invalid:
            raise SendFailed(f"report refused: {invalid.errors}", retryable=False) from invalid
        except Exception as error:
            raise SendFailed(f"ingest failed: {error}") from error


def register_local_node(name: str) -> bool:
    """Make sure the local node exists in the registry; False while there is no quorum yet."""
    if Node.objects.filter(name=name).exists():
        return True
    try:
        registry.create_node(actor="system", name=name, address="127.0.0.1", roles=["gpu", "control"])
    except registry.Conflict:
        return True
    except registry.RegistryError as error:
        logger.info("local node %s not registered yet: %s", name, error)
        return False
    logger.info("registered the local node %s", name)
    return True


class LocalAgentPart(BackgroundLoop):
    name = "local agent"
    thread_name = "local-agent"

    def __init__(self) -> None:
        self.node = local_node_name()
        interval = settings.MESH_LOCAL_AGENT_INTERVAL_MS / 1000
        super().__init__(interval)
        config = AgentConfig(
            node=self.node,
            triton=local_triton_targets(),
            gpus=settings.MESH_LOCAL_GPUS,
            interval_s=interval,
            runtime_interval_s=interval,
        )
        self.agent = Agent(config, sink=InProcessSink(self.node), only_found_runtimes=True)
        self.registered = False

    def stop(self, timeout_s: float = 10.0) -> None:
        super().stop(timeout_s)
        self.agent.close()

    def step(self) -> None:
        close_old_connections()
        if not self.registered:
            # Until the node is in the registry (a quorum may still be forming), reports would be refused.
            self.registered = register_local_node(self.node)
            return
        try:
            self.agent.collect_runtimes()
        except Exception:
            logger.warning("local runtime collection failed", exc_info=True)
        self.agent.collect_gpus()
