"""The node and apitoken commands change the mesh through the registry and print secrets once."""

import pytest
from django.core.management import CommandError, call_command

from meshcore.models import ApiToken, Event, Node
from meshcore.tokens import token_digest


def run(*args):
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_it_registers_a_node_and_prints_its_token_once(db):
    output = run("node", "register", "gpu-c", "--address", "10.0.0.3", "--role", "gpu", "--label", "gpu-type=a100")
    token = output.strip().splitlines()[-1]
    node = Node.objects.get(name="gpu-c")
    assert node.labels == {"gpu-type": "a100"}
    assert node.token.digest == token_digest(token)
    assert Event.objects.filter(type="NODE_JOINED", node=node, actor="cli").count() == 1


def test_it_drains_and_undrains(registered_node):
    run("node", "drain", "gpu-a")
    assert Node.objects.get(name="gpu-a").draining
    run("node", "undrain", "gpu-a")
    assert not Node.objects.get(name="gpu-a").draining


def test_it_rotates_a_node_token(registered_node):
    new_token = run("node", "rotate-token", "gpu-a").strip().splitlines()[-1]
    registered_node.token.refresh_from_db()
    assert registered_node.token.digest == token_digest(new_token)
    assert registered_node.token.digest != token_digest(registered_node.issued_token)


def test_it_explains_registry_refusals(registered_node):
    with pytest.raises(CommandError, match="already registered"):
        run("node", "register", "gpu-a", "--address", "10.0.0.1")
    with pytest.raises(CommandError, match="No node"):
        run("node", "drain", "nope")
    with pytest.raises(CommandError, match="not key=value"):
        run("node", "register", "gpu-z", "--address", "x", "--label", "broken")


def test_it_issues_and_revokes_api_tokens(operator):
    value = run("apitoken", "issue", operator.username, "ci", "--expires-in-days", "30").strip().splitlines()[-1]
    token = ApiToken.objects.get(user=operator, name="ci")
    assert token.digest == token_digest(value)
    assert token.expires_at is not None
    run("apitoken", "revoke", operator.username, "ci")
    token.refresh_from_db()
    assert token.revoked_at is not None
    with pytest.raises(CommandError, match="No active user"):
        run("apitoken", "issue", "nobody", "x")


def test_import_state_names_the_kinds_a_restored_replica_holds_differently():
    from meshcore.management.commands.import_state import differing_kinds

    backup = {"node": [{"id": 1, "name": "gpu-a", "roles": ["gpu"]}], "policy": [], "model": []}
    same_in_memory = {"node": [{"id": 1, "name": "gpu-a", "roles": ("gpu",)}], "policy": [], "model": []}
    agent_wrote_meanwhile = {**same_in_memory, "node": [*same_in_memory["node"], {"id": 2, "name": "vm"}]}

    assert differing_kinds(same_in_memory, backup) == []
    assert differing_kinds(agent_wrote_meanwhile, backup) == ["node"]
    assert differing_kinds({**same_in_memory, "policy": [{"id": 1}]}, {**backup, "model": [{"id": 3}]}) == [
        "model",
        "policy",
    ]
