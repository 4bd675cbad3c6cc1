"""API tokens through /api/v1/tokens/: issued once, stored as a digest, revoked by DELETE."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from meshcore import registry
from meshcore.models import ApiToken, EventType
from meshcore.tokens import token_digest
from tests.meshcore.api_support import API, events_since, last_event_id, make_group


def test_it_issues_a_token_and_shows_it_once(operator_client, operator):
    before = last_event_id()

    response = operator_client.post(f"{API}/tokens/", {"name": "ci"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["token"].startswith("imt_")
    assert (body["name"], body["user"], body["active"], body["prefix"]) == ("ci", "olivia", True, body["token"][:12])
    stored = ApiToken.objects.get(pk=body["id"])
    assert stored.user == operator
    assert stored.digest == token_digest(body["token"])
    assert events_since(before) == [(EventType.TOKEN_ISSUED, "olivia")]


def test_it_never_shows_the_token_again(operator_client):
    value = operator_client.post(f"{API}/tokens/", {"name": "ci"}, format="json").json()["token"]
    token_id = ApiToken.objects.get(name="ci").pk

    detail = operator_client.get(f"{API}/tokens/{token_id}/")
    listing = operator_client.get(f"{API}/tokens/")

    assert detail.status_code == 200
    assert "token" not in detail.json()
    assert value not in detail.content.decode()
    assert value not in listing.content.decode()


def test_it_stores_only_the_sha256_digest(operator_client):
    value = operator_client.post(f"{API}/tokens/", {"name": "ci"}, format="json").json()["token"]

    stored = ApiToken.objects.values().get(name="ci")
    assert stored["digest"] == token_digest(value)
    assert value not in {str(field) for field in stored.values()}


def test_it_issues_a_token_for_another_user_with_a_tenant_and_expiry(operator_client, viewer):
    make_group("team-a")
    expires = timezone.now() + timedelta(days=30)

    response = operator_client.post(
        f"{API}/tokens/", {"name": "ci", "user": "victor", "tenant": "team-a", "expires_at": expires}, format="json"
    )

    assert response.status_code == 201, response.content
    stored = ApiToken.objects.get(name="ci")
    assert (stored.user, stored.tenant.name, stored.expires_at) == (viewer, "team-a", expires)


def test_it_refuses_a_duplicate_name_for_the_same_user_with_409(operator_client):
    operator_client.post(f"{API}/tokens/", {"name": "ci"}, format="json")

    response = operator_client.post(f"{API}/tokens/", {"name": "ci"}, format="json")

    assert response.status_code == 409
    assert "ci" in response.json()["detail"]
    assert ApiToken.objects.filter(name="ci").count() == 1


def test_it_allows_the_same_name_for_another_user(operator_client, viewer):
    operator_client.post(f"{API}/tokens/", {"name": "ci"}, format="json")

    response = operator_client.post(f"{API}/tokens/", {"name": "ci", "user": "victor"}, format="json")

    assert response.status_code == 201
    assert ApiToken.objects.filter(name="ci").count() == 2


def test_it_refuses_an_expiry_in_the_past(operator_client):
    response = operator_client.post(
        f"{API}/tokens/", {"name": "ci", "expires_at": "2001-01-01T00:00:00Z"}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"expires_at": ["Must be in the future."]}
    assert not ApiToken.objects.filter(name="ci").exists()


def test_it_refuses_unknown_users_and_tenants(operator_client):
    response = operator_client.post(f"{API}/tokens/", {"name": "ci", "user": "nobody", "tenant": "nope"}, format="json")

    assert response.status_code == 400
    assert set(response.json()) == {"user", "tenant"}


def test_it_revokes_a_token_on_delete_and_keeps_the_row(operator_client):
    token_id = operator_client.post(f"{API}/tokens/", {"name": "ci"}, format="json").json()["id"]
    before = last_event_id()

    response = operator_client.delete(f"{API}/tokens/{token_id}/")

    assert response.status_code == 204
    stored = ApiToken.objects.get(pk=token_id)
    assert stored.revoked_at is not None
    assert stored.version == 2
    assert events_since(before) == [(EventType.TOKEN_REVOKED, "olivia")]
    assert operator_client.get(f"{API}/tokens/{token_id}/").json()["active"] is False


def test_it_revokes_only_once(operator_client):
    token_id = operator_client.post(f"{API}/tokens/", {"name": "ci"}, format="json").json()["id"]
    operator_client.delete(f"{API}/tokens/{token_id}/")
    revoked_at = ApiToken.objects.get(pk=token_id).revoked_at
    before = last_event_id()

    response = operator_client.delete(f"{API}/tokens/{token_id}/")

    assert response.status_code == 204
    assert ApiToken.objects.get(pk=token_id).revoked_at == revoked_at
    assert events_since(before) == []


def test_it_refuses_the_revoked_token_with_401(operator_client, stranger_client):
    body = operator_client.post(f"{API}/tokens/", {"name": "ci"}, format="json").json()
    operator_client.delete(f"{API}/tokens/{body['id']}/")
    stranger_client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['token']}")

    response = stranger_client.get(f"{API}/nodes/")

    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_it_shows_non_staff_only_their_own_tokens(viewer_client, viewer, operator):
    own, _ = registry.issue_api_token(actor=operator, user=viewer, name="mine")
    other, _ = registry.issue_api_token(actor=operator, user=operator, name="theirs")

    listing = viewer_client.get(f"{API}/tokens/")

    assert listing.status_code == 200
    assert [token["name"] for token in listing.json()["results"]] == ["mine"]
    assert viewer_client.get(f"{API}/tokens/{own.pk}/").status_code == 200
    assert viewer_client.get(f"{API}/tokens/{other.pk}/").status_code == 404


def test_it_shows_staff_every_token(operator_client, viewer, operator):
    registry.issue_api_token(actor=operator, user=viewer, name="mine")
    registry.issue_api_token(actor=operator, user=operator, name="theirs")

    listing = operator_client.get(f"{API}/tokens/")

    assert [(token["user"], token["name"]) for token in listing.json()["results"]] == [
        ("olivia", "theirs"),
        ("victor", "mine"),
    ]


def test_it_lets_only_staff_issue_or_revoke(viewer_client, viewer, operator):
    own, _ = registry.issue_api_token(actor=operator, user=viewer, name="mine")

    issued = viewer_client.post(f"{API}/tokens/", {"name": "ci"}, format="json")
    revoked = viewer_client.delete(f"{API}/tokens/{own.pk}/")

    assert (issued.status_code, revoked.status_code) == (403, 403)
    assert list(ApiToken.objects.values_list("name", flat=True)) == ["mine"]
    assert ApiToken.objects.get(pk=own.pk).revoked_at is None


def test_it_cannot_change_a_token(operator_client, operator):
    token, _ = registry.issue_api_token(actor=operator, user=operator, name="ci")

    assert operator_client.patch(f"{API}/tokens/{token.pk}/", {"name": "x"}, format="json").status_code == 405
    assert ApiToken.objects.get(pk=token.pk).name == "ci"
