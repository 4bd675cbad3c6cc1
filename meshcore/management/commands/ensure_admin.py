"""`manage.py ensure_admin`: make sure an admin account exists, for first start.

The password comes from MESH_ADMIN_PASSWORD; without it one is generated and printed
once. An existing account is left as it is (its password is not reset).
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Create the admin account if it does not exist (password from MESH_ADMIN_PASSWORD, or generated)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default=os.environ.get("MESH_ADMIN_USER", "admin"))

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        users = get_user_model()
        if users.objects.filter(username=username).exists():
            self.stdout.write(f"Admin account {username!r} exists; its password is unchanged.")
            return
        password = os.environ.get("MESH_ADMIN_PASSWORD") or ""
        generated = not password
        if generated:
            password = secrets.token_urlsafe(16)
        users.objects.create_superuser(username=username, email="", password=password)
        if generated:
            self.stdout.write(
                self.style.WARNING(
                    f"Created admin account {username!r} with password: {password}\n"
                    "It is shown only this once. Set MESH_ADMIN_PASSWORD to choose it yourself."
                )
            )
        else:
            self.stdout.write(f"Created admin account {username!r} with the password from MESH_ADMIN_PASSWORD.")
