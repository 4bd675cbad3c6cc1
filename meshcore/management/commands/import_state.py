"""`manage.py import_state FILE`: bootstrap a fresh cluster from a backup made by export_state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from meshcore import registry


class Command(BaseCommand):
    help = "Load a backup into a cluster that holds no desired state yet (committed on a quorum like any write)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args: Any, file: Path, **options: Any) -> None:
        try:
            document = json.loads(file.read_text())
        except (OSError, ValueError) as error:
            raise CommandError(f"Cannot read {file}: {error}") from None
        try:
            result = registry.restore_state(actor="cli", document=document)
        except registry.RegistryError as error:
            raise CommandError(error.message) from None
        self.stdout.write(
            f"Restored {len(result['changes'])} items from {file} (backup digest {document['digest'][:12]})."
        )
