"""`manage.py cluster_status`: the running replica's view of the Raft group, as JSON."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from meshcore.replication.log import current_status


class Command(BaseCommand):
    help = "Print this host's replica status (leader, term, indexes, peers, state digest) as JSON."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps(current_status(), indent=2, default=str))
