"""Backup and restore of the whole desired state (`export_state`, `import_state`)."""

from __future__ import annotations

from typing import Any

from meshcore.models import EventType
from meshcore.registry import committing
from meshcore.registry.committing import Actor, Conflict, InvalidChange, Unavailable
from meshcore.replication.desired import LOG_FORMAT
from meshcore.replication.log import current_log
from meshcore.replication.raft import NoQuorum


def export_state() -> dict[str, Any]:
    """A consistent backup of the desired state this replica holds (it needs no quorum)."""
    return current_log().export()


def restore_state(*, actor: Actor, document: dict[str, Any]) -> dict[str, Any]:
    """Bootstrap a fresh cluster from a backup; refused (409) when the cluster holds desired state."""
    if not isinstance(document, dict) or not isinstance(document.get("items"), dict):
        raise InvalidChange({"document": ["Not an infermesh backup: expected the JSON that export_state writes."]})
    counts = {kind: len(items) for kind, items in document["items"].items()}
    batch = {
        "format": LOG_FORMAT,
        "key": committing.batch_key(actor),
        "actor": committing.actor_name(actor),
        "restore": document,
        "events": [committing.event_spec(EventType.STATE_RESTORED, seq=document.get("seq"), items=counts)],
    }
    try:
        result = current_log().propose(batch)
    except NoQuorum as error:
        raise Unavailable(str(error), error.retry_after) from None
    if result["status"] == "conflict":
        raise Conflict(result["message"])
    if result["status"] != "ok":
        raise InvalidChange({"document": [result["message"]]})
    return result
