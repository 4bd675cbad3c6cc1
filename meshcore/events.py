"""Events: one row per change to the mesh, published to the channel layer once committed.

Changes to desired state carry their events in their log batch; each replica's projection
stores them (`record_batch_events`) and the first replica to project a batch publishes them.
Changes to observed state (health, model loading) never go through Raft: the replica that
saw them stores and publishes them with `record_event`.

Subscribers (the WebSocket `/ws/events/` and the SSE `/api/v1/events/stream/`) describe what
they want with the same query parameters, parsed here into a `Subscription`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

from meshcore.channel_bridge import send_from_thread
from meshcore.jsontext import compact
from meshcore.models import Event, EventType, Node
from meshcore.replication import rows

EVENTS_GROUP = "mesh.events"
# Telemetry ingest sends {"type": "mesh.telemetry", "updates": [{"node", "time", "gpus", "instances"}, ...]} here.
TELEMETRY_GROUP = "mesh.telemetry"

OBSERVED_EVENT_TYPES = frozenset(
    {
        EventType.NODE_HEALTHY,
        EventType.NODE_UNHEALTHY,
        EventType.MODEL_LOADED,
        EventType.MODEL_UNLOADED,
        EventType.MODEL_FAILED,
        EventType.TARGET_EJECTED,
        EventType.TARGET_RESTORED,
    }
)
# Stored events a subscriber gets when it resumes; beyond this it reconnects from the last id.
BACKLOG_LIMIT = 1000


def event_message(event: Event) -> dict[str, Any]:
    return {
        "type": "mesh.event",
        "id": event.pk,
        "event_type": event.type,
        "time": event.created_at.isoformat(),
        "node": event.node_name or None,
        "actor": event.actor,
        "data": event.data,
    }


def publish_events(events: list[Event]) -> None:
    """Best effort: a channel layer that is down must not undo a committed change."""
    layer = get_channel_layer()
    if layer is None or not events:
        return

    async def send_all() -> None:
        for event in events:
            await layer.group_send(EVENTS_GROUP, event_message(event))

    # One hop into async for the whole batch, on the server's loop where the in-memory layer's queues live;
    # a failure is logged there and does not reach the caller.
    send_from_thread(send_all)


def record_batch_events(batch: dict[str, Any], result: dict[str, Any]) -> list[Event]:
    """Store the events a committed batch carries (in the projection's transaction).

    A value `{"$ref": i}` in an event's data is the id that operation i of the batch created.
    """
    events = []
    actor = batch.get("actor") or "system"
    created_ids = result.get("created_ids", [])

    def resolve(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"$ref"}:
            return created_ids[value["$ref"]]
        return value

    for spec in batch.get("events", []):
        node_name = spec.get("node") or ""
        node = Node.objects.filter(name=node_name).first() if node_name else None
        event = Event(
            type=spec["type"],
            node=node,
            node_name=node_name,
            actor=actor,
            data={**{key: resolve(value) for key, value in spec.get("data", {}).items()}, "seq": result["seq"]},
        )
        rows.insert(event)  # every replica stores every batch's events: the cheap statement
        events.append(event)
    return events


def record_event(
    event_type: str, *, node_name: str = "", data: dict[str, Any] | None = None, actor: str = "system"
) -> Event:
    """Store an event about observed state and publish it once the surrounding transaction commits.

    For sync code in any thread (agents' reports, health checks); publishing is best effort.
    """
    if event_type not in OBSERVED_EVENT_TYPES:
        allowed = ", ".join(sorted(OBSERVED_EVENT_TYPES))
        raise ValueError(
            f"{event_type!r} is not an observed-state event (one of: {allowed}); "
            "changes to desired state get their events from the registry."
        )
    node = Node.objects.filter(name=node_name).first() if node_name else None
    event = Event.objects.create(type=event_type, node=node, node_name=node_name, actor=actor, data=data or {})
    # Subscribers must never see an event whose row is rolled back, nor see it before a backlog query can.
    transaction.on_commit(lambda: publish_events([event]))
    return event


SUBSCRIPTION_PARAMETERS = ("types", "node", "after", "telemetry")
_NODE_NAME = re.compile(r"^[-a-zA-Z0-9_]{1,63}$")
_MAX_NODES = 100
_MAX_EVENT_ID = 2**63 - 1  # the database's bigint: a larger id would fail in the query, not match nothing
_TRUE = {"1", "true", "yes", "on", "gpus"}
_FALSE = {"0", "false", "no", "off", ""}


class InvalidSubscription(Exception):
    """Query parameters a subscriber got wrong; `errors` maps each parameter to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


@dataclass(frozen=True)
class Subscription:
    """What one subscriber asked for; empty `types` or `nodes` means all."""

    types: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()
    after: int | None = None
    telemetry: bool = False

    def groups(self) -> list[str]:
        return [EVENTS_GROUP, TELEMETRY_GROUP] if self.telemetry else [EVENTS_GROUP]

    def wants_event(self, message: Mapping[str, Any]) -> bool:
        return (
            (self.after is None or message["id"] > self.after)
            and (not self.types or message["event_type"] in self.types)
            and (not self.nodes or message["node"] in self.nodes)
        )

    def telemetry_texts(self, message: Mapping[str, Any]) -> list[str]:
        """What this subscriber receives for a `mesh.telemetry` message: one JSON text per wanted node update."""
        if not self.telemetry:
            return []
        # Ingest coalesces updates into one message; a lone update (no "updates" key) is one too.
        updates = message.get("updates", [message])
        return [telemetry_text(update) for update in updates if not self.nodes or update.get("node") in self.nodes]

    def backlog(self) -> tuple[list[dict[str, Any]], bool]:
        """Stored events after `after` that match, oldest first, at most BACKLOG_LIMIT; and whether more match."""
        if self.after is None:
            return [], False
        events = Event.objects.filter(pk__gt=self.after)
        if self.types:
            events = events.filter(type__in=self.types)
        if self.nodes:
            events = events.filter(node_name__in=self.nodes)
        rows = list(events.order_by("pk")[: BACKLOG_LIMIT + 1])
        return [event_message(event) for event in rows[:BACKLOG_LIMIT]], len(rows) > BACKLOG_LIMIT


def _event_id(name: str, values: Sequence[str], errors: dict[str, list[str]]) -> int | None:
    if len(values) > 1:
        errors[name] = [f"Give {name} once."]
        return None
    value = values[0].strip()
    # The length check comes first: int() refuses strings of thousands of digits.
    if not (value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= _MAX_EVENT_ID):
        errors[name] = [f"{value!r} is not an event id; send the id of the last event you received."]
        return None
    return int(value)


def _items(values: Sequence[str]) -> list[str]:
    """Values of a repeatable, comma-separated parameter."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def parse_subscription(params: Mapping[str, Sequence[str]], *, last_event_id: str | None = None) -> Subscription:
    """A Subscription from query parameters (each name mapped to its values).

    `last_event_id` (SSE's `Last-Event-ID` header, sent on reconnect) wins over `after`.
    Raises InvalidSubscription naming each parameter that is wrong and what it accepts.
    """
    errors: dict[str, list[str]] = {}
    for name in params:
        if name not in SUBSCRIPTION_PARAMETERS:
            errors[name] = [f"Unknown parameter; use {', '.join(SUBSCRIPTION_PARAMETERS)}."]

    types = _items(params.get("types", []))
    unknown_types = [name for name in types if name not in EventType.values]
    if unknown_types:
        unknown = ", ".join(sorted(set(unknown_types)))
        errors["types"] = [f"Unknown event type(s): {unknown}; use any of: {', '.join(EventType.values)}."]

    nodes = _items(params.get("node", []))
    bad_nodes = [name for name in nodes if not _NODE_NAME.match(name)]
    if bad_nodes:
        errors["node"] = [f"{bad_nodes[0]!r} is not a node name (letters, digits, '-' and '_', at most 63)."]
    elif len(set(nodes)) > _MAX_NODES:
        errors["node"] = [f"Name at most {_MAX_NODES} nodes."]

    after = None
    after_values = [value for value in params.get("after", []) if value.strip()]
    if last_event_id is not None and last_event_id.strip():
        after = _event_id("Last-Event-ID", [last_event_id], errors)
    elif after_values:
        after = _event_id("after", after_values, errors)

    telemetry = False
    telemetry_values = [value.strip().lower() for value in params.get("telemetry", [])]
    if any(value not in _TRUE | _FALSE for value in telemetry_values):
        errors["telemetry"] = ["Use telemetry=1 to receive telemetry too, or leave it out."]
    elif telemetry_values:
        telemetry = telemetry_values[-1] in _TRUE

    if errors:
        raise InvalidSubscription(errors)
    return Subscription(types=frozenset(types), nodes=frozenset(nodes), after=after, telemetry=telemetry)


def event_payload(message: Mapping[str, Any]) -> dict[str, Any]:
    """What a subscriber receives for a `mesh.event` message."""
    return {
        "kind": "event",
        "id": message["id"],
        "type": message["event_type"],
        "time": message["time"],
        "node": message["node"],
        "actor": message["actor"],
        "data": message["data"],
    }


def telemetry_text(update: Mapping[str, Any]) -> str:
    """One node update as JSON text: the publisher encodes it once (`json`), not once per subscriber."""
    text = update.get("json")
    return text if text is not None else compact(telemetry_payload(update))


def telemetry_payload(update: Mapping[str, Any]) -> dict[str, Any]:
    """What a subscriber receives for one node's telemetry update."""
    return {
        "kind": "telemetry",
        "node": update.get("node"),
        "time": update.get("time"),
        "seq": update.get("seq"),
        "gpus": update.get("gpus", []),
        "instances": update.get("instances", []),
    }
