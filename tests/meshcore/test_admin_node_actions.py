"""The node list's actions: drain, undrain, rotate and revoke the agent token."""

from __future__ import annotations

from django.urls import reverse

from meshcore import registry
from meshcore.models import Event, EventType, Node, NodeToken
from meshcore.tokens import token_digest
from tests.meshcore.admin_support import NODE_TOKEN, action, browser_for, messages_of

LIST_URL = reverse("admin:meshcore_node_changelist")


def test_it_drains_selected_nodes(operator, registered_node):
    registry.create_node(actor=operator, name="gpu-b", address="10.0.0.12")

    response = browser_for(operator).post(LIST_URL, action("drain_nodes", registered_node.pk), follow=True)

    assert Node.objects.get(name="gpu-a").draining is True
    assert Node.objects.get(name="gpu-b").draining is False
    drained = Event.objects.get(type=EventType.NODE_DRAINING)
    assert (drained.node_id, drained.actor) == (registered_node.pk, "olivia")
    assert any("Drained 1 node" in message for message in messages_of(response))


def test_it_undrains_selected_nodes(operator, registered_node):
    registry.set_node_draining(actor=operator, name="gpu-a", draining=True)

    browser_for(operator).post(LIST_URL, action("undrain_nodes", registered_node.pk))

    node = Node.objects.get(name="gpu-a")
    assert node.draining is False
    assert node.version == 3
    assert Event.objects.filter(type=EventType.NODE_UNDRAINED, actor="olivia", node=node).count() == 1


def test_it_rotates_the_agent_token_and_shows_the_new_one_once(operator, registered_node):
    old_token = registered_node.issued_token
    browser = browser_for(operator)

    response = browser.post(LIST_URL, action("rotate_agent_token", registered_node.pk), follow=True)

    shown = [message for message in messages_of(response) if NODE_TOKEN.search(message)]
    assert len(shown) == 1 and "it will not be shown again" in shown[0]
    new_token = NODE_TOKEN.search(shown[0]).group()
    stored = NodeToken.objects.get(node=registered_node)
    assert new_token != old_token
    assert stored.digest == token_digest(new_token) != token_digest(old_token)
    assert stored.revoked_at is None
    rotated = Event.objects.get(type=EventType.NODE_TOKEN_ROTATED)
    assert (rotated.actor, rotated.data["prefix"]) == ("olivia", new_token[:12])
    assert new_token not in browser.get(LIST_URL).text


def test_it_revokes_the_agent_token(operator, registered_node):
    browser = browser_for(operator)

    response = browser.post(LIST_URL, action("revoke_agent_token", registered_node.pk), follow=True)

    token = NodeToken.objects.get(node=registered_node)
    assert token.revoked_at is not None
    assert token.digest == token_digest(registered_node.issued_token)  # kept, but no longer usable
    assert Event.objects.filter(type=EventType.NODE_TOKEN_REVOKED, actor="olivia").count() == 1
    assert any("Revoked the agent token of 1 node" in message for message in messages_of(response))
    assert "revoked" in browser.get(LIST_URL).text


def test_it_reissues_a_revoked_token_by_rotating(operator, registered_node):
    browser = browser_for(operator)
    browser.post(LIST_URL, action("revoke_agent_token", registered_node.pk))

    response = browser.post(LIST_URL, action("rotate_agent_token", registered_node.pk), follow=True)

    new_token = NODE_TOKEN.search(" ".join(messages_of(response))).group()
    token = NodeToken.objects.get(node=registered_node)
    assert token.revoked_at is None and token.digest == token_digest(new_token)


def test_it_reports_a_node_that_vanished_and_goes_on_with_the_others(operator, registered_node, monkeypatch):
    other, _ = registry.create_node(actor=operator, name="gpu-b", address="10.0.0.12")
    real = registry.set_node_draining

    def drain_but_lose_gpu_a(*, name: str, **kwargs):
        if name == "gpu-a":
            raise registry.NotFound("No node with name='gpu-a'.")
        return real(name=name, **kwargs)

    monkeypatch.setattr(registry, "set_node_draining", drain_but_lose_gpu_a)

    response = browser_for(operator).post(LIST_URL, action("drain_nodes", registered_node.pk, other.pk), follow=True)

    assert response.status_code == 200
    shown = messages_of(response)
    assert any("gpu-a" in message and "No node" in message for message in shown)
    assert Node.objects.get(name="gpu-b").draining is True
    assert Node.objects.get(name="gpu-a").draining is False
