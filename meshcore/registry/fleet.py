"""Nodes (registration, labels, drain, agent tokens) and the Triton runtimes on them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from meshcore.kinds import KIND_BY_NAME
from meshcore.labels import validate_labels
from meshcore.models import EventType, Node, NodeRole, NodeToken, Runtime
from meshcore.registry import committing
from meshcore.registry.committing import Actor, Change, InvalidChange
from meshcore.tokens import new_node_token

NODE_FIELDS = KIND_BY_NAME["node"].editable


def _validate_node_fields(values: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, str] = {}
    if "roles" in values:
        roles = values["roles"]
        if not isinstance(roles, list) or any(role not in NodeRole.values for role in roles):
            errors["roles"] = f"Must be a list of: {', '.join(NodeRole.values)}."
        else:
            values["roles"] = sorted(set(roles))
    if "labels" in values:
        try:
            validate_labels(values["labels"])
        except ValidationError as error:
            errors["labels"] = " ".join(error.messages)
    if errors:
        raise InvalidChange(errors)
    return values


def create_node(
    *,
    actor: Actor,
    name: str,
    address: str,
    roles: list[str] | None = None,
    zone: str = "",
    labels: dict[str, str] | None = None,
) -> tuple[Node, str]:
    """Register a node; returns it with its agent token, which is shown only this once."""
    values = _validate_node_fields({"roles": roles or [], "labels": labels or {}})
    now = timezone.now()
    node = Node(name=name, address=address, zone=zone, created_at=now, updated_at=now, **values)
    committing.full_clean(node)
    secret = new_node_token()
    token = NodeToken(digest=secret.digest, prefix=secret.prefix, issued_at=now)
    result = committing.commit(
        actor,
        [
            {"op": "create", "kind": "node", "data": committing.item_data("node", node)},
            {
                "op": "create",
                "kind": "node_token",
                "data": {
                    **committing.item_data("node_token", token, ("digest", "prefix", "issued_at")),
                    "node_id": {"$ref": 0},
                },
            },
        ],
        [committing.event_spec(EventType.NODE_JOINED, name, address=address)],
        explain=lambda: committing.refuse_duplicate(
            Node.objects.filter(name=name), f"A node named {name!r} is already registered."
        ),
    )
    return Node.objects.get(pk=committing.created_id(result, "node")), secret.value


def update_node(*, actor: Actor, name: str, changes: dict[str, Any], expected_version: int | None = None) -> Node:
    if "name" in changes and changes["name"] != name:
        raise InvalidChange({"name": "A node's name cannot change; register a new node and delete this one."})
    changes = _validate_node_fields({k: v for k, v in changes.items() if k != "name"})
    node = committing.get_row(Node.objects, "node", name=name)
    changed = committing.assign_changes(node, changes, NODE_FIELDS, "Node")
    if not changed:
        return node
    committing.full_clean(node)
    result = committing.commit(
        actor,
        [committing.update_op("node", node, changed, expected_version)],
        [committing.event_spec(EventType.NODE_UPDATED, name, changed=changed)],
        explain=lambda: _explain_node(name, expected_version),
    )
    return committing.as_committed(node, "node", result)


def set_node_draining(*, actor: Actor, name: str, draining: bool, expected_version: int | None = None) -> Node:
    """Drain (no new work routed or placed) or undrain a node; repeating it changes nothing."""
    node = committing.get_row(Node.objects, "node", name=name)
    if node.draining == draining:
        return node
    node.draining = draining
    event_type = EventType.NODE_DRAINING if draining else EventType.NODE_UNDRAINED
    result = committing.commit(
        actor,
        [committing.update_op("node", node, ["draining"], expected_version)],
        [committing.event_spec(event_type, name)],
        explain=lambda: _explain_node(name, expected_version),
    )
    return committing.as_committed(node, "node", result)


def _explain_node(name: str, expected_version: int | None) -> None:
    committing.check_version(committing.get_row(Node.objects, "node", name=name), expected_version, f"Node {name!r}")


def _node_deletion(name: str, expected_version: int | None) -> Change:
    node = committing.get_row(Node.objects, "node", name=name)
    return (
        [{"op": "delete", "kind": "node", "id": node.pk, "expected_version": expected_version}],
        # Recorded against the node's name, which the event keeps once the row is gone.
        [committing.event_spec(EventType.NODE_LEFT, name, node=name)],
    )


def delete_node(*, actor: Actor, name: str, expected_version: int | None = None) -> None:
    committing.commit(
        actor, *_node_deletion(name, expected_version), explain=lambda: _explain_node(name, expected_version)
    )


def delete_nodes(*, actor: Actor, names: Iterable[str]) -> None:
    """Delete several nodes in one change: all of them, or (one refused) none."""
    committing.commit_all(actor, names, lambda name: _node_deletion(name, None))


def rotate_node_token(*, actor: Actor, name: str) -> tuple[Node, str]:
    """Replace the node's agent token; the old one stops working at once."""
    node = committing.get_row(Node.objects.select_related("token"), "node", name=name)
    secret = new_node_token()
    data = {
        "digest": secret.digest,
        "prefix": secret.prefix,
        "issued_at": timezone.now().isoformat(),
        "revoked_at": None,
    }
    existing = NodeToken.objects.filter(node=node).first()
    if existing is None:
        op = {"op": "create", "kind": "node_token", "data": {**data, "node_id": node.pk}}
    else:
        op = {"op": "update", "kind": "node_token", "id": existing.pk, "data": data}
    committing.commit(actor, [op], [committing.event_spec(EventType.NODE_TOKEN_ROTATED, name, prefix=secret.prefix)])
    return Node.objects.select_related("token").get(pk=node.pk), secret.value


