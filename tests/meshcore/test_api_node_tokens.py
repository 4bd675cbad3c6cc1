"""A node's agent token: POST nodes/<name>/rotate-token/ and /revoke-token/."""

from __future__ import annotations

from meshcore.models import EventType, NodeToken
from meshcore.tokens import token_digest
from tests.meshcore.api_support import API, events_since, last_event_id


def test_it_rotates_the_token_and_returns_the_new_one(operator_client, registered_node):
    old = registered_node.issued_token

    response = operator_client.post(f"{API}/nodes/gpu-a/rotate-token/")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["node"] == "gpu-a"
    assert body["token"].startswith("imn_")
    assert body["token"] != old
    assert body["prefix"] == body["token"][:12]
    stored = NodeToken.objects.get(node=registered_node)
    assert stored.digest == token_digest(body["token"])
    assert stored.prefix == body["prefix"]
    assert not NodeToken.objects.filter(digest=token_digest(old)).exists()


def test_it_shows_the_rotated_token_only_once(operator_client, registered_node):
    token = operator_client.post(f"{API}/nodes/gpu-a/rotate-token/").json()["token"]

    detail = operator_client.get(f"{API}/nodes/gpu-a/")

    assert token not in detail.content.decode()
    assert detail.json()["token_prefix"] == token[:12]


def test_it_records_one_rotation_event(operator_client, registered_node):
    before = last_event_id()

    operator_client.post(f"{API}/nodes/gpu-a/rotate-token/")

    assert events_since(before) == [(EventType.NODE_TOKEN_ROTATED, "olivia")]


def test_it_revokes_the_token(operator_client, registered_node):
    before = last_event_id()

    response = operator_client.post(f"{API}/nodes/gpu-a/revoke-token/")

    assert response.status_code == 200, response.content
    assert response.json()["name"] == "gpu-a"
    assert response.json()["token_prefix"] is None
    stored = NodeToken.objects.get(node=registered_node)
    assert stored.revoked_at is not None
    assert not stored.is_active
    assert events_since(before) == [(EventType.NODE_TOKEN_REVOKED, "olivia")]


def test_it_revokes_only_once(operator_client, registered_node):
    operator_client.post(f"{API}/nodes/gpu-a/revoke-token/")
    before = last_event_id()

    response = operator_client.post(f"{API}/nodes/gpu-a/revoke-token/")

    assert response.status_code == 200
    assert events_since(before) == []


def test_it_reissues_a_working_token_after_revoking(operator_client, registered_node):
    operator_client.post(f"{API}/nodes/gpu-a/revoke-token/")

    body = operator_client.post(f"{API}/nodes/gpu-a/rotate-token/").json()

    stored = NodeToken.objects.get(node=registered_node)
    assert stored.is_active
    assert stored.digest == token_digest(body["token"])
    assert operator_client.get(f"{API}/nodes/gpu-a/").json()["token_prefix"] == body["prefix"]


def test_it_answers_404_for_an_unknown_node(operator_client):
    assert operator_client.post(f"{API}/nodes/nope/rotate-token/").status_code == 404
    assert operator_client.post(f"{API}/nodes/nope/revoke-token/").status_code == 404


def test_it_lets_only_staff_rotate_or_revoke(viewer_client, stranger_client, registered_node):
    digest = NodeToken.objects.get(node=registered_node).digest

    assert viewer_client.post(f"{API}/nodes/gpu-a/rotate-token/").status_code == 403
    assert viewer_client.post(f"{API}/nodes/gpu-a/revoke-token/").status_code == 403
    assert stranger_client.post(f"{API}/nodes/gpu-a/rotate-token/").status_code == 401
    stored = NodeToken.objects.get(node=registered_node)
    assert stored.digest == digest
    assert stored.is_active
