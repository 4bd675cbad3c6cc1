"""The write guard: replicated tables change only on the projection's apply path.

A leaf module (it imports nothing of the project), so models, replication and everything
above can use it. Writes that Django's own flows make to users (createsuperuser, password
changes) are redirected to the registry through a hook registered at app start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

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


def require_projecting(model: Any, action: str) -> None:
    """Raise DirectWriteError unless the caller is the projection."""
    if not _projecting.get():
        name = model._meta.label if hasattr(model, "_meta") else str(model)
        raise DirectWriteError(
            f"{action} on {name} bypasses replication. Change desired state through meshcore.registry, "
            "which commits it to the Raft log on a quorum before any database sees it."
        )


class UserWrites:
    """Where a user saved or deleted outside the projection goes: the registry (set at app start)."""

    save: Callable[[Any], Any] | None = None
    delete: Callable[[Any], Any] | None = None

    @classmethod
    def route_to(cls, save: Callable[[Any], Any], delete: Callable[[Any], Any]) -> None:
        cls.save, cls.delete = save, delete

    @classmethod
    def saving(cls, user: Any) -> None:
        if cls.save is None:
            raise DirectWriteError("Users are replicated: the registry's hook is not installed (is meshcore loaded?).")
        cls.save(user)

    @classmethod
    def deleting(cls, user: Any) -> None:
        if cls.delete is None:
            raise DirectWriteError("Users are replicated: the registry's hook is not installed (is meshcore loaded?).")
        cls.delete(user)


# Our own replicated models guard themselves (meshcore.models); Group and the many-to-many
# tables are Django's, so signals guard them.


def _guard_group(sender: type, instance: Any, **kwargs: Any) -> None:
    require_projecting(sender, "Saving or deleting a group")


def _guard_membership(sender: type, instance: Any, action: str, **kwargs: Any) -> None:
    if action.startswith("pre_"):
        require_projecting(sender, f"Changing {sender._meta.verbose_name}")


def connect_auth_guards() -> None:
    """Guard Django's auth tables (groups, memberships, permissions), which are replicated too."""
    from django.contrib.auth import get_user_model  # the user model is known only once apps are loaded
    from django.contrib.auth.models import Group
    from django.db.models.signals import m2m_changed, pre_delete, pre_save

    pre_save.connect(_guard_group, sender=Group, dispatch_uid="meshcore-guard-group-save")
    pre_delete.connect(_guard_group, sender=Group, dispatch_uid="meshcore-guard-group-delete")
    user_model = get_user_model()
    for through in (user_model.groups.through, user_model.user_permissions.through, Group.permissions.through):
        m2m_changed.connect(_guard_membership, sender=through, dispatch_uid=f"meshcore-guard-{through.__name__}")
