"""API tokens in the admin: issued and shown once, read-only afterwards, revoked rather than deleted."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from meshcore import registry
from meshcore.api.authentication import BearerTokenAuthentication
from meshcore.models import ApiToken, Event, EventType
from meshcore.tokens import token_digest
from tests.meshcore.admin_support import API_TOKEN, action, browser_for, messages_of
from tests.meshcore.api_support import make_group

ADD_URL = reverse("admin:meshcore_apitoken_add")
LIST_URL = reverse("admin:meshcore_apitoken_changelist")


def authenticate(value: str):
    request = Request(APIRequestFactory().get("/api/v1/events/", HTTP_AUTHORIZATION=f"Bearer {value}"))
    return BearerTokenAuthentication().authenticate(request)


@pytest.fixture
def issued(operator):
    token, value = registry.issue_api_token(actor=operator, user=operator, name="ci")
    return token, value


def test_it_issues_a_token_and_shows_it_once(operator, viewer):
    tenant = make_group("team-vision")
    browser = browser_for(operator)

    response = browser.post(ADD_URL, {"name": "vision-app", "user": viewer.pk, "tenant": tenant.pk}, follow=True)

    shown = [message for message in messages_of(response) if API_TOKEN.search(message)]
    assert len(shown) == 1 and "store it now, it will not be shown again" in shown[0]
    value = API_TOKEN.search(shown[0]).group()
    token = ApiToken.objects.get(name="vision-app")
    assert (token.user, token.tenant, token.digest) == (viewer, tenant, token_digest(value))
    assert authenticate(value) == (viewer, token)
    issued_event = Event.objects.get(type=EventType.TOKEN_ISSUED)
    assert (issued_event.actor, issued_event.data["user"]) == ("olivia", "victor")
    page = browser.get(reverse("admin:meshcore_apitoken_change", args=[token.pk])).text
    assert value not in page and token.digest not in page and token.prefix in page


def test_it_refuses_an_expiry_in_the_past(operator):
    yesterday = timezone.localtime() - timedelta(days=1)

    response = browser_for(operator).post(
        ADD_URL,
        {"name": "old", "user": operator.pk, "expires_at_0": f"{yesterday:%Y-%m-%d}", "expires_at_1": "12:00:00"},
    )

    assert response.status_code == 200
    assert "Must be in the future" in response.context["adminform"].form.errors["expires_at"][0]
    assert not ApiToken.objects.exists()


def test_it_refuses_a_second_token_of_the_same_name_for_a_user(operator, issued):
    response = browser_for(operator).post(ADD_URL, {"name": "ci", "user": operator.pk})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert ApiToken.objects.count() == 1


def test_it_revokes_selected_tokens(operator, issued):
    token, value = issued
    other, other_value = registry.issue_api_token(actor=operator, user=operator, name="other")

    response = browser_for(operator).post(LIST_URL, action("revoke_tokens", token.pk), follow=True)

    token.refresh_from_db()
    other.refresh_from_db()
    assert token.revoked_at is not None and other.revoked_at is None
    assert any("Revoked 1 token" in message for message in messages_of(response))
    assert Event.objects.filter(type=EventType.TOKEN_REVOKED, actor="olivia").count() == 1
    with pytest.raises(AuthenticationFailed):
        authenticate(value)
    assert authenticate(other_value)[1] == other


def test_it_revokes_when_asked_to_delete_and_keeps_the_row(operator, issued):
    token, value = issued
    url = reverse("admin:meshcore_apitoken_delete", args=[token.pk])
    browser = browser_for(operator)

    confirm = browser.get(url)
    response = browser.post(url, {"post": "yes"}, follow=True)

    assert "Revoke the API token" in confirm.text
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert any("was revoked" in message for message in messages_of(response))
    assert Event.objects.filter(type=EventType.TOKEN_REVOKED).count() == 1
    with pytest.raises(AuthenticationFailed):
        authenticate(value)


def test_it_offers_no_bulk_delete_only_revoke(operator, issued):
    response = browser_for(operator).get(LIST_URL)

    choices = dict(response.context["action_form"].fields["action"].choices)
    assert "revoke_tokens" in choices
    assert "delete_selected" not in choices


def test_it_does_not_let_a_token_be_changed(operator, issued, viewer):
    token, _ = issued
    url = reverse("admin:meshcore_apitoken_change", args=[token.pk])
    browser = browser_for(operator)

    page = browser.get(url)
    response = browser.post(url, {"name": "renamed", "user": viewer.pk})

    assert page.status_code == 200 and 'name="_save"' not in page.text
    assert response.status_code == 403
    token.refresh_from_db()
    assert (token.name, token.user) == ("ci", operator)


def test_it_lists_the_status_of_each_token(operator, issued):
    token, _ = issued
    registry.revoke_api_token(actor=operator, token_id=token.pk)
    registry.issue_api_token(actor=operator, user=operator, name="live")

    response = browser_for(operator).get(LIST_URL, {"status": "revoked"})

    assert [row.name for row in response.context["cl"].result_list] == ["ci"]
