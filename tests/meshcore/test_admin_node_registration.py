"""Registering, editing and deleting nodes in the admin goes through the registry."""

from __future__ import annotations

import json

from django.contrib.admin.models import ADDITION, DELETION, LogEntry
from django.urls import reverse

from meshcore import registry
from meshcore.models import Event, EventType, Gpu, Node, NodeToken
from meshcore.tokens import token_digest
from tests.meshcore.admin_support import NODE_TOKEN, browser_for, loaded_form, messages_of
from tests.meshcore.api_support import data_of, events_since, last_event_id

ADD_URL = reverse("admin:meshcore_node_add")


def change_url(node: Node) -> str:
    return reverse("admin:meshcore_node_change", args=[node.pk])


def test_it_registers_a_node_and_shows_its_token_once(operator):
    browser = browser_for(operator)
    response = browser.post(
        ADD_URL,
        {"name": "gpu-b", "address": "10.0.0.12", "roles": ["gpu", "router"], "zone": "eu-2", "labels": "{}"},
        follow=True,
    )

    node = Node.objects.get(name="gpu-b")
    token_messages = [message for message in messages_of(response) if NODE_TOKEN.search(message)]
    assert len(token_messages) == 1
    assert "store it now, it will not be shown again" in token_messages[0]
    token = NODE_TOKEN.search(token_messages[0]).group()
    assert NodeToken.objects.get(node=node).digest == token_digest(token)
    assert token not in browser.get(change_url(node)).text
    assert token not in browser.get(reverse("admin:meshcore_node_changelist")).text


def test_it_records_the_registration_as_the_operator(operator):
    browser_for(operator).post(ADD_URL, {"name": "gpu-b", "address": "10.0.0.12", "labels": "{}"})

    node = Node.objects.get(name="gpu-b")
    joined = Event.objects.get(type=EventType.NODE_JOINED)
    assert (joined.node_id, joined.actor) == (node.pk, "olivia")
    # The admin's own history points at the row the registry created.
    entry = LogEntry.objects.get(action_flag=ADDITION)
    assert (entry.object_id, entry.object_repr, entry.user_id) == (str(node.pk), "gpu-b", operator.pk)


def test_it_saves_roles_from_checkboxes_and_labels_from_json(operator):
    browser_for(operator).post(
        ADD_URL,
        {
            "name": "gpu-c",
            "address": "gpu-c.internal",
            "roles": ["router", "gpu"],
            "labels": json.dumps({"gpu-type": "a100", "example.com/rack": "r7"}),
        },
    )

    node = Node.objects.get(name="gpu-c")
    assert node.roles == ["gpu", "router"]
    assert node.labels == {"gpu-type": "a100", "example.com/rack": "r7"}


def test_it_shows_label_errors_and_registers_nothing(operator):
    before = last_event_id()

    response = browser_for(operator).post(
        ADD_URL, {"name": "gpu-d", "address": "10.0.0.14", "labels": json.dumps({"bad key!": "x"})}
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "Invalid label key 'bad key!'" in errors["labels"][0]
    assert not Node.objects.filter(name="gpu-d").exists()
    assert events_since(before) == []


def test_it_refuses_an_unknown_role(operator):
    response = browser_for(operator).post(ADD_URL, {"name": "gpu-e", "address": "10.0.0.15", "roles": ["storage"]})

    assert "roles" in response.context["adminform"].form.errors
    assert not Node.objects.filter(name="gpu-e").exists()


def test_it_refuses_a_name_already_registered(operator, registered_node):
    response = browser_for(operator).post(ADD_URL, {"name": "gpu-a", "address": "10.9.9.9"})

    assert "name" in response.context["adminform"].form.errors
    assert Node.objects.get(name="gpu-a").address == "10.0.0.11"


def test_it_shows_labels_as_indented_json(operator, registered_node):
    response = browser_for(operator).get(change_url(registered_node))

    assert "{\n  &quot;gpu-type&quot;: &quot;h100&quot;\n}" in response.text


def test_it_edits_a_node_passing_only_the_changed_fields(operator, registered_node):
    browser = browser_for(operator)
    data = loaded_form(browser.get(change_url(registered_node)))
    data["address"] = "10.0.0.99"

    response = browser.post(change_url(registered_node), data)

    assert response.status_code == 302
    node = Node.objects.get(pk=registered_node.pk)
    assert (node.address, node.version, node.zone, node.labels) == ("10.0.0.99", 2, "eu-1", {"gpu-type": "h100"})
    updated = Event.objects.get(type=EventType.NODE_UPDATED)
    assert (data_of(updated), updated.actor) == ({"changed": ["address"]}, "olivia")


def test_it_refuses_a_stale_edit_and_keeps_the_newer_one(operator, registered_node):
    browser = browser_for(operator)
    data = loaded_form(browser.get(change_url(registered_node)))
    registry.update_node(actor="someone-else", name="gpu-a", changes={"zone": "eu-9"})
    data["address"] = "10.0.0.99"

    response = browser.post(change_url(registered_node), data, follow=True)

    assert response.status_code == 200
    assert any("changed since you read it" in message for message in messages_of(response))
    node = Node.objects.get(pk=registered_node.pk)
    assert (node.address, node.zone, node.version) == ("10.0.0.11", "eu-9", 2)
    assert not Event.objects.filter(type=EventType.NODE_UPDATED, actor="olivia").exists()


def test_it_ignores_observed_fields_posted_with_an_edit(operator, registered_node):
    browser = browser_for(operator)
    data = loaded_form(browser.get(change_url(registered_node)))
    data.update({"health": "healthy", "agent_version": "9.9", "draining": "on", "name": "renamed"})

    browser.post(change_url(registered_node), data)

    node = Node.objects.get(pk=registered_node.pk)
    assert (node.name, node.health, node.agent_version, node.draining) == ("gpu-a", "unknown", "", False)


def test_it_deletes_a_node_and_its_gpus_through_the_registry(operator, registered_node):
    Gpu.objects.create(node=registered_node, uuid="GPU-1", index=0, name="NVIDIA H100")
    url = reverse("admin:meshcore_node_delete", args=[registered_node.pk])
    browser = browser_for(operator)

    confirm = browser.get(url)
    response = browser.post(url, {"post": "yes"}, follow=True)

    assert confirm.status_code == 200 and not confirm.context["perms_lacking"]
    assert response.status_code == 200
    assert not Node.objects.filter(name="gpu-a").exists()
    assert not Gpu.objects.exists()
    left = Event.objects.get(type=EventType.NODE_LEFT)
    assert (data_of(left), left.actor) == ({"node": "gpu-a"}, "olivia")
    assert LogEntry.objects.get(action_flag=DELETION).object_repr == "gpu-a"


def test_it_deletes_selected_nodes_through_the_registry(operator, registered_node):
    other, _ = registry.create_node(actor=operator, name="gpu-b", address="10.0.0.12")
    browser = browser_for(operator)

    browser.post(
        reverse("admin:meshcore_node_changelist"),
        {"action": "delete_selected", "_selected_action": [registered_node.pk, other.pk], "post": "yes"},
    )

    assert not Node.objects.exists()
    assert sorted(e.data["node"] for e in Event.objects.filter(type=EventType.NODE_LEFT)) == ["gpu-a", "gpu-b"]
    logged = LogEntry.objects.filter(action_flag=DELETION).values_list("object_repr", flat=True)
    assert sorted(logged) == ["gpu-a", "gpu-b"]
