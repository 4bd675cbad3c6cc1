"""`manage.py export_state FILE`: back up the desired state held by this host's replica."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from meshcore import registry
from meshcore.replication.raft import NoQuorum


class Command(BaseCommand):
    help = (
        "Write a consistent backup of the desired state (nodes, models, policies, tokens, users and their "
        "password hashes: keep it secret) to FILE. Reads the local replica; needs no quorum."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)

    def handle(self, *args: Any, file: Path, **options: Any) -> None:
        try:
            document = registry.export_state()
        except NoQuorum as error:
            raise CommandError(str(error)) from None
        # Owner-only from the first byte: the backup holds password hashes and token digests.
        descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(document, out, indent=1, sort_keys=True, default=str)
        counts = ", ".join(f"{len(items)} {kind}" for kind, items in document["items"].items())
        self.stdout.write(f"Wrote {file} (seq {document['seq']}, digest {document['digest'][:12]}): {counts}.")
