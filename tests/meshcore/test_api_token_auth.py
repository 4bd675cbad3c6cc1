"""Who may do what: operator (staff, session or API token), viewer (read only), stranger
(401 with a challenge) and node agent (its token is for the agent endpoints only)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from meshcore import registry
from meshcore.models import Model, Node
from tests.meshcore.api_support import API, commit_ops

WRITABLE = ["nodes", "models", "runtimes", "policies", "tokens"]
READABLE = [*WRITABLE, "gpus", "instances", "events"]


def bearer(value: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=value)
    return client


@pytest.mark.parametrize("resource", READABLE)
def test_it_lets_the_operator_read_with_a_session(operator_client, resource):
    assert operator_client.get(f"{API}/{resource}/").status_code == 200


@pytest.mark.parametrize("resource", READABLE)
def test_it_lets_the_operator_read_with_an_api_token(operator_token_client, resource):
    assert operator_token_client.get(f"{API}/{resource}/").status_code == 200


def test_it_lets_the_operator_write_with_an_api_token(operator_token_client):
    response = operator_token_client.post(f"{API}/models/", {"name": "m", "platform": "python"}, format="json")

    assert response.status_code == 201, response.content
    assert Model.objects.filter(name="m").exists()


@pytest.mark.parametrize("resource", READABLE)
def test_it_lets_a_viewer_read(viewer_client, resource):
    assert viewer_client.get(f"{API}/{resource}/").status_code == 200


def test_it_lets_a_viewer_read_with_an_api_token(viewer, operator):
    _, value = registry.issue_api_token(actor=operator, user=viewer, name="read")

    assert bearer(f"Bearer {value}").get(f"{API}/nodes/").status_code == 200


@pytest.mark.parametrize("resource", WRITABLE)
def test_it_refuses_writes_by_a_viewer_with_403(viewer_client, resource):
    response = viewer_client.post(f"{API}/{resource}/", {"name": "x"}, format="json")

    assert response.status_code == 403
    assert "staff" in response.json()["detail"]


def test_it_refuses_updates_and_deletes_by_a_viewer(viewer_client, registered_node):
    assert viewer_client.patch(f"{API}/nodes/gpu-a/", {"zone": "x"}, format="json").status_code == 403
    assert viewer_client.put(f"{API}/nodes/gpu-a/", {"name": "gpu-a", "address": "x"}, format="json").status_code == 403
    assert viewer_client.delete(f"{API}/nodes/gpu-a/").status_code == 403
    registered_node.refresh_from_db()
    assert (registered_node.zone, registered_node.version) == ("eu-1", 1)


def test_it_refuses_writes_by_a_viewers_api_token(viewer, operator):
    _, value = registry.issue_api_token(actor=operator, user=viewer, name="read")

    response = bearer(f"Bearer {value}").post(f"{API}/models/", {"name": "m", "platform": "python"}, format="json")

    assert response.status_code == 403
    assert not Model.objects.exists()


@pytest.mark.parametrize("resource", READABLE)
def test_it_challenges_a_stranger_reading_with_401(stranger_client, resource):
    response = stranger_client.get(f"{API}/{resource}/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize("resource", WRITABLE)
def test_it_challenges_a_stranger_writing_with_401(stranger_client, resource):
    response = stranger_client.post(f"{API}/{resource}/", {"name": "x"}, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_it_challenges_a_stranger_on_detail_and_actions(stranger_client, registered_node):
    for response in [
        stranger_client.get(f"{API}/nodes/gpu-a/"),
        stranger_client.delete(f"{API}/nodes/gpu-a/"),
        stranger_client.post(f"{API}/nodes/gpu-a/rotate-token/"),
    ]:
        assert response.status_code == 401
        assert "WWW-Authenticate" in response
    assert Node.objects.filter(name="gpu-a").exists()


def test_it_tells_a_node_agent_its_token_is_for_agent_endpoints(node_agent_client):
    response = node_agent_client.get(f"{API}/nodes/")

    assert response.status_code == 401
    detail = response.json()["detail"]
    assert "node token" in detail
    assert "agent endpoints" in detail
    assert "WWW-Authenticate" in response


def test_it_refuses_writes_by_a_node_agent(node_agent_client):
    response = node_agent_client.post(f"{API}/models/", {"name": "m", "platform": "python"}, format="json")

    assert response.status_code == 401
    assert not Model.objects.exists()


def test_it_refuses_an_expired_token_saying_so(operator):
    token, value = registry.issue_api_token(
        actor=operator, user=operator, name="short", expires_at=timezone.now() + timedelta(hours=1)
    )
    # An hour passing, as the log sees it (the registry refuses to issue a token already expired).
    past = timezone.now() - timedelta(seconds=1)
    commit_ops({"op": "update", "kind": "api_token", "id": token.pk, "data": {"expires_at": past.isoformat()}})

    response = bearer(f"Bearer {value}").get(f"{API}/nodes/")

    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_it_accepts_a_token_before_it_expires(operator):
    _, value = registry.issue_api_token(
        actor=operator, user=operator, name="short", expires_at=timezone.now() + timedelta(hours=1)
    )

    assert bearer(f"Bearer {value}").get(f"{API}/nodes/").status_code == 200


def test_it_refuses_a_revoked_token(operator):
    token, value = registry.issue_api_token(actor=operator, user=operator, name="gone")
    registry.revoke_api_token(actor=operator, token_id=token.pk)

    response = bearer(f"Bearer {value}").get(f"{API}/nodes/")

    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_it_refuses_an_unknown_token(db):
    response = bearer("Bearer imt_not-a-real-token").get(f"{API}/nodes/")

    assert response.status_code == 401
    assert "Invalid" in response.json()["detail"]


def test_it_refuses_the_token_of_an_inactive_user(operator, viewer):
    _, value = registry.issue_api_token(actor=operator, user=viewer, name="read")
    viewer.is_active = False
    viewer.save()

    response = bearer(f"Bearer {value}").get(f"{API}/nodes/")

    assert response.status_code == 401
    assert "inactive" in response.json()["detail"]


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer a b", "bearer    "])
def test_it_refuses_a_malformed_authorization_header(db, header):
    response = bearer(header).get(f"{API}/nodes/")

    assert response.status_code == 401
    assert "Malformed Authorization header" in response.json()["detail"]


@pytest.mark.parametrize("header", ["Basic b2xpdmlhOnB3", "Token imt_x", "imt_x"])
def test_it_refuses_other_schemes_as_unauthenticated(db, header):
    response = bearer(header).get(f"{API}/nodes/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
