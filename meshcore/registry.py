"""The one way to change desired state: nodes, models, runtimes, policies, tokens and identity.

The admin, the REST API and management commands all call these functions; none of them
writes those tables. Each function validates its input, turns the change into a batch
of plain operations and commits it through the replicated log (`meshcore.replication`):
the call returns once a quorum of replicas committed the batch and this replica's
database applied it, so the caller reads its own write. Version checks (optimistic
concurrency), uniqueness and references are decided when the batch applies, identically
on every replica; a refusal is then explained from this replica's rows where they show
what was refused. Errors are `RegistryError`s that say what to do, mapped to HTTP
statuses by the API and to messages by the admin.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import datetime
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser, Group
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.utils import timezone

from meshcore.labels import validate_labels
from meshcore.models import ApiToken, EventType, Model, Node, NodeRole, NodeToken, Policy, Runtime, User
from meshcore.policy_specs import SpecError, validate_spec
from meshcore.replication import rows
from meshcore.replication.projection import DESIRED_FIELDS, column_values
from meshcore.replication.raft import NoQuorum
from meshcore.replication.service import LocalLog, current_log
from meshcore.replication.state import LOG_FORMAT
from meshcore.tokens import new_api_token, new_node_token

ModelT = TypeVar("ModelT", bound=models.Model)
ItemT = TypeVar("ItemT")
Actor = AbstractBaseUser | str | None


class RequestIdempotencyKey:
    """The request's `Idempotency-Key`, set and reset per request like a ContextVar.

    A request that commits several batches numbers them under its key; setting the key starts
    the count afresh, so a retried request numbers its batches as the first attempt did (even
    in the same thread or context, where a count kept apart from the key would run on).
    """

    def __init__(self) -> None:
        self._current: ContextVar[tuple[str, list[int]] | None] = ContextVar("idempotency_key", default=None)

    def set(self, key: str | None) -> Token:
        return self._current.set((key, [0]) if key else None)

    def reset(self, token: Token) -> None:
        self._current.reset(token)

    def get(self) -> str | None:
        current = self._current.get()
        return current[0] if current else None

    def next_batch_key(self) -> str | None:
        current = self._current.get()
        if current is None:
            return None
        key, uses = current
        uses[0] += 1
        return key if uses[0] == 1 else f"{key}#{uses[0] - 1}"


# Set per request from the `Idempotency-Key` header: a retried request then applies once.
idempotency_key = RequestIdempotencyKey()
# Who makes the writes that name no actor, such as Django's own `user.save()` in a password change.
_acting: ContextVar[Actor] = ContextVar("registry_acting", default=None)

# One change: its operations and the events it records; several can be committed as one batch.
Change = tuple[list[dict[str, Any]], list[dict[str, Any]]]
# Re-reads this replica's rows after the log refused a change and raises a refusal that names
# what was refused (a duplicate, a stale version, a missing row), when the rows show it.
Explain = Callable[[], Any]


class RegistryError(Exception):
    """A change the registry refused; `message` tells the user what to do."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidChange(RegistryError):
    status = 400

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__("; ".join(f"{field}: {detail}" for field, detail in errors.items()))
        self.errors = errors


class NotFound(RegistryError):
    status = 404


class Conflict(RegistryError):
    status = 409


