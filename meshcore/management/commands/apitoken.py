"""`manage.py apitoken`: issue and revoke API tokens from the command line, through the registry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from meshcore import registry
from meshcore.models import ApiToken

SYSTEM_ACTOR = "cli"


class Command(BaseCommand):
    help = "Issue (printed once) or revoke API tokens."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        issue = actions.add_parser("issue", help="Issue a token for a user and print it once.")
        issue.add_argument("username")
        issue.add_argument("name", help="A name to tell the token apart, e.g. 'ci'.")
        issue.add_argument("--tenant", help="Group the token's requests count against.")
        issue.add_argument("--expires-in-days", type=int, help="Lifetime; no expiry when omitted.")
        revoke = actions.add_parser("revoke", help="Revoke a user's token by name.")
        revoke.add_argument("username")
        revoke.add_argument("name")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        try:
            getattr(self, f"handle_{action}")(**options)
        except registry.RegistryError as error:
            raise CommandError(error.message) from None

    def handle_issue(self, username: str, name: str, tenant: str | None, expires_in_days: int | None, **_: Any) -> None:
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user {username!r}.")
        group = None
        if tenant:
            group = Group.objects.filter(name=tenant).first()
            if group is None:
                raise CommandError(f"No group {tenant!r}; create it in the admin first.")
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        _, value = registry.issue_api_token(
            actor=SYSTEM_ACTOR, user=user, name=name, tenant=group, expires_at=expires_at
        )
        self.stdout.write(f"API token {name!r} for {username} (shown only now, store it):\n{value}")

    def handle_revoke(self, username: str, name: str, **_: Any) -> None:
        token = ApiToken.objects.filter(user__username=username, name=name).first()
        if token is None:
            raise CommandError(f"User {username!r} has no token named {name!r}.")
        registry.revoke_api_token(actor=SYSTEM_ACTOR, token_id=token.pk)
        self.stdout.write(f"Token {name!r} of {username} no longer works.")
