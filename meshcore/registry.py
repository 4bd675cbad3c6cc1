"""The one way to change desired state: nodes, models, runtimes, policies and tokens.

The admin, the REST API and management commands all call these functions; none of them
writes those tables directly. Each function validates, checks the version the caller
read (optimistic concurrency), applies the change in one transaction and records the
event it causes. Errors are `RegistryError`s that say what to do, mapped to HTTP
statuses by the API and to messages by the admin.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser, Group
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from meshcore.events import record_event
from meshcore.labels import validate_labels
from meshcore.models import ApiToken, EventType, Model, Node, NodeRole, NodeToken, Policy, Runtime
from meshcore.policy_specs import SpecError, validate_spec
from meshcore.tokens import new_api_token, new_node_token

ModelT = TypeVar("ModelT", bound=models.Model)
Actor = AbstractBaseUser | str | None


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


def _actor_user(actor: Actor) -> AbstractBaseUser | None:
    return actor if isinstance(actor, AbstractBaseUser) else None


# ---- shared steps -------------------------------------------------------------------


def _locked(queryset: models.QuerySet[ModelT], what: str, **lookup: Any) -> ModelT:
    try:
        return queryset.select_for_update().get(**lookup)
    except queryset.model.DoesNotExist:
        raise NotFound(f"No {what} with {', '.join(f'{k}={v!r}' for k, v in lookup.items())}.") from None


def _check_version(instance: models.Model, expected_version: int | None, what: str) -> None:
    if expected_version is not None and expected_version != instance.version:
        raise Conflict(
            f"{what} changed since you read it (you sent version {expected_version}, it is now "
            f"{instance.version}); read it again and reapply your change."
        )


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
        # Uniqueness is left to the database, which reports it as a conflict (409).
        instance.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        raise InvalidChange({field: " ".join(messages) for field, messages in error.message_dict.items()}) from None


def _save(instance: models.Model, duplicate_message: str) -> None:
    try:
        with transaction.atomic():
            instance.save()
    except IntegrityError:
        raise Conflict(duplicate_message) from None


def _bump(instance: models.Model) -> None:
    instance.version += 1
    instance.updated_at = timezone.now()


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
    with transaction.atomic():
        node = Node(name=name, address=address, zone=zone, **values)
        _full_clean(node)
        _save(node, f"A node named {name!r} is already registered.")
        secret = new_node_token()
        NodeToken.objects.create(node=node, digest=secret.digest, prefix=secret.prefix)
        record_event(EventType.NODE_JOINED, node=node, actor=actor_name(actor), data={"address": address})
    return node, secret.value


def update_node(*, actor: Actor, name: str, changes: dict[str, Any], expected_version: int | None = None) -> Node:
    if "name" in changes and changes["name"] != name:
        raise InvalidChange({"name": "A node's name cannot change; register a new node and delete this one."})
    changes = _validate_node_fields({k: v for k, v in changes.items() if k != "name"})
    with transaction.atomic():
        node = _locked(Node.objects, "node", name=name)
        _check_version(node, expected_version, f"Node {name!r}")
        changed = _assign(node, changes, NODE_FIELDS, "Node")
        if changed:
            _full_clean(node)
            _bump(node)
            node.save()
            record_event(EventType.NODE_UPDATED, node=node, actor=actor_name(actor), data={"changed": changed})
    return node


def set_node_draining(*, actor: Actor, name: str, draining: bool, expected_version: int | None = None) -> Node:
    """Drain (no new work routed or placed) or undrain a node; repeating it changes nothing."""
    with transaction.atomic():
        node = _locked(Node.objects, "node", name=name)
        _check_version(node, expected_version, f"Node {name!r}")
        if node.draining != draining:
            node.draining = draining
            _bump(node)
            node.save()
            event_type = EventType.NODE_DRAINING if draining else EventType.NODE_UNDRAINED
            record_event(event_type, node=node, actor=actor_name(actor))
    return node


def delete_node(*, actor: Actor, name: str, expected_version: int | None = None) -> None:
    with transaction.atomic():
        node = _locked(Node.objects, "node", name=name)
        _check_version(node, expected_version, f"Node {name!r}")
        # Recorded against the node so the event keeps its name once the row is gone.
        record_event(EventType.NODE_LEFT, node=node, actor=actor_name(actor), data={"node": name})
        node.delete()


def rotate_node_token(*, actor: Actor, name: str) -> tuple[Node, str]:
    """Replace the node's agent token; the old one stops working at once."""
    with transaction.atomic():
        node = _locked(Node.objects, "node", name=name)
        secret = new_node_token()
        NodeToken.objects.update_or_create(
            node=node,
            defaults={
                "digest": secret.digest,
                "prefix": secret.prefix,
                "issued_at": timezone.now(),
                "revoked_at": None,
            },
        )
        record_event(EventType.NODE_TOKEN_ROTATED, node=node, actor=actor_name(actor), data={"prefix": secret.prefix})
    return node, secret.value


