"""Loud failures for writes to replicated auth tables that Django owns (groups, memberships).

Our own replicated models guard themselves (meshcore.models.ReplicatedModel); Group and the
many-to-many tables are Django's, so signals guard them.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models.signals import m2m_changed, pre_delete, pre_save

from meshcore.replication.projection import require_projecting


def _guard_group(sender: type, instance: Group, **kwargs: Any) -> None:
    require_projecting(Group, "Saving or deleting a group")


def _guard_membership(sender: type, instance: Any, action: str, **kwargs: Any) -> None:
    if action.startswith("pre_"):
        require_projecting(sender, f"Changing {sender._meta.verbose_name}")


def connect() -> None:
    pre_save.connect(_guard_group, sender=Group, dispatch_uid="meshcore-guard-group-save")
    pre_delete.connect(_guard_group, sender=Group, dispatch_uid="meshcore-guard-group-delete")
    user_model = get_user_model()
    for through in (user_model.groups.through, user_model.user_permissions.through, Group.permissions.through):
        m2m_changed.connect(_guard_membership, sender=through, dispatch_uid=f"meshcore-guard-{through.__name__}")
