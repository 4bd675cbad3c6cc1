"""Committing a change to desired state: the batch, its idempotency key, its actor, and the errors.

Every write of the registry goes through `commit`: the change becomes a batch of plain
operations and events, proposed to this process's log (Raft, or the local log in tests);
the call returns once a quorum committed it and this replica's database applied it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import datetime
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.utils import timezone

from meshcore.kinds import DESIRED_FIELDS
from meshcore.replication import rows
from meshcore.replication.desired import LOG_FORMAT
from meshcore.replication.log import LocalLog, current_log
from meshcore.replication.projection import column_values
from meshcore.replication.raft import NoQuorum

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
acting: ContextVar[Actor] = ContextVar("registry_acting", default=None)

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


def actor_id(actor: Actor) -> int | None:
    return actor.pk if isinstance(actor, AbstractBaseUser) else None


@contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Attribute writes that name no actor (`user.save()` from Django's own forms) to `actor`."""
    token = acting.set(actor)
    try:
        yield
    finally:
        acting.reset(token)


# ---- committing ---------------------------------------------------------------------


def batch_key(actor: Actor) -> str:
    """The request's idempotency key, per actor (two clients may pick the same key), or a new one."""
    key = idempotency_key.next_batch_key()
    return f"{actor_name(actor)}:{key}" if key else uuid.uuid4().hex


def commit(
    actor: Actor, ops: list[dict[str, Any]], events: list[dict[str, Any]], explain: Explain | None = None
) -> dict[str, Any]:
    if actor is None:
        actor = acting.get()
    log = current_log()
    if connection.in_atomic_block and not isinstance(log, LocalLog):
        # The projection is written by another thread; a transaction held here would hide it or block it.
        raise RuntimeError("meshcore.registry writes wait for the Raft commit; call them outside transaction.atomic().")
    batch = {"format": LOG_FORMAT, "key": batch_key(actor), "actor": actor_name(actor), "ops": ops, "events": events}
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


def commit_all(actor: Actor, items: Iterable[ItemT], change: Callable[[ItemT], Change]) -> None:
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
        commit(actor, ops, events, explain=lambda: [change(item) for item in items])


def created_id(result: dict[str, Any], kind: str) -> int:
    return next(c["item"]["id"] for c in result["changes"] if c["op"] == "create" and c["kind"] == kind)


def plain_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def item_data(kind: str, instance: models.Model, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """The instance's replicated fields as plain data (the log holds no ORM objects)."""
    names = [name for name in (fields or DESIRED_FIELDS[kind]) if name != "version"]
    return {name: plain_value(getattr(instance, name)) for name in names}


def event_spec(event_type: str, node: str | None = None, /, **data: Any) -> dict[str, Any]:
    """An event for the batch; `node` names the node it concerns (the data may hold a "node" too)."""
    return {"type": str(event_type), "node": node, "data": data}


def get_row(queryset: models.QuerySet[ModelT] | models.Manager[ModelT], what: str, **lookup: Any) -> ModelT:
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


def check_version(instance: models.Model, expected_version: int | None, what: str) -> None:
    """Refuse a stale change, naming it (used to explain the log's refusal)."""
    if expected_version is not None and expected_version != instance.version:
        raise Conflict(
            f"{what} changed since you read it (you sent version {expected_version}, it is now "
            f"{instance.version}); read it again and reapply your change."
        )


def refuse_duplicate(duplicates: models.QuerySet, message: str) -> None:
    """Refuse a duplicate, naming it (used to explain the log's refusal)."""
    if duplicates.exists():
        raise Conflict(message)


def assign_changes(instance: models.Model, changes: dict[str, Any], allowed: Iterable[str], what: str) -> list[str]:
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


def full_clean(instance: models.Model) -> None:
    try:
        # Uniqueness is decided when the batch applies, and reported as a conflict (409).
        instance.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        raise InvalidChange({field: " ".join(messages) for field, messages in error.message_dict.items()}) from None


def as_committed(instance: ModelT, kind: str, result: dict[str, Any]) -> ModelT:
    """`instance` with the values its update committed: what the database holds now, without a second query."""
    for change in result["changes"]:
        if change["kind"] == kind and change["item"]["id"] == instance.pk:
            for name, value in column_values(type(instance), kind, change["item"]).items():
                setattr(instance, name, value)  # a changed foreign key drops its cached object
            return instance
    instance.refresh_from_db()
    return instance


def update_op(kind: str, instance: models.Model, changed: list[str], expected_version: int | None) -> dict[str, Any]:
    data = item_data(kind, instance, changed)
    if "updated_at" in DESIRED_FIELDS[kind]:
        data["updated_at"] = timezone.now().isoformat()
    return {"op": "update", "kind": kind, "id": instance.pk, "data": data, "expected_version": expected_version}