class Unavailable(RegistryError):
    """The registry cannot commit right now (no quorum); try again after `retry_after` seconds."""

    status = 503

    def __init__(self, message: str, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def actor_name(actor: Actor) -> str:
    if actor is None:
        return "system"
    if isinstance(actor, str):
        return actor
    return actor.get_username()


def _actor_id(actor: Actor) -> int | None:
    return actor.pk if isinstance(actor, AbstractBaseUser) else None


@contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Attribute writes that name no actor (`user.save()` from Django's own forms) to `actor`."""
    token = _acting.set(actor)
    try:
        yield
    finally:
        _acting.reset(token)


# ---- committing ---------------------------------------------------------------------


def _batch_key(actor: Actor) -> str:
    """The request's idempotency key, per actor (two clients may pick the same key), or a new one."""
    key = idempotency_key.next_batch_key()
    return f"{actor_name(actor)}:{key}" if key else uuid.uuid4().hex


def _commit(
    actor: Actor, ops: list[dict[str, Any]], events: list[dict[str, Any]], explain: Explain | None = None
) -> dict[str, Any]:
    if actor is None:
        actor = _acting.get()
    log = current_log()
    if connection.in_atomic_block and not isinstance(log, LocalLog):
        # The projection is written by another thread; a transaction held here would hide it or block it.
        raise RuntimeError("meshcore.registry writes wait for the Raft commit; call them outside transaction.atomic().")
    batch = {"format": LOG_FORMAT, "key": _batch_key(actor), "actor": actor_name(actor), "ops": ops, "events": events}
    try:
        result = log.propose(batch)
    except NoQuorum as error:
        raise Unavailable(str(error), error.retry_after) from None
    status = result["status"]
    if status == "ok":
        return result
    if status in ("conflict", "not_found") and explain is not None:
        # Checked here, not before proposing: a retried request (same idempotency key) must reach
        # the log, which answers it as the first time, even though the rows now show its effect.
        explain()
    if status == "conflict":
        raise Conflict(result["message"])
    if status == "not_found":
        raise NotFound(result["message"])
    raise InvalidChange({"non_field_errors": [result["message"]]})


def _commit_all(actor: Actor, items: Iterable[ItemT], change: Callable[[ItemT], Change]) -> None:
    """Commit the change for each item as one batch: all of them apply, or (one refused) none does."""
    items = list(items)
    ops: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for item in items:
        change_ops, change_events = change(item)
        ops.extend(change_ops)
        events.extend(change_events)
    if ops:
        # Building the changes again re-reads the rows: one that is gone is named.
        _commit(actor, ops, events, explain=lambda: [change(item) for item in items])


def _created_id(result: dict[str, Any], kind: str) -> int:
    return next(c["item"]["id"] for c in result["changes"] if c["op"] == "create" and c["kind"] == kind)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _item_data(kind: str, instance: models.Model, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """The instance's replicated fields as plain data (the log holds no ORM objects)."""
    names = [name for name in (fields or DESIRED_FIELDS[kind]) if name != "version"]
    return {name: _plain(getattr(instance, name)) for name in names}


def _event(event_type: str, node: str | None = None, /, **data: Any) -> dict[str, Any]:
    """An event for the batch; `node` names the node it concerns (the data may hold a "node" too)."""
    return {"type": str(event_type), "node": node, "data": data}


def _get(queryset: models.QuerySet[ModelT] | models.Manager[ModelT], what: str, **lookup: Any) -> ModelT:
    try:
        if isinstance(queryset, models.Manager):
            # The plain read before every write: SQL built once, not a query compiled each time (`rows.select_one`).
            found = rows.select_one(queryset.model, using=queryset.db, **lookup)
        else:
            found = queryset.get(**lookup)
    except queryset.model.DoesNotExist:
        found = None
    if found is None:
        raise NotFound(f"No {what} with {', '.join(f'{k}={v!r}' for k, v in lookup.items())}.")
    return found


def _check_version(instance: models.Model, expected_version: int | None, what: str) -> None:
    """Refuse a stale change, naming it (used to explain the log's refusal)."""
    if expected_version is not None and expected_version != instance.version:
        raise Conflict(
            f"{what} changed since you read it (you sent version {expected_version}, it is now "
            f"{instance.version}); read it again and reapply your change."
        )


def _refuse_duplicate(duplicates: models.QuerySet, message: str) -> None:
    """Refuse a duplicate, naming it (used to explain the log's refusal)."""
    if duplicates.exists():
        raise Conflict(message)


def _assign(instance: models.Model, changes: dict[str, Any], allowed: Iterable[str], what: str) -> list[str]:
    """Set the allowed fields that actually change; return their names."""
    allowed = set(allowed)
    refused = sorted(set(changes) - allowed)
    if refused:
        raise InvalidChange({field: f"{what} field {field!r} cannot be changed here." for field in refused})
    changed = []
    for field, value in changes.items():
        if getattr(instance, field) != value:
            setattr(instance, field, value)
            changed.append(field)
    return changed


def _full_clean(instance: models.Model) -> None:
    try:
        # Uniqueness is decided when the batch applies, and reported as a conflict (409).
        instance.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        raise InvalidChange({field: " ".join(messages) for field, messages in error.message_dict.items()}) from None


def _as_committed(instance: ModelT, kind: str, result: dict[str, Any]) -> ModelT:
    """`instance` with the values its update committed: what the database holds now, without a second query."""
    for change in result["changes"]:
        if change["kind"] == kind and change["item"]["id"] == instance.pk:
            for name, value in column_values(type(instance), kind, change["item"]).items():
                setattr(instance, name, value)  # a changed foreign key drops its cached object
            return instance
    instance.refresh_from_db()
    return instance


def _update_op(kind: str, instance: models.Model, changed: list[str], expected_version: int | None) -> dict[str, Any]:
    data = _item_data(kind, instance, changed)
    if "updated_at" in DESIRED_FIELDS[kind]:
        data["updated_at"] = timezone.now().isoformat()
    return {"op": "update", "kind": kind, "id": instance.pk, "data": data, "expected_version": expected_version}


# ---- nodes --------------------------------------------------------------------------

NODE_FIELDS = ("address", "roles", "zone", "labels")


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
    _full_clean(node)
    secret = new_node_token()
    token = NodeToken(digest=secret.digest, prefix=secret.prefix, issued_at=now)
    result = _commit(
        actor,
        [
            {"op": "create", "kind": "node", "data": _item_data("node", node)},
            {
                "op": "create",
                "kind": "node_token",
                "data": {**_item_data("node_token", token, ("digest", "prefix", "issued_at")), "node_id": {"$ref": 0}},
            },
        ],
        [_event(EventType.NODE_JOINED, name, address=address)],
        explain=lambda: _refuse_duplicate(
            Node.objects.filter(name=name), f"A node named {name!r} is already registered."
        ),
    )
    return Node.objects.get(pk=_created_id(result, "node")), secret.value


def update_node(*, actor: Actor, name: str, changes: dict[str, Any], expected_version: int | None = None) -> Node:
    if "name" in changes and changes["name"] != name:
        raise InvalidChange({"name": "A node's name cannot change; register a new node and delete this one."})
    changes = _validate_node_fields({k: v for k, v in changes.items() if k != "name"})
    node = _get(Node.objects, "node", name=name)
    changed = _assign(node, changes, NODE_FIELDS, "Node")
    if not changed:
        return node
    _full_clean(node)
    result = _commit(
        actor,
        [_update_op("node", node, changed, expected_version)],
        [_event(EventType.NODE_UPDATED, name, changed=changed)],
        explain=lambda: _explain_node(name, expected_version),
    )
    return _as_committed(node, "node", result)


def set_node_draining(*, actor: Actor, name: str, draining: bool, expected_version: int | None = None) -> Node:
    """Drain (no new work routed or placed) or undrain a node; repeating it changes nothing."""
    node = _get(Node.objects, "node", name=name)
    if node.draining == draining:
        return node
    node.draining = draining
    event_type = EventType.NODE_DRAINING if draining else EventType.NODE_UNDRAINED
    result = _commit(
        actor,
        [_update_op("node", node, ["draining"], expected_version)],
        [_event(event_type, name)],
        explain=lambda: _explain_node(name, expected_version),
    )
    return _as_committed(node, "node", result)


def _explain_node(name: str, expected_version: int | None) -> None:
    _check_version(_get(Node.objects, "node", name=name), expected_version, f"Node {name!r}")


def _node_deletion(name: str, expected_version: int | None) -> Change:
    node = _get(Node.objects, "node", name=name)
    return (
        [{"op": "delete", "kind": "node", "id": node.pk, "expected_version": expected_version}],
        # Recorded against the node's name, which the event keeps once the row is gone.
        [_event(EventType.NODE_LEFT, name, node=name)],
    )


def delete_node(*, actor: Actor, name: str, expected_version: int | None = None) -> None:
    _commit(actor, *_node_deletion(name, expected_version), explain=lambda: _explain_node(name, expected_version))


def delete_nodes(*, actor: Actor, names: Iterable[str]) -> None:
    """Delete several nodes in one change: all of them, or (one refused) none."""
    _commit_all(actor, names, lambda name: _node_deletion(name, None))


def rotate_node_token(*, actor: Actor, name: str) -> tuple[Node, str]:
    """Replace the node's agent token; the old one stops working at once."""
    node = _get(Node.objects.select_related("token"), "node", name=name)
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
    _commit(actor, [op], [_event(EventType.NODE_TOKEN_ROTATED, name, prefix=secret.prefix)])
    return Node.objects.select_related("token").get(pk=node.pk), secret.value


def revoke_node_token(*, actor: Actor, name: str) -> Node:
    """Stop the node's agent token from working; rotate to issue a new one."""
    node = _get(Node.objects, "node", name=name)
    token = NodeToken.objects.filter(node=node, revoked_at__isnull=True).first()
    if token is not None:
        _commit(
            actor,
            [
                {
                    "op": "update",
                    "kind": "node_token",
                    "id": token.pk,
                    "data": {"revoked_at": timezone.now().isoformat()},
                }
            ],
            [_event(EventType.NODE_TOKEN_REVOKED, name)],
        )
    return Node.objects.get(pk=node.pk)


# ---- models -------------------------------------------------------------------------

MODEL_FIELDS = ("name", "revision", "platform", "config", "description")
MAX_CONFIG_DEPTH = 32


def _json_problem(value: Any, max_depth: int) -> str | None:
    """Why `value` cannot be stored as JSON on every supported database, or None."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > max_depth:
            return f"Nests deeper than {max_depth} levels; flatten it."
        if isinstance(item, float) and not math.isfinite(item):
            return "Numbers must be finite; NaN and Infinity are not JSON."
        if isinstance(item, str) and "\x00" in item:
            return "Text cannot contain NUL (\\u0000) characters."
        if isinstance(item, dict):
            pending.extend((key, depth) for key in item)
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    return None


def _validate_model_config(values: dict[str, Any]) -> None:
    if "config" not in values:
        return
    if not isinstance(values["config"], dict):
        raise InvalidChange({"config": "Must be a JSON object."})
    problem = _json_problem(values["config"], MAX_CONFIG_DEPTH)
    if problem:
        raise InvalidChange({"config": problem})


def _explain_model(model_id: int | None, expected_version: int | None, name: str, revision: str) -> None:
    if model_id is not None:
        model = _get(Model.objects, "model", pk=model_id)
        _check_version(model, expected_version, f"Model {model}")
    _refuse_duplicate(
        Model.objects.filter(name=name, revision=revision).exclude(pk=model_id),
        f"Model {name!r} revision {revision!r} is already in the catalog.",
    )


def create_model(
    *, actor: Actor, name: str, platform: str, revision: str = "1", config: dict | None = None, description: str = ""
) -> Model:
    _validate_model_config({"config": config if config is not None else {}})
    now = timezone.now()
    model = Model(
        name=name,
        revision=revision,
        platform=platform,
        config=config or {},
        description=description,
        created_at=now,
        updated_at=now,
    )
    _full_clean(model)
    result = _commit(
        actor,
        [{"op": "create", "kind": "model", "data": _item_data("model", model)}],
        [_event(EventType.MODEL_CREATED, model=name, revision=revision, id={"$ref": 0})],
        explain=lambda: _explain_model(None, None, name, revision),
    )
    return Model.objects.get(pk=_created_id(result, "model"))


def update_model(*, actor: Actor, model_id: int, changes: dict[str, Any], expected_version: int | None = None) -> Model:
    _validate_model_config(changes)
    model = _get(Model.objects, "model", pk=model_id)
    changed = _assign(model, changes, MODEL_FIELDS, "Model")
    if not changed:
        return model
    _full_clean(model)
    result = _commit(
        actor,
        [_update_op("model", model, changed, expected_version)],
        [_event(EventType.MODEL_UPDATED, model=model.name, revision=model.revision, id=model.pk, changed=changed)],
        explain=lambda: _explain_model(model_id, expected_version, model.name, model.revision),
    )
    return _as_committed(model, "model", result)


def _model_deletion(model_id: int, expected_version: int | None) -> Change:
    model = _get(Model.objects, "model", pk=model_id)
    return (
        [{"op": "delete", "kind": "model", "id": model.pk, "expected_version": expected_version}],
        [_event(EventType.MODEL_DELETED, model=model.name, revision=model.revision)],
    )


def delete_model(*, actor: Actor, model_id: int, expected_version: int | None = None) -> None:
    def explain() -> None:
        model = _get(Model.objects, "model", pk=model_id)
        _check_version(model, expected_version, f"Model {model}")

    _commit(actor, *_model_deletion(model_id, expected_version), explain=explain)


def delete_models(*, actor: Actor, model_ids: Iterable[int]) -> None:
    """Delete several catalog models in one change: all of them, or (one refused) none."""
    _commit_all(actor, model_ids, lambda model_id: _model_deletion(model_id, None))


# ---- runtimes -----------------------------------------------------------------------

RUNTIME_FIELDS = ("name", "http_url", "grpc_url", "metrics_url")


def _explain_runtime(runtime_id: int | None, expected_version: int | None, node: Node, name: str) -> None:
    if runtime_id is not None:
        runtime = _get(Runtime.objects.select_related("node"), "runtime", pk=runtime_id)
        _check_version(runtime, expected_version, f"Runtime {runtime}")
    _get(Node.objects, "node", name=node.name)
    _refuse_duplicate(
        Runtime.objects.filter(node=node, name=name).exclude(pk=runtime_id),
        f"Node {node.name!r} already has a runtime named {name!r}.",
    )


def create_runtime(
    *, actor: Actor, node_name: str, http_url: str, name: str = "triton", grpc_url: str = "", metrics_url: str = ""
) -> Runtime:
    node = _get(Node.objects, "node", name=node_name)
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
    _full_clean(runtime)
    result = _commit(
        actor,
        [{"op": "create", "kind": "runtime", "data": _item_data("runtime", runtime)}],
        [_event(EventType.RUNTIME_CREATED, node_name, runtime=name, id={"$ref": 0}, http_url=http_url)],
        explain=lambda: _explain_runtime(None, None, node, name),
    )
    return Runtime.objects.select_related("node").get(pk=_created_id(result, "runtime"))


def update_runtime(
    *, actor: Actor, runtime_id: int, changes: dict[str, Any], expected_version: int | None = None
) -> Runtime:
    runtime = _get(Runtime.objects.select_related("node"), "runtime", pk=runtime_id)
    changed = _assign(runtime, changes, RUNTIME_FIELDS, "Runtime")
    if not changed:
        return runtime
    _full_clean(runtime)
    result = _commit(
        actor,
        [_update_op("runtime", runtime, changed, expected_version)],
        [_event(EventType.RUNTIME_UPDATED, runtime.node.name, runtime=runtime.name, id=runtime.pk, changed=changed)],
        explain=lambda: _explain_runtime(runtime_id, expected_version, runtime.node, runtime.name),
    )
    return _as_committed(runtime, "runtime", result)


def _runtime_deletion(runtime_id: int, expected_version: int | None) -> Change:
    runtime = _get(Runtime.objects.select_related("node"), "runtime", pk=runtime_id)
    return (
        [{"op": "delete", "kind": "runtime", "id": runtime.pk, "expected_version": expected_version}],
        [_event(EventType.RUNTIME_DELETED, runtime.node.name, runtime=runtime.name)],
    )


def delete_runtime(*, actor: Actor, runtime_id: int, expected_version: int | None = None) -> None:
    def explain() -> None:
        runtime = _get(Runtime.objects.select_related("node"), "runtime", pk=runtime_id)
        _check_version(runtime, expected_version, f"Runtime {runtime}")

    _commit(actor, *_runtime_deletion(runtime_id, expected_version), explain=explain)


def delete_runtimes(*, actor: Actor, runtime_ids: Iterable[int]) -> None:
    """Delete several runtimes in one change: all of them, or (one refused) none."""
    _commit_all(actor, runtime_ids, lambda runtime_id: _runtime_deletion(runtime_id, None))


# ---- policies -----------------------------------------------------------------------

POLICY_FIELDS = ("name", "kind", "spec", "enabled", "priority", "description")


def _normal_spec(kind: str, spec: Any) -> dict:
    try:
        return validate_spec(kind, spec)
    except SpecError as error:
        raise InvalidChange(error.errors) from None


def _policy_event_data(policy: Policy) -> dict[str, Any]:
    return {"policy": policy.name, "kind": policy.kind, "enabled": policy.enabled}


def _explain_policy(policy_id: int | None, expected_version: int | None, name: str) -> None:
    if policy_id is not None:
        policy = _get(Policy.objects, "policy", pk=policy_id)
        _check_version(policy, expected_version, f"Policy {policy.name!r}")
    _refuse_duplicate(
        Policy.objects.filter(name=name).exclude(pk=policy_id), f"A policy named {name!r} already exists."
    )


def create_policy(
    *,
    actor: Actor,
    name: str,
    kind: str,
    spec: dict,
    enabled: bool = True,
    priority: int = 0,
    description: str = "",
) -> Policy:
    spec = _normal_spec(kind, spec)
    now = timezone.now()
    policy = Policy(
        name=name,
        kind=kind,
        spec=spec,
        enabled=enabled,
        priority=priority,
        description=description,
        owner_id=_actor_id(actor),
        created_at=now,
        updated_at=now,
    )
    _full_clean(policy)
    result = _commit(
        actor,
        [{"op": "create", "kind": "policy", "data": _item_data("policy", policy)}],
        [_event(EventType.POLICY_CREATED, **_policy_event_data(policy))],
        explain=lambda: _explain_policy(None, None, name),
    )
    return Policy.objects.select_related("owner").get(pk=_created_id(result, "policy"))


def update_policy(
    *,
    actor: Actor,
    name: str,
    changes: dict[str, Any],
    expected_version: int | None = None,
    current: Policy | None = None,
) -> Policy:
    """Change the named policy. `current`: that policy as the caller has just read it (the API's view has),
    which spares reading it again; the version check when the change applies catches a change made since.
    """
    if current is not None and current.name == name:
        policy = current
    else:
        policy = _get(Policy.objects, "policy", name=name)
    if "spec" in changes or "kind" in changes:
        changes = {**changes, "spec": _normal_spec(changes.get("kind", policy.kind), changes.get("spec", policy.spec))}
    changed = _assign(policy, changes, POLICY_FIELDS, "Policy")
    if not changed:
        return policy
    _full_clean(policy)
    result = _commit(
        actor,
        [_update_op("policy", policy, changed, expected_version)],
        [_event(EventType.POLICY_UPDATED, **_policy_event_data(policy), changed=changed)],
        explain=lambda: _explain_policy(policy.pk, expected_version, policy.name),
    )
    return _as_committed(policy, "policy", result)


def _policy_deletion(name: str, expected_version: int | None) -> Change:
    policy = _get(Policy.objects, "policy", name=name)
    return (
        [{"op": "delete", "kind": "policy", "id": policy.pk, "expected_version": expected_version}],
        [_event(EventType.POLICY_DELETED, **_policy_event_data(policy))],
    )


def delete_policy(*, actor: Actor, name: str, expected_version: int | None = None) -> None:
    def explain() -> None:
        _check_version(_get(Policy.objects, "policy", name=name), expected_version, f"Policy {name!r}")

    _commit(actor, *_policy_deletion(name, expected_version), explain=explain)


def delete_policies(*, actor: Actor, names: Iterable[str]) -> None:
    """Delete several policies in one change: all of them, or (one refused) none."""
    _commit_all(actor, names, lambda name: _policy_deletion(name, None))


# ---- API tokens ---------------------------------------------------------------------


def issue_api_token(
    *,
    actor: Actor,
    user: AbstractBaseUser,
    name: str,
    tenant: Group | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Issue a bearer token for `user`; returns it with its value, which is shown only this once."""
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidChange({"expires_at": "Must be in the future."})
    secret = new_api_token()
    token = ApiToken(
        name=name,
        user=user,
        tenant=tenant,
        digest=secret.digest,
        prefix=secret.prefix,
        expires_at=expires_at,
        created_at=timezone.now(),
    )
    _full_clean(token)
    result = _commit(
        actor,
        [{"op": "create", "kind": "api_token", "data": _item_data("api_token", token)}],
        [_event(EventType.TOKEN_ISSUED, token=name, id={"$ref": 0}, user=user.get_username(), prefix=secret.prefix)],
        explain=lambda: _refuse_duplicate(
            ApiToken.objects.filter(user_id=user.pk, name=name),
            f"User {user.get_username()!r} already has a token named {name!r}.",
        ),
    )
    return ApiToken.objects.select_related("user", "tenant").get(pk=_created_id(result, "api_token")), secret.value


def _token_revocation(token_id: int) -> Change:
    token = _get(ApiToken.objects.select_related("user"), "API token", pk=token_id)
    if token.revoked_at is not None:
        return [], []
    return (
        [{"op": "update", "kind": "api_token", "id": token.pk, "data": {"revoked_at": timezone.now().isoformat()}}],
        [_event(EventType.TOKEN_REVOKED, token=token.name, id=token.pk, user=token.user.get_username())],
    )


def revoke_api_token(*, actor: Actor, token_id: int) -> ApiToken:
    """Stop a token from working; the row stays, for the audit trail. Repeating it changes nothing."""
    _commit_all(actor, [token_id], _token_revocation)
    return ApiToken.objects.select_related("user", "tenant").get(pk=token_id)


def revoke_api_tokens(*, actor: Actor, token_ids: Iterable[int]) -> None:
    """Revoke several tokens in one change: all of them, or (one refused) none."""
    _commit_all(actor, token_ids, _token_revocation)


# ---- identity: users and groups -------------------------------------------------------


def _mark_saved(instance: models.Model, pk: int) -> None:
    """The caller's unsaved instance becomes the row the log created (usable in relations, say)."""
    instance.pk = pk
    instance._state.adding = False
    instance._state.db = type(instance).objects.db


def save_user(*, actor: Actor, user: User) -> User:
    """Create or update `user` from its fields (Django's own forms and commands call `user.save()`,
    which comes here). The password is already a hash; the log never sees a clear password."""
    _full_clean_user(user)
    if user.pk is None:
        user.date_joined = user.date_joined or timezone.now()
        result = _commit(
            actor,
            [{"op": "create", "kind": "user", "data": {**_item_data("user", user), "group_ids": []}}],
            [_event(EventType.USER_CREATED, user=user.get_username())],
        )
        _mark_saved(user, _created_id(result, "user"))
        return user
    current = User.objects.filter(pk=user.pk).first()
    if current is None:
        raise NotFound(f"No user with id {user.pk}.")
    changed = [name for name in DESIRED_FIELDS["user"] if getattr(current, name) != getattr(user, name)]
    if changed:
        _commit(
            actor,
            [{"op": "update", "kind": "user", "id": user.pk, "data": _item_data("user", user, changed)}],
            # Say that the password changed, never what it is.
            [_event(EventType.USER_UPDATED, user=user.get_username(), changed=changed)],
        )
    return user


def _full_clean_user(user: User) -> None:
    try:
        user.clean_fields(exclude=["password", "last_login"])
    except ValidationError as error:
        raise InvalidChange({field: " ".join(messages) for field, messages in error.message_dict.items()}) from None


def set_user_groups(*, actor: Actor, user: User, groups: Iterable[Group]) -> None:
    group_ids = sorted({group.pk for group in groups})
    if sorted(user.groups.values_list("pk", flat=True)) == group_ids:
        return
    _commit(
        actor,
        [{"op": "update", "kind": "user", "id": user.pk, "data": {"group_ids": group_ids}}],
        [_event(EventType.USER_UPDATED, user=user.get_username(), changed=["groups"])],
    )


def _user_deletion(user: User) -> Change:
    return [{"op": "delete", "kind": "user", "id": user.pk}], [_event(EventType.USER_DELETED, user=user.get_username())]


def delete_user(*, actor: Actor, user: User) -> None:
    _commit(actor, *_user_deletion(user))


def delete_users(*, actor: Actor, users: Iterable[User]) -> None:
    """Delete several users (and their API tokens) in one change: all of them, or (one refused) none."""
    _commit_all(actor, users, _user_deletion)


def _permission_names(group: Group) -> list[str]:
    return sorted(f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type"))


def save_group(*, actor: Actor, group: Group, permissions: Iterable[str] | None = None) -> Group:
    """Create or rename a group (a tenant); `permissions` as 'app_label.codename' when given."""
    data: dict[str, Any] = {"name": group.name}
    if permissions is not None:
        data["permissions"] = sorted(permissions)
    if not group.name or len(group.name) > 150:
        raise InvalidChange({"name": "A group needs a name of at most 150 characters."})
    if group.pk is None:
        result = _commit(
            actor,
            [{"op": "create", "kind": "group", "data": {"permissions": [], **data}}],
            [_event(EventType.GROUP_CREATED, group=group.name)],
        )
        _mark_saved(group, _created_id(result, "group"))
        return group
    current = Group.objects.filter(pk=group.pk).first()
    if current is None:
        raise NotFound(f"No group with id {group.pk}.")
    changed = [] if current.name == group.name else ["name"]
    if permissions is not None and _permission_names(current) != data["permissions"]:
        changed.append("permissions")
    if changed:
        _commit(
            actor,
            [{"op": "update", "kind": "group", "id": group.pk, "data": data}],
            [_event(EventType.GROUP_UPDATED, group=group.name, changed=changed)],
        )
    return group


def _group_deletion(group: Group) -> Change:
    return [{"op": "delete", "kind": "group", "id": group.pk}], [_event(EventType.GROUP_DELETED, group=group.name)]


def delete_group(*, actor: Actor, group: Group) -> None:
    _commit(actor, *_group_deletion(group))


def delete_groups(*, actor: Actor, groups: Iterable[Group]) -> None:
    """Delete several groups in one change: all of them, or (one refused) none."""
    _commit_all(actor, groups, _group_deletion)


# ---- backup and restore ---------------------------------------------------------------


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
        "key": _batch_key(actor),
        "actor": actor_name(actor),
        "restore": document,
        "events": [_event(EventType.STATE_RESTORED, seq=document.get("seq"), items=counts)],
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
