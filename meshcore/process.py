"""The background parts of one mesh process, started and stopped by `manage.py serve`.

Nothing here starts from `AppConfig.ready()`, which also runs in `migrate`, `shell` and
Celery. Parts are added as their issues land (the Raft replica and its control socket,
the event pruner; the embedded agent next).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from django.conf import settings

from meshcore.event_retention import EventPruner
from meshcore.live.parts import fleet_mirror, health_sweeper, telemetry_publisher
from meshcore.local_agent import LocalAgentPart
from meshcore.proxy.app import proxy_app
from meshcore.proxy.explain import control_action as explain_control_action
from meshcore.replication.control import ControlServer, control_socket_path
from meshcore.replication.log import ReplicaPart, installed_replica
from meshcore.routing.view import routing_view

logger = logging.getLogger(__name__)


class BackgroundPart(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


def telemetry_parts() -> list[BackgroundPart]:
    """Live state: the mirror into the database, the telemetry publisher, the health sweeper."""
    return [fleet_mirror(), telemetry_publisher(), health_sweeper()]


@dataclass
class MeshProcess:
    parts: list[BackgroundPart] = field(default_factory=list)

    @classmethod
    def from_settings(cls) -> MeshProcess:
        parts: list[BackgroundPart] = []
        if settings.MESH_REPLICATION == "raft":
            actions = {"route_explain": explain_control_action}
            parts += [ReplicaPart(), ControlServer(control_socket_path(), installed_replica, actions)]
        parts.append(EventPruner())
        parts += telemetry_parts()
        # The router: its table follows desired and observed state; its aggregates go to the live store.
        parts += [routing_view, proxy_app.aggregates]
        if settings.MESH_LOCAL_AGENT == "on" or (settings.MESH_LOCAL_AGENT == "auto" and not settings.MESH_BROKER_SET):
            parts.append(LocalAgentPart())
        return cls(parts=parts)

    def describe(self) -> str:
        if not self.parts:
            return "no background parts"
        return "background parts: " + ", ".join(part.name for part in self.parts)

    def start(self) -> None:
        started: list[BackgroundPart] = []
        try:
            for part in self.parts:
                part.start()
                started.append(part)
                logger.info("started %s", part.name)
        except Exception:
            for part in reversed(started):
                part.stop()
            raise

    def stop(self) -> None:
        for part in reversed(self.parts):
            try:
                part.stop()
            except Exception:
                logger.exception("stopping %s failed", part.name)