def revoke_node_token(*, actor: Actor, name: str) -> Node:
    """Stop the node's agent token from working; rotate to issue a new one."""
    with transaction.atomic():
        node = _locked(Node.objects, "node", name=name)
        revoked = NodeToken.objects.filter(node=node, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if revoked:
            record_event(EventType.NODE_TOKEN_REVOKED, node=node, actor=actor_name(actor))
    return node


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


def create_model(
    *, actor: Actor, name: str, platform: str, revision: str = "1", config: dict | None = None, description: str = ""
) -> Model:
    _validate_model_config({"config": config if config is not None else {}})
    with transaction.atomic():
        model = Model(name=name, revision=revision, platform=platform, config=config or {}, description=description)
        _full_clean(model)
        _save(model, f"Model {name!r} revision {revision!r} is already in the catalog.")
        record_event(
            EventType.MODEL_CREATED, actor=actor_name(actor), data={"model": name, "revision": revision, "id": model.pk}
        )
    return model


def update_model(*, actor: Actor, model_id: int, changes: dict[str, Any], expected_version: int | None = None) -> Model:
    _validate_model_config(changes)
    with transaction.atomic():
        model = _locked(Model.objects, "model", pk=model_id)
        _check_version(model, expected_version, f"Model {model}")
        changed = _assign(model, changes, MODEL_FIELDS, "Model")
        if changed:
            _full_clean(model)
            _bump(model)
            _save(model, f"Model {model.name!r} revision {model.revision!r} is already in the catalog.")
            record_event(
                EventType.MODEL_UPDATED,
                actor=actor_name(actor),
                data={"model": model.name, "revision": model.revision, "id": model.pk, "changed": changed},
            )
    return model


def delete_model(*, actor: Actor, model_id: int, expected_version: int | None = None) -> None:
    with transaction.atomic():
        model = _locked(Model.objects, "model", pk=model_id)
        _check_version(model, expected_version, f"Model {model}")
        record_event(
            EventType.MODEL_DELETED, actor=actor_name(actor), data={"model": model.name, "revision": model.revision}
        )
        model.delete()


# ---- runtimes -----------------------------------------------------------------------

RUNTIME_FIELDS = ("name", "http_url", "grpc_url", "metrics_url")


def create_runtime(
    *, actor: Actor, node_name: str, http_url: str, name: str = "triton", grpc_url: str = "", metrics_url: str = ""
) -> Runtime:
    with transaction.atomic():
        node = _locked(Node.objects, "node", name=node_name)
        runtime = Runtime(node=node, name=name, http_url=http_url, grpc_url=grpc_url, metrics_url=metrics_url)
        _full_clean(runtime)
        _save(runtime, f"Node {node_name!r} already has a runtime named {name!r}.")
        record_event(
            EventType.RUNTIME_CREATED,
            node=node,
            actor=actor_name(actor),
            data={"runtime": name, "id": runtime.pk, "http_url": http_url},
        )
    return runtime


def update_runtime(
    *, actor: Actor, runtime_id: int, changes: dict[str, Any], expected_version: int | None = None
) -> Runtime:
    with transaction.atomic():
        runtime = _locked(Runtime.objects.select_related("node"), "runtime", pk=runtime_id)
        _check_version(runtime, expected_version, f"Runtime {runtime}")
        changed = _assign(runtime, changes, RUNTIME_FIELDS, "Runtime")
        if changed:
            _full_clean(runtime)
            _bump(runtime)
            _save(runtime, f"Node {runtime.node.name!r} already has a runtime named {runtime.name!r}.")
            record_event(
                EventType.RUNTIME_UPDATED,
                node=runtime.node,
                actor=actor_name(actor),
                data={"runtime": runtime.name, "id": runtime.pk, "changed": changed},
            )
    return runtime


def delete_runtime(*, actor: Actor, runtime_id: int, expected_version: int | None = None) -> None:
    with transaction.atomic():
        runtime = _locked(Runtime.objects.select_related("node"), "runtime", pk=runtime_id)
        _check_version(runtime, expected_version, f"Runtime {runtime}")
        record_event(
            EventType.RUNTIME_DELETED, node=runtime.node, actor=actor_name(actor), data={"runtime": runtime.name}
        )
        runtime.delete()


# ---- policies -----------------------------------------------------------------------

POLICY_FIELDS = ("name", "kind", "spec", "enabled", "priority", "description")


def _normal_spec(kind: str, spec: Any) -> dict:
    try:
        return validate_spec(kind, spec)
    except SpecError as error:
        raise InvalidChange(error.errors) from None


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
    with transaction.atomic():
        policy = Policy(
            name=name,
            kind=kind,
            spec=spec,
            enabled=enabled,
            priority=priority,
            description=description,
            owner=_actor_user(actor),
        )
        _full_clean(policy)
        _save(policy, f"A policy named {name!r} already exists.")
        record_event(EventType.POLICY_CREATED, actor=actor_name(actor), data=_policy_event_data(policy))
    return policy


def update_policy(*, actor: Actor, name: str, changes: dict[str, Any], expected_version: int | None = None) -> Policy:
    with transaction.atomic():
        policy = _locked(Policy.objects, "policy", name=name)
        _check_version(policy, expected_version, f"Policy {name!r}")
        if "spec" in changes or "kind" in changes:
            changes = {
                **changes,
                "spec": _normal_spec(changes.get("kind", policy.kind), changes.get("spec", policy.spec)),
            }
        changed = _assign(policy, changes, POLICY_FIELDS, "Policy")
        if changed:
            _full_clean(policy)
            _bump(policy)
            _save(policy, f"A policy named {policy.name!r} already exists.")
            record_event(
                EventType.POLICY_UPDATED,
                actor=actor_name(actor),
                data={**_policy_event_data(policy), "changed": changed},
            )
    return policy


def delete_policy(*, actor: Actor, name: str, expected_version: int | None = None) -> None:
    with transaction.atomic():
        policy = _locked(Policy.objects, "policy", name=name)
        _check_version(policy, expected_version, f"Policy {name!r}")
        record_event(EventType.POLICY_DELETED, actor=actor_name(actor), data=_policy_event_data(policy))
        policy.delete()


def _policy_event_data(policy: Policy) -> dict[str, Any]:
    return {"policy": policy.name, "kind": policy.kind, "version": policy.version, "enabled": policy.enabled}


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
    with transaction.atomic():
        token = ApiToken(
            name=name, user=user, tenant=tenant, digest=secret.digest, prefix=secret.prefix, expires_at=expires_at
        )
        _full_clean(token)
        _save(token, f"User {user.get_username()!r} already has a token named {name!r}.")
        record_event(
            EventType.TOKEN_ISSUED,
            actor=actor_name(actor),
            data={"token": name, "id": token.pk, "user": user.get_username(), "prefix": secret.prefix},
        )
    return token, secret.value


def revoke_api_token(*, actor: Actor, token_id: int) -> ApiToken:
    """Stop a token from working; the row stays, for the audit trail. Repeating it changes nothing."""
    with transaction.atomic():
        token = _locked(ApiToken.objects.select_related("user"), "API token", pk=token_id)
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.version += 1
            token.save(update_fields=["revoked_at", "version"])
            record_event(
                EventType.TOKEN_REVOKED,
                actor=actor_name(actor),
                data={"token": token.name, "id": token.pk, "user": token.user.get_username()},
            )
    return token
