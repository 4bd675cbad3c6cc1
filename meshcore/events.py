"""Events: one row per change to the mesh, published to the channel layer once committed.

Changes to desired state carry their events in their log batch; each replica's projection
stores them (`record_batch_events`) and the first replica to project a batch publishes them.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from meshcore.models import Event, Node

logger = logging.getLogger(__name__)

EVENTS_GROUP = "mesh.events"


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

    try:
        # One hop into async for the whole batch: each async_to_sync call costs a thread handoff.
        async_to_sync(send_all)()
    except Exception:
        logger.warning("could not publish %d event(s) to the channel layer", len(events), exc_info=True)


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
        events.append(
            Event.objects.create(
                type=spec["type"],
                node=node,
                node_name=node_name,
                actor=actor,
                data={**{key: resolve(value) for key, value in spec.get("data", {}).items()}, "seq": result["seq"]},
            )
        )
    return events
