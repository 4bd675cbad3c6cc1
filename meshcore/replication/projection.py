"""The database as the projection of the log: committed changes written to the tables.

Each replica writes every committed batch to its own database, in one transaction with
the applied sequence number, so applying is idempotent: an entry at or below the stored
number is skipped (that is how a restart replays its journal without repeating events).
Only this module may write replicated tables; everything else reads them.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.apps import apps
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.db import models, transaction
from django.utils import timezone

from meshcore.kinds import DESIRED_FIELDS, KIND_TABLE, KINDS
from meshcore.models import ProjectionState
from meshcore.replication import rows
from meshcore.replication.desired import DesiredState
from meshcore.replication.hooks import projection_hooks
from meshcore.writeguard import projecting

logger = logging.getLogger(__name__)


def kind_models() -> dict[str, type[models.Model]]:
    """Each replicated kind's Django model, from the kinds table."""
    return {kind.name: apps.get_model(kind.model) for kind in KIND_TABLE}


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


# A projected batch, its result and the events its projection recorded, for `announce`.
Projected = tuple[dict[str, Any], dict[str, Any], list[Any]]


class DatabaseProjection:
    """Applies committed batches to this replica's database, once each, with their events."""

    def __init__(self) -> None:
        self.applied = AppliedIndex()

    def prepare(self) -> None:
        row = ProjectionState.objects.filter(pk=1).first()
        self.applied.advance(row.applied_seq if row else 0)

    def apply_committed(self, batch: dict[str, Any], result: dict[str, Any]) -> None:
        self.apply_committed_group([(batch, result)])

    def apply_committed_group(self, committed: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        """Project batches in their commit order, then announce their events."""
        self.announce(self.project_group(committed))

    def project_group(self, committed: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[Projected]:
        """Write batches in their commit order, in one transaction (under load, one commit for many).

        Returns what `announce` publishes: the caller may leave that to another thread.
        """
        projected = []
        applied = self.applied.value
        # Batches replayed from the journal at start are already in this database.
        fresh = [(batch, result) for batch, result in committed if result["seq"] > applied]
        with transaction.atomic():
            # Claim the sequence numbers first: a batch this database already has changes nothing.
            # One claim for the whole group when none of it is here yet; else one per batch.
            claimed = bool(fresh) and rows.update_where(
                ProjectionState,
                {"applied_seq": fresh[-1][1]["seq"], "updated_at": timezone.now()},
                {"id": 1},
                below={"applied_seq": fresh[0][1]["seq"]},
            )
            for batch, result in fresh:
                seq = result["seq"]
                if seq <= applied:
                    continue  # the same batch twice in a group, or one another process projected
                claim = {"applied_seq": seq, "updated_at": timezone.now()}
                if not claimed and not rows.update_where(ProjectionState, claim, {"id": 1}, below={"applied_seq": seq}):
                    row, created = ProjectionState.objects.get_or_create(pk=1, defaults={"applied_seq": seq})
                    if not created:
                        applied = max(applied, row.applied_seq)
                        continue
                apply_changes(result["changes"])
                projected.append((batch, result, projection_hooks.record_events(batch, result)))
                applied = seq
        self.applied.advance(applied)
        projection_hooks.projected([(batch, result) for batch, result, _ in projected])
        return projected

    def announce(self, projected: list[Projected]) -> None:
        """Publish the events of projected batches to this process's channel layer (best effort)."""
        announced = []
        for batch, result, events in projected:
            # Several replicas may share one channel layer: the first to project a change announces it.
            if (
                events
                and result.get("announce", True)
                and cache.add(f"infermesh:event-published:{batch.get('key')}:{result['seq']}", 1, timeout=3600)
            ):
                announced.extend(events)
        projection_hooks.publish_events(announced)  # one hop to the server's loop for them all

    def rebuild_from(self, state: DesiredState) -> None:
        if state.seq <= self.applied.value:
            return
        with transaction.atomic():
            rebuild(state)
            ProjectionState.objects.update_or_create(
                pk=1, defaults={"applied_seq": state.seq, "updated_at": timezone.now()}
            )
        self.applied.advance(state.seq)
        projection_hooks.projected(None)
        logger.info("rebuilt the database projection from a snapshot at seq %d", state.seq)
