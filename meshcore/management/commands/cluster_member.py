"""`manage.py cluster_member add|remove HOST:PORT`: change the Raft group one replica at a time."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from meshcore.replication.addresses import raft_address_problem
from meshcore.replication.log import change_membership
from meshcore.replication.raft import NoQuorum


class Error(CommandError):
    """Django prints a command's error as `<class name>: <message>`: this one reads `Error: ...` (exit status 1)."""


class Command(BaseCommand):
    help = (
        "Add a replica (start it first with MESH_RAFT_PEERS = every current member) or remove one. "
        "Then update MESH_RAFT_PEERS on every replica so their next restart agrees."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("change", choices=["add", "remove"])
        parser.add_argument("address", help="The replica's MESH_RAFT_ADDRESS, HOST:PORT.")

    def handle(self, *args: Any, change: str, address: str, **options: Any) -> None:
        # The same check as MESH_RAFT_PEERS and the API: a bad address must never reach the Raft log.
        if problem := raft_address_problem(address):
            raise Error(problem)
        try:
            status = change_membership(change, address)
        except (NoQuorum, ValueError) as error:
            raise Error(str(error)) from None
        members = sorted([status["self"], *(peer["address"] for peer in status["peers"])])
        self.stdout.write(f"{'Added' if change == 'add' else 'Removed'} {address}. Members now: {json.dumps(members)}")
