"""`manage.py node`: register and operate nodes from the command line, through the registry."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from meshcore import registry
from meshcore.models import Node

SYSTEM_ACTOR = "cli"


class Command(BaseCommand):
    help = "Register, drain, undrain, rotate or revoke the token of, and list nodes."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        register = actions.add_parser("register", help="Register a node and print its agent token once.")
        register.add_argument("name")
        register.add_argument("--address", required=True)
        register.add_argument("--role", action="append", dest="roles", default=[], help="gpu, control or router.")
        register.add_argument("--zone", default="")
        register.add_argument("--label", action="append", dest="labels", default=[], help="key=value")
        for name, text in (
            ("drain", "Stop routing and placing new work on the node."),
            ("undrain", "Let the node take new work again."),
            ("rotate-token", "Issue a new agent token (printed once); the old one stops working."),
            ("revoke-token", "Stop the node's agent token from working."),
            ("delete", "Remove the node from the registry."),
        ):
            actions.add_parser(name, help=text).add_argument("name")
        actions.add_parser("list", help="List nodes with their desired and observed state.")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        try:
            getattr(self, "handle_" + action.replace("-", "_"))(**options)
        except registry.RegistryError as error:
            raise CommandError(error.message) from None

    def handle_register(
        self, name: str, address: str, roles: list[str], zone: str, labels: list[str], **_: Any
    ) -> None:
        parsed = {}
        for label in labels:
            key, separator, value = label.partition("=")
            if not separator:
                raise CommandError(f"--label {label!r} is not key=value.")
            parsed[key] = value
        node, token = registry.create_node(
            actor=SYSTEM_ACTOR, name=name, address=address, roles=roles, zone=zone, labels=parsed
        )
        self.stdout.write(f"Registered node {node.name}. Agent token (shown only now, store it):\n{token}")

    def handle_drain(self, name: str, **_: Any) -> None:
        registry.set_node_draining(actor=SYSTEM_ACTOR, name=name, draining=True)
        self.stdout.write(f"Node {name} is draining: no new work is routed or placed on it.")

    def handle_undrain(self, name: str, **_: Any) -> None:
        registry.set_node_draining(actor=SYSTEM_ACTOR, name=name, draining=False)
        self.stdout.write(f"Node {name} takes new work again.")

    def handle_rotate_token(self, name: str, **_: Any) -> None:
        _, token = registry.rotate_node_token(actor=SYSTEM_ACTOR, name=name)
        self.stdout.write(f"New agent token for {name} (shown only now, store it):\n{token}")

    def handle_revoke_token(self, name: str, **_: Any) -> None:
        registry.revoke_node_token(actor=SYSTEM_ACTOR, name=name)
        self.stdout.write(f"The agent token of {name} no longer works.")

    def handle_delete(self, name: str, **_: Any) -> None:
        registry.delete_node(actor=SYSTEM_ACTOR, name=name)
        self.stdout.write(f"Node {name} removed.")

    def handle_list(self, **_: Any) -> None:
        for node in Node.objects.all():
            state = {"roles": node.roles, "zone": node.zone, "draining": node.draining, "health": node.health}
            self.stdout.write(f"{node.name}\t{node.address}\t{json.dumps(state)}")
