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
        self.stdout.write(f"Restored {len(result['changes'])} items from {file}.")
        # The digest covers the log's sequence number too, so a restored cluster's differs from the backup's:
        # compare the items themselves.
        differing = differing_kinds(registry.export_state()["items"], document["items"])
        if not differing:
            self.stdout.write("Checked: this replica now holds exactly the backup's items.")
        else:
            self.stderr.write(
                f"Warning: this replica's {', '.join(differing)} differ from the backup's (was something else "
                "writing to the new cluster, such as an embedded agent registering its host?)."
            )


def differing_kinds(held: dict[str, Any], backup: dict[str, Any]) -> list[str]:
    """The kinds whose items differ, compared as JSON (a backup read from a file has lists, not tuples)."""

    def canonical(items: Any) -> str:
        return json.dumps(items, sort_keys=True, default=str)

    return sorted(kind for kind in {*held, *backup} if canonical(held.get(kind)) != canonical(backup.get(kind)))
