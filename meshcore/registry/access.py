"""Who may do what: API tokens, users and groups (identity is replicated too)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, Group
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from meshcore.kinds import DESIRED_FIELDS
from meshcore.models import ApiToken, EventType, User
from meshcore.registry import committing
from meshcore.registry.committing import Actor, Change, InvalidChange, NotFound
from meshcore.tokens import new_api_token


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
    committing.full_clean(token)
    result = committing.commit(
        actor,
        [{"op": "create", "kind": "api_token", "data": committing.item_data("api_token", token)}],
        [
            committing.event_spec(
                EventType.TOKEN_ISSUED, token=name, id={"$ref": 0}, user=user.get_username(), prefix=secret.prefix
            )
        ],
        explain=lambda: committing.refuse_duplicate(
            ApiToken.objects.filter(user_id=user.pk, name=name),
            f"User {user.get_username()!r} already has a token named {name!r}.",
        ),
    )
    return ApiToken.objects.select_related("user", "tenant").get(
        pk=committing.created_id(result, "api_token")
    ), secret.value


def _token_revocation(token_id: int) -> Change:
    token = committing.get_row(ApiToken.objects.select_related("user"), "API token", pk=token_id)
    if token.revoked_at is not None:
        return [], []
    return (
        [{"op": "update", "kind": "api_token", "id": token.pk, "data": {"revoked_at": timezone.now().isoformat()}}],
        [committing.event_spec(EventType.TOKEN_REVOKED, token=token.name, id=token.pk, user=token.user.get_username())],
    )


def revoke_api_token(*, actor: Actor, token_id: int) -> ApiToken:
    """Stop a token from working; the row stays, for the audit trail. Repeating it changes nothing."""
    committing.commit_all(actor, [token_id], _token_revocation)
    return ApiToken.objects.select_related("user", "tenant").get(pk=token_id)


def revoke_api_tokens(*, actor: Actor, token_ids: Iterable[int]) -> None:
    """Revoke several tokens in one change: all of them, or (one refused) none."""
    committing.commit_all(actor, token_ids, _token_revocation)


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
        result = committing.commit(
            actor,
            [{"op": "create", "kind": "user", "data": {**committing.item_data("user", user), "group_ids": []}}],
            [committing.event_spec(EventType.USER_CREATED, user=user.get_username())],
        )
        _mark_saved(user, committing.created_id(result, "user"))
        return user
    current = User.objects.filter(pk=user.pk).first()
    if current is None:
        raise NotFound(f"No user with id {user.pk}.")
    changed = [name for name in DESIRED_FIELDS["user"] if getattr(current, name) != getattr(user, name)]
    if changed:
        committing.commit(
            actor,
            [{"op": "update", "kind": "user", "id": user.pk, "data": committing.item_data("user", user, changed)}],
            # Say that the password changed, never what it is.
            [committing.event_spec(EventType.USER_UPDATED, user=user.get_username(), changed=changed)],
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
    committing.commit(
        actor,
        [{"op": "update", "kind": "user", "id": user.pk, "data": {"group_ids": group_ids}}],
        [committing.event_spec(EventType.USER_UPDATED, user=user.get_username(), changed=["groups"])],
    )


def _user_deletion(user: User) -> Change:
    return [{"op": "delete", "kind": "user", "id": user.pk}], [
        committing.event_spec(EventType.USER_DELETED, user=user.get_username())
    ]


def delete_user(*, actor: Actor, user: User) -> None:
    committing.commit(actor, *_user_deletion(user))


def delete_users(*, actor: Actor, users: Iterable[User]) -> None:
    """Delete several users (and their API tokens) in one change: all of them, or (one refused) none."""
    committing.commit_all(actor, users, _user_deletion)


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
        result = committing.commit(
            actor,
            [{"op": "create", "kind": "group", "data": {"permissions": [], **data}}],
            [committing.event_spec(EventType.GROUP_CREATED, group=group.name)],
        )
        _mark_saved(group, committing.created_id(result, "group"))
        return group
    current = Group.objects.filter(pk=group.pk).first()
    if current is None:
        raise NotFound(f"No group with id {group.pk}.")
    changed = [] if current.name == group.name else ["name"]
    if permissions is not None and _permission_names(current) != data["permissions"]:
        changed.append("permissions")
    if changed:
        committing.commit(
            actor,
            [{"op": "update", "kind": "group", "id": group.pk, "data": data}],
            [committing.event_spec(EventType.GROUP_UPDATED, group=group.name, changed=changed)],
        )
    return group


def _group_deletion(group: Group) -> Change:
    return [{"op": "delete", "kind": "group", "id": group.pk}], [
        committing.event_spec(EventType.GROUP_DELETED, group=group.name)
    ]


def delete_group(*, actor: Actor, group: Group) -> None:
    committing.commit(actor, *_group_deletion(group))


def delete_groups(*, actor: Actor, groups: Iterable[Group]) -> None:
    """Delete several groups in one change: all of them, or (one refused) none."""
    committing.commit_all(actor, groups, _group_deletion)
