"""Draining and undraining a node: POST nodes/<name>/drain/ and /undrain/."""

from __future__ import annotations

from meshcore.models import Event, EventType, Node
from tests.meshcore.api_support import API, events_since, last_event_id


def post_twice(client, action: str):
    """POST nodes/gpu-a/<action>/ twice, both answered 200; the second answer."""
    first = client.post(f"{API}/nodes/gpu-a/{action}/")
    second = client.post(f"{API}/nodes/gpu-a/{action}/")

    assert (first.status_code, second.status_code) == (200, 200)
    return second


def test_it_drains_a_node(operator_client, registered_node):
    before = last_event_id()

    response = operator_client.post(f"{API}/nodes/gpu-a/drain/")

    assert response.status_code == 200, response.content
    assert response.json()["draining"] is True
    assert response.json()["version"] == 2
    registered_node.refresh_from_db()
    assert registered_node.draining is True
    assert events_since(before) == [(EventType.NODE_DRAINING, "olivia")]
    assert Event.objects.get(type=EventType.NODE_DRAINING).node_name == "gpu-a"


def test_it_drains_only_once(operator_client, registered_node):
    before = last_event_id()

    second = post_twice(operator_client, "drain")

    assert second.json()["draining"] is True
    assert second.json()["version"] == 2
    assert events_since(before) == [(EventType.NODE_DRAINING, "olivia")]


def test_it_undrains_a_node_once(operator_client, registered_node):
    operator_client.post(f"{API}/nodes/gpu-a/drain/")
    before = last_event_id()

    second = post_twice(operator_client, "undrain")

    assert second.json()["draining"] is False
    assert second.json()["version"] == 3
    assert Node.objects.get(name="gpu-a").draining is False
    assert events_since(before) == [(EventType.NODE_UNDRAINED, "olivia")]


def test_it_changes_nothing_when_undraining_a_node_that_is_not_draining(operator_client, registered_node):
    before = last_event_id()

    response = operator_client.post(f"{API}/nodes/gpu-a/undrain/")

    assert response.status_code == 200
    assert response.json()["version"] == 1
    assert events_since(before) == []


def test_it_drains_with_the_current_version_in_if_match(operator_client, registered_node):
    response = operator_client.post(f"{API}/nodes/gpu-a/drain/", HTTP_IF_MATCH='"1"')

    assert response.status_code == 200
    assert Node.objects.get(name="gpu-a").draining is True


def test_it_refuses_to_drain_with_a_stale_if_match(operator_client, registered_node):
    operator_client.patch(f"{API}/nodes/gpu-a/", {"zone": "eu-2"}, format="json")
    before = last_event_id()

    response = operator_client.post(f"{API}/nodes/gpu-a/drain/", HTTP_IF_MATCH='"1"')

    assert response.status_code == 409
    assert "version" in response.json()["detail"]
    assert Node.objects.get(name="gpu-a").draining is False
    assert events_since(before) == []


def test_it_answers_404_for_an_unknown_node(operator_client):
    before = last_event_id()

    assert operator_client.post(f"{API}/nodes/nope/drain/").status_code == 404
    assert operator_client.post(f"{API}/nodes/nope/undrain/").status_code == 404
    assert events_since(before) == []


def test_it_refuses_viewers_and_strangers(viewer_client, stranger_client, registered_node):
    assert viewer_client.post(f"{API}/nodes/gpu-a/drain/").status_code == 403
    assert stranger_client.post(f"{API}/nodes/gpu-a/drain/").status_code == 401
    assert viewer_client.post(f"{API}/nodes/gpu-a/undrain/").status_code == 403
    assert Node.objects.get(name="gpu-a").draining is False


def test_it_refuses_get(operator_client, registered_node):
    assert operator_client.get(f"{API}/nodes/gpu-a/drain/").status_code == 405
