"""Policies: pin, quota, acl and load_balancing, validated against their spec (meshcore.policy_specs)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from meshcore.kinds import KIND_BY_NAME
from meshcore.models import EventType, Policy
from meshcore.policy_specs import SpecError, validate_spec
from meshcore.registry import committing
from meshcore.registry.committing import Actor, Change, InvalidChange

POLICY_FIELDS = KIND_BY_NAME["policy"].editable


def _normal_spec(kind: str, spec: Any) -> dict:
    try:
        return validate_spec(kind, spec)
    except SpecError as error:
        raise InvalidChange(error.errors) from None


def _policy_event_data(policy: Policy) -> dict[str, Any]:
    return {"policy": policy.name, "kind": policy.kind, "enabled": policy.enabled}


def _explain_policy(policy_id: int | None, expected_version: int | None, name: str) -> None:
    if policy_id is not None:
        policy = committing.get_row(Policy.objects, "policy", pk=policy_id)
        committing.check_version(policy, expected_version, f"Policy {policy.name!r}")
    committing.refuse_duplicate(
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
        owner_id=committing.actor_id(actor),
        created_at=now,
        updated_at=now,
    )
    committing.full_clean(policy)
    result = committing.commit(
        actor,
        [{"op": "create", "kind": "policy", "data": committing.item_data("policy", policy)}],
        [committing.event_spec(EventType.POLICY_CREATED, **_policy_event_data(policy))],
        explain=lambda: _explain_policy(None, None, name),
    )
    return Policy.objects.select_related("owner").get(pk=committing.created_id(result, "policy"))


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
        policy = committing.get_row(Policy.objects, "policy", name=name)
    if "spec" in changes or "kind" in changes:
        changes = {**changes, "spec": _normal_spec(changes.get("kind", policy.kind), changes.get("spec", policy.spec))}
    changed = committing.assign_changes(policy, changes, POLICY_FIELDS, "Policy")
    if not changed:
        return policy
    committing.full_clean(policy)
    result = committing.commit(
        actor,
        [committing.update_op("policy", policy, changed, expected_version)],
        [committing.event_spec(EventType.POLICY_UPDATED, **_policy_event_data(policy), changed=changed)],
        explain=lambda: _explain_policy(policy.pk, expected_version, policy.name),
    )
    return committing.as_committed(policy, "policy", result)


def _policy_deletion(name: str, expected_version: int | None) -> Change:
    policy = committing.get_row(Policy.objects, "policy", name=name)
    return (
        [{"op": "delete", "kind": "policy", "id": policy.pk, "expected_version": expected_version}],
        [committing.event_spec(EventType.POLICY_DELETED, **_policy_event_data(policy))],
    )


def delete_policy(*, actor: Actor, name: str, expected_version: int | None = None) -> None:
    def explain() -> None:
        committing.check_version(
            committing.get_row(Policy.objects, "policy", name=name), expected_version, f"Policy {name!r}"
        )

    committing.commit(actor, *_policy_deletion(name, expected_version), explain=explain)


def delete_policies(*, actor: Actor, names: Iterable[str]) -> None:
    """Delete several policies in one change: all of them, or (one refused) none."""
    committing.commit_all(actor, names, lambda name: _policy_deletion(name, None))