def revoke_node_token(*, actor: Actor, name: str) -> Node:
    """Stop the node's agent token from working; rotate to issue a new one."""
    node = committing.get_row(Node.objects, "node", name=name)
    token = NodeToken.objects.filter(node=node, revoked_at__isnull=True).first()
    if token is not None:
        committing.commit(
            actor,
            [
                {
                    "op": "update",
                    "kind": "node_token",
                    "id": token.pk,
                    "data": {"revoked_at": timezone.now().isoformat()},
                }
            ],
            [committing.event_spec(EventType.NODE_TOKEN_REVOKED, name)],
        )
    return Node.objects.get(pk=node.pk)


RUNTIME_FIELDS = KIND_BY_NAME["runtime"].editable


def _explain_runtime(runtime_id: int | None, expected_version: int | None, node: Node, name: str) -> None:
    if runtime_id is not None:
        runtime = committing.get_row(Runtime.objects.select_related("node"), "runtime", pk=runtime_id)
        committing.check_version(runtime, expected_version, f"Runtime {runtime}")
    committing.get_row(Node.objects, "node", name=node.name)
    committing.refuse_duplicate(
        Runtime.objects.filter(node=node, name=name).exclude(pk=runtime_id),
        f"Node {node.name!r} already has a runtime named {name!r}.",
    )


def create_runtime(
    *, actor: Actor, node_name: str, http_url: str, name: str = "triton", grpc_url: str = "", metrics_url: str = ""
) -> Runtime:
    """Register a Triton endpoint on a node (an operator's write)."""
    return _create_runtime(actor, EventType.RUNTIME_CREATED, node_name, name, http_url, grpc_url, metrics_url)


def register_discovered_runtime(*, node_name: str, name: str, http_url: str, metrics_url: str = "") -> Runtime:
    """Register a runtime the node's agent reports and nobody registered (runtime discovery).

    The one place observed state leads to a desired-state write: explicit, logged as the agent,
    and announced with its own event; `MESH_RUNTIME_DISCOVERY=false` turns it off.
    """
    return _create_runtime(
        f"agent:{node_name}", EventType.RUNTIME_DISCOVERED, node_name, name, http_url, "", metrics_url
    )


def _create_runtime(
    actor: Actor, event_type: str, node_name: str, name: str, http_url: str, grpc_url: str, metrics_url: str
) -> Runtime:
    node = committing.get_row(Node.objects, "node", name=node_name)
    now = timezone.now()
    runtime = Runtime(
        node=node,
        name=name,
        http_url=http_url,
        grpc_url=grpc_url,
        metrics_url=metrics_url,
        created_at=now,
        updated_at=now,
    )
    committing.full_clean(runtime)
    result = committing.commit(
        actor,
        [{"op": "create", "kind": "runtime", "data": committing.item_data("runtime", runtime)}],
        [committing.event_spec(event_type, node_name, runtime=name, id={"$ref": 0}, http_url=http_url)],
        explain=lambda: _explain_runtime(None, None, node, name),
    )
    return Runtime.objects.select_related("node").get(pk=committing.created_id(result, "runtime"))


def update_runtime(
    *, actor: Actor, runtime_id: int, changes: dict[str, Any], expected_version: int | None = None
) -> Runtime:
    runtime = committing.get_row(Runtime.objects.select_related("node"), "runtime", pk=runtime_id)
    changed = committing.assign_changes(runtime, changes, RUNTIME_FIELDS, "Runtime")
    if not changed:
        return runtime
    committing.full_clean(runtime)
    result = committing.commit(
        actor,
        [committing.update_op("runtime", runtime, changed, expected_version)],
        [
            committing.event_spec(
                EventType.RUNTIME_UPDATED, runtime.node.name, runtime=runtime.name, id=runtime.pk, changed=changed
            )
        ],
        explain=lambda: _explain_runtime(runtime_id, expected_version, runtime.node, runtime.name),
    )
    return committing.as_committed(runtime, "runtime", result)


def _runtime_deletion(runtime_id: int, expected_version: int | None) -> Change:
    runtime = committing.get_row(Runtime.objects.select_related("node"), "runtime", pk=runtime_id)
    return (
        [{"op": "delete", "kind": "runtime", "id": runtime.pk, "expected_version": expected_version}],
        [committing.event_spec(EventType.RUNTIME_DELETED, runtime.node.name, runtime=runtime.name)],
    )


def delete_runtime(*, actor: Actor, runtime_id: int, expected_version: int | None = None) -> None:
    def explain() -> None:
        runtime = committing.get_row(Runtime.objects.select_related("node"), "runtime", pk=runtime_id)
        committing.check_version(runtime, expected_version, f"Runtime {runtime}")

    committing.commit(actor, *_runtime_deletion(runtime_id, expected_version), explain=explain)


def delete_runtimes(*, actor: Actor, runtime_ids: Iterable[int]) -> None:
    """Delete several runtimes in one change: all of them, or (one refused) none."""
    committing.commit_all(actor, runtime_ids, lambda runtime_id: _runtime_deletion(runtime_id, None))
