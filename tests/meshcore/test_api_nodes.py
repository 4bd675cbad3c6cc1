"""Registering, reading, changing and removing nodes through /api/v1/nodes/."""

from __future__ import annotations

import pytest

from meshcore.models import Event, EventType, Node, NodeToken
from meshcore.tokens import token_digest
from tests.meshcore.api_support import API, data_of, events_since, last_event_id

NEW_NODE = {"name": "gpu-b", "address": "10.0.0.12", "roles": ["gpu", "router"], "zone": "eu-2", "labels": {"a": "b"}}


def test_it_registers_a_node_and_returns_its_agent_token_once(operator_client):
    response = operator_client.post(f"{API}/nodes/", NEW_NODE, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "gpu-b"
    assert body["roles"] == ["gpu", "router"]
    assert body["labels"] == {"a": "b"}
    assert body["version"] == 1
    assert body["token"].startswith("imn_")
    assert body["token_prefix"] == body["token"][:12]
    node = Node.objects.get(name="gpu-b")
    assert node.address == "10.0.0.12"
    assert node.token.digest == token_digest(body["token"])


def test_it_never_shows_the_agent_token_after_registration(operator_client):
    token = operator_client.post(f"{API}/nodes/", NEW_NODE, format="json").json()["token"]

    detail = operator_client.get(f"{API}/nodes/gpu-b/")
    listing = operator_client.get(f"{API}/nodes/")

    assert detail.status_code == 200
    assert "token" not in detail.json()
    assert detail.json()["token_prefix"] == token[:12]
    assert token not in detail.content.decode()
    assert token not in listing.content.decode()


def test_it_stores_only_the_digest_of_the_agent_token(operator_client):
    token = operator_client.post(f"{API}/nodes/", NEW_NODE, format="json").json()["token"]

    stored = NodeToken.objects.get(node__name="gpu-b")
    assert stored.digest == token_digest(token)
    assert token not in {stored.digest, stored.prefix}


def test_it_records_one_joined_event_by_the_operator(operator_client):
    before = last_event_id()

    operator_client.post(f"{API}/nodes/", NEW_NODE, format="json")

    assert events_since(before) == [(EventType.NODE_JOINED, "olivia")]


def test_it_sorts_and_deduplicates_roles(operator_client):
    response = operator_client.post(f"{API}/nodes/", {**NEW_NODE, "roles": ["router", "gpu", "router"]}, format="json")

    assert response.status_code == 201
    assert Node.objects.get(name="gpu-b").roles == ["gpu", "router"]


def test_it_looks_nodes_up_by_name(operator_client, registered_node):
    response = operator_client.get(f"{API}/nodes/gpu-a/")

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "gpu-a"
    assert body["zone"] == "eu-1"
    assert body["labels"] == {"gpu-type": "h100"}
    assert body["health"] == "unknown"
    assert body["draining"] is False


def test_it_lists_nodes(operator_client, registered_node):
    response = operator_client.get(f"{API}/nodes/")

    assert response.status_code == 200
    assert [node["name"] for node in response.json()["results"]] == ["gpu-a"]


def test_it_answers_404_for_an_unknown_node(operator_client):
    response = operator_client.get(f"{API}/nodes/nope/")

    assert response.status_code == 404


def test_it_refuses_a_duplicate_name_with_409(operator_client, registered_node):
    response = operator_client.post(f"{API}/nodes/", {**NEW_NODE, "name": "gpu-a"}, format="json")

    assert response.status_code == 409
    assert "gpu-a" in response.json()["detail"]
    assert Node.objects.get(name="gpu-a").address == "10.0.0.11"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Not A Slug"}, "name"),
        ({"name": ""}, "name"),
        ({"address": ""}, "address"),
        ({"roles": ["gpu", "toaster"]}, "roles"),
        ({"roles": "gpu"}, "roles"),
        ({"labels": {"bad key!": "x"}}, "labels"),
        ({"labels": {"ok": "bad value!"}}, "labels"),
        ({"labels": ["gpu-type"]}, "labels"),
        ({"zone": "z" * 64}, "zone"),
    ],
)
def test_it_rejects_bad_fields_with_400_naming_the_field(operator_client, change, field):
    before = last_event_id()

    response = operator_client.post(f"{API}/nodes/", {**NEW_NODE, **change}, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert not Node.objects.exists()
    assert events_since(before) == []


def test_it_names_the_invalid_label_key(operator_client):
    response = operator_client.post(f"{API}/nodes/", {**NEW_NODE, "labels": {"-bad": "x"}}, format="json")

    assert response.status_code == 400
    assert "'-bad'" in " ".join(response.json()["labels"])


def test_it_requires_name_and_address(operator_client):
    response = operator_client.post(f"{API}/nodes/", {}, format="json")

    assert response.status_code == 400
    assert set(response.json()) == {"name", "address"}


def test_it_updates_a_node_and_bumps_its_version(operator_client, registered_node):
    before = last_event_id()

    response = operator_client.patch(f"{API}/nodes/gpu-a/", {"zone": "eu-9", "labels": {"x": "y"}}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["version"] == 2
    registered_node.refresh_from_db()
    assert registered_node.zone == "eu-9"
    assert registered_node.labels == {"x": "y"}
    assert registered_node.version == 2
    assert events_since(before) == [(EventType.NODE_UPDATED, "olivia")]
    assert data_of(Event.objects.get(type=EventType.NODE_UPDATED)) == {"changed": ["zone", "labels"]}


def test_it_replaces_a_node_with_put(operator_client, registered_node):
    response = operator_client.put(
        f"{API}/nodes/gpu-a/", {"name": "gpu-a", "address": "10.9.9.9", "roles": ["control"]}, format="json"
    )

    assert response.status_code == 200, response.content
    registered_node.refresh_from_db()
    assert registered_node.address == "10.9.9.9"
    assert registered_node.roles == ["control"]
    assert registered_node.version == 2


def test_it_changes_nothing_when_the_values_are_the_same(operator_client, registered_node):
    before = last_event_id()

    response = operator_client.patch(f"{API}/nodes/gpu-a/", {"zone": "eu-1"}, format="json")

    assert response.status_code == 200
    assert response.json()["version"] == 1
    assert events_since(before) == []


def test_it_refuses_to_rename_a_node(operator_client, registered_node):
    response = operator_client.patch(f"{API}/nodes/gpu-a/", {"name": "gpu-z"}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()
    assert Node.objects.filter(name="gpu-a").exists()
    assert not Node.objects.filter(name="gpu-z").exists()


def test_it_ignores_observed_fields_in_writes(operator_client, registered_node):
    response = operator_client.patch(
        f"{API}/nodes/gpu-a/", {"health": "healthy", "draining": True, "agent_version": "9"}, format="json"
    )

    assert response.status_code == 200
    registered_node.refresh_from_db()
    assert registered_node.health == "unknown"
    assert registered_node.draining is False
    assert registered_node.agent_version == ""


def test_it_deletes_a_node_and_keeps_its_name_on_the_event(operator_client, registered_node):
    before = last_event_id()

    response = operator_client.delete(f"{API}/nodes/gpu-a/")

    assert response.status_code == 204
    assert not Node.objects.filter(name="gpu-a").exists()
    assert events_since(before) == [(EventType.NODE_LEFT, "olivia")]
    event = Event.objects.get(type=EventType.NODE_LEFT)
    assert event.node_name == "gpu-a"
    assert event.node is None


def test_it_answers_404_when_deleting_an_unknown_node(operator_client):
    before = last_event_id()

    response = operator_client.delete(f"{API}/nodes/nope/")

    assert response.status_code == 404
    assert events_since(before) == []
