"""The database as the projection of the log: committed changes written to the tables.

Each replica writes every committed batch to its own database, in one transaction with
the applied sequence number, so applying is idempotent: an entry at or below the stored
number is skipped (that is how a restart replays its journal without repeating events).
Only this module may write replicated tables; everything else reads them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.contrib.auth.models import Group, Permission
from django.db import models, transaction

from meshcore.replication import rows
from meshcore.replication.state import KINDS, DesiredState

logger = logging.getLogger(__name__)

_projecting: ContextVar[bool] = ContextVar("projecting", default=False)


class DirectWriteError(RuntimeError):
    """A write to a replicated table that did not come through the log."""


@contextmanager
def projecting() -> Iterator[None]:
    """Marks writes as coming from the apply path (the only place replicated tables change)."""
    token = _projecting.set(True)
    try:
        yield
    finally:
        _projecting.reset(token)


def is_projecting() -> bool:
    return _projecting.get()


def require_projecting(model: type[models.Model] | models.Model, action: str) -> None:
    if not _projecting.get():
        name = getattr(model, "_meta", None).label if hasattr(model, "_meta") else str(model)
        raise DirectWriteError(
            f"{action} on {name} bypasses replication. Change desired state through meshcore.registry, "
            "which commits it to the Raft log on a quorum before any database sees it."
        )


def kind_models() -> dict[str, type[models.Model]]:
    from meshcore.models import ApiToken, Model, Node, NodeToken, Policy, Runtime, User

    return {
        "group": Group,
        "user": User,
        "node": Node,
        "node_token": NodeToken,
        "model": Model,
        "runtime": Runtime,
        "policy": Policy,
        "api_token": ApiToken,
    }


# The fields each kind replicates; observed fields (health, last_seen, ...) are not among them.
DESIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "group": ("name",),
    "user": (
        "username",
        "password",
        "email",
        "first_name",
        "last_name",
        "is_active",
        "is_staff",
        "is_superuser",
        "date_joined",
    ),
    "node": ("name", "address", "roles", "zone", "labels", "draining", "version", "created_at", "updated_at"),
    "node_token": ("node_id", "digest", "prefix", "issued_at", "revoked_at"),
    "model": ("name", "revision", "platform", "config", "description", "version", "created_at", "updated_at"),
    "runtime": ("node_id", "name", "http_url", "grpc_url", "metrics_url", "version", "created_at", "updated_at"),
    "policy": (
        "name",
        "kind",
        "spec",
        "enabled",
        "priority",
        "description",
        "owner_id",
        "version",
        "created_at",
        "updated_at",
    ),
    "api_token": (
        "name",
        "user_id",
        "tenant_id",
        "digest",
        "prefix",
        "created_at",
        "expires_at",
        "revoked_at",
        "version",
    ),
}


def column_values(model: type[models.Model], kind: str, item: dict[str, Any]) -> dict[str, Any]:
    """A committed item as the row's attribute values (Python types: datetimes, not ISO strings)."""
    values = {}
    for name in DESIRED_FIELDS[kind]:
        field = model._meta.get_field(name.removesuffix("_id")) if name.endswith("_id") else model._meta.get_field(name)
        raw = item.get(name)
        values[name] = raw if name.endswith("_id") or raw is None else field.to_python(raw)
    return values


def item_from_row(kind: str, row: models.Model) -> dict[str, Any]:
    """A database row as the plain item the log holds (used to rebuild state from a database)."""
    item: dict[str, Any] = {"id": row.pk}
    for name in DESIRED_FIELDS[kind]:
        value = getattr(row, name)
        item[name] = value.isoformat() if hasattr(value, "isoformat") else value
    item.setdefault("version", 1)
    if kind == "user":
        item["group_ids"] = sorted(row.groups.values_list("pk", flat=True))
        item["permissions"] = sorted(_permission_names(row.user_permissions.all()))
    if kind == "group":
        item["permissions"] = sorted(_permission_names(row.permissions.all()))
    return item


def _permission_names(permissions: Any) -> list[str]:
    return [f"{p.content_type.app_label}.{p.codename}" for p in permissions.select_related("content_type")]


def _permissions(names: list[str]) -> list[Permission]:
    wanted = {tuple(name.split(".", 1)) for name in names}
    found = Permission.objects.select_related("content_type").filter(codename__in=[c for _, c in wanted])
    return [p for p in found if (p.content_type.app_label, p.codename) in wanted]


def apply_changes(changes: list[dict[str, Any]], *, upsert: bool = False) -> None:
    """Write one batch's changes to the tables (the caller holds the transaction).

    A create is one INSERT and an update one UPDATE of the changed columns, through `rows`: this
    runs for every write on every replica. `upsert` is for rebuilding, where rows may already exist.
    """
    models_by_kind = kind_models()
    with projecting():
        for change in changes:
            kind, item, op = change["kind"], change["item"], change["op"]
            model = models_by_kind[kind]
            if op == "unchanged":
                continue
            if op == "delete":
                model.objects.filter(pk=item["id"]).delete()
                continue
            values = column_values(model, kind, item)
            if upsert:
                model.objects.update_or_create(pk=item["id"], defaults=values)
            elif op == "create":
                rows.insert(model(pk=item["id"], **values))
            else:
                # The state bumps `version` on every update without listing it as changed.
                changed = set(change.get("changed", DESIRED_FIELDS[kind])) | {"version"}
                rows.update(model, item["id"], {k: v for k, v in values.items() if k in changed})
            _apply_memberships(kind, item, op, change.get("changed"), upsert)


def _apply_memberships(kind: str, item: dict[str, Any], op: str, changed: list[str] | None, upsert: bool) -> None:
    fields = {"user": ("group_ids", "permissions"), "group": ("permissions",)}.get(kind, ())
    if not fields or not (upsert or op == "create" or set(changed or fields) & set(fields)):
        return
    row = kind_models()[kind].objects.get(pk=item["id"])
    if kind == "user":
        row.groups.set(item.get("group_ids", []))
        row.user_permissions.set(_permissions(item.get("permissions", [])))
    else:
        row.permissions.set(_permissions(item.get("permissions", [])))


def rebuild(state: DesiredState) -> None:
    """Make the tables equal to `state` (a replica catching up from a snapshot)."""
    models_by_kind = kind_models()
    with projecting(), transaction.atomic():
        for kind in reversed(KINDS):
            models_by_kind[kind].objects.exclude(pk__in=list(state.items[kind])).delete()
        for kind in KINDS:
            apply_changes(
                [{"op": "create", "kind": kind, "item": item} for item in state.items[kind].values()], upsert=True
            )


def state_from_database() -> DesiredState:
    """The desired state the tables hold (for a database that predates the log, and for tests)."""
    state = DesiredState()
    for kind, model in kind_models().items():
        rows = model.objects.all()
        if kind == "user":
            rows = rows.prefetch_related("groups", "user_permissions__content_type")
        for row in rows:
            state.items[kind][row.pk] = item_from_row(kind, row)
        state.next_id[kind] = max(state.items[kind], default=0) + 1
    return state


class AppliedIndex:
    """The highest sequence number projected into this database, and waiting for it."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._applied = 0

    @property
    def value(self) -> int:
        return self._applied

    def advance(self, seq: int) -> None:
        with self._condition:
            if seq > self._applied:
                self._applied = seq
                self._condition.notify_all()

    def wait_for(self, seq: int, timeout: float) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: self._applied >= seq, timeout=timeout)
