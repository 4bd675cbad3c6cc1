"""Users and groups in the admin: Django's own pages, with every write going through the registry."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import ADDITION, DELETION, LogEntry
from django.contrib.auth.models import Group, Permission
from django.urls import reverse
from django.utils import timezone

from meshcore import registry
from meshcore.models import ApiToken, Event, EventType, User
from tests.conftest import PASSWORD
from tests.meshcore.admin_support import browser_for, loaded_form, messages_of
from tests.meshcore.api_support import data_of, events_since, last_event_id, make_group

USER_ADD_URL = reverse("admin:meshcore_user_add")
GROUP_ADD_URL = reverse("admin:auth_group_add")
NEW_PASSWORD = "another-horse-battery-staple"


def user_url(user: User) -> str:
    return reverse("admin:meshcore_user_change", args=[user.pk])


def group_url(group: Group) -> str:
    return reverse("admin:auth_group_change", args=[group.pk])


def permission_ids(*names: str) -> list[int]:
    return [Permission.objects.get(codename=name).pk for name in names]


@pytest.mark.parametrize(
    "url",
    [
        reverse("admin:meshcore_user_changelist"),
        USER_ADD_URL,
        reverse("admin:auth_group_changelist"),
        GROUP_ADD_URL,
    ],
)
def test_it_renders_the_user_and_group_pages(operator, url):
    assert browser_for(operator).get(url).status_code == 200


def test_it_renders_a_user_without_per_user_permissions(operator, viewer):
    browser = browser_for(operator)

    page = browser.get(user_url(viewer))
    password_page = browser.get(reverse("admin:auth_user_password_change", args=[viewer.pk]))

    assert page.status_code == 200 and password_page.status_code == 200
    form = page.context["adminform"].form
    assert "groups" in form.fields
    assert "user_permissions" not in form.fields
    assert "last_login" not in form.fields  # shown read-only: each replica records its own sign-ins


def test_it_adds_a_user_as_the_operator(operator):
    before = last_event_id()

    response = browser_for(operator).post(
        USER_ADD_URL,
        {"username": "wanda", "usable_password": "true", "password1": PASSWORD, "password2": PASSWORD},
    )

    assert response.status_code == 302
    user = User.objects.get(username="wanda")
    assert response["Location"] == user_url(user)
    assert user.check_password(PASSWORD)
    assert events_since(before) == [(EventType.USER_CREATED, "olivia")]
    entry = LogEntry.objects.get(action_flag=ADDITION)
    assert (entry.object_id, entry.user_id) == (str(user.pk), operator.pk)


def test_it_changes_a_user_and_their_groups_through_the_registry(operator, viewer):
    team = make_group("team-a")
    browser = browser_for(operator)
    data = loaded_form(browser.get(user_url(viewer)))
    joined = timezone.localtime(data.pop("date_joined"))  # shown as a date and a time, to the second
    for prefix in ("", "initial-"):  # the page also posts the value it showed (the field has a default)
        data.update({f"{prefix}date_joined_0": f"{joined:%Y-%m-%d}", f"{prefix}date_joined_1": f"{joined:%H:%M:%S}"})
    data.update({"email": "victor@example.com", "groups": [team.pk]})
    before = last_event_id()

    response = browser.post(user_url(viewer), data)

    assert response.status_code == 302
    joined = viewer.date_joined
    viewer.refresh_from_db()
    assert (viewer.email, viewer.date_joined) == ("victor@example.com", joined)
    assert list(viewer.groups.all()) == [team]
    assert events_since(before) == [(EventType.USER_UPDATED, "olivia"), (EventType.USER_UPDATED, "olivia")]
    changes = [data_of(event)["changed"] for event in Event.objects.filter(id__gt=before).order_by("id")]
    assert changes == [["email"], ["groups"]]


def test_it_changes_a_password_as_the_operator_without_recording_it(operator, viewer):
    url = reverse("admin:auth_user_password_change", args=[viewer.pk])
    before = last_event_id()

    response = browser_for(operator).post(
        url, {"usable_password": "true", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}, follow=True
    )

    assert response.status_code == 200
    assert "Password changed successfully." in messages_of(response)
    viewer.refresh_from_db()
    assert viewer.check_password(NEW_PASSWORD)
    assert events_since(before) == [(EventType.USER_UPDATED, "olivia")]
    event = Event.objects.get(id__gt=before)
    assert data_of(event) == {"user": "victor", "changed": ["password"]}
    assert NEW_PASSWORD not in str(event.data) and viewer.password not in str(event.data)


def test_it_shows_a_refused_password_change(operator, viewer, monkeypatch):
    def unavailable(**kwargs):
        raise registry.Unavailable("The registry has no quorum right now; try again in a few seconds.")

    monkeypatch.setattr(registry, "save_user", unavailable)

    response = browser_for(operator).post(
        reverse("admin:auth_user_password_change", args=[viewer.pk]),
        {"usable_password": "true", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
        follow=True,
    )

    assert response.status_code == 200
    assert any("no quorum" in message for message in messages_of(response))
    viewer.refresh_from_db()
    assert viewer.check_password(PASSWORD)


def test_it_deletes_a_user_and_their_tokens_through_the_registry(operator, viewer):
    registry.issue_api_token(actor=operator, user=viewer, name="dash")
    url = reverse("admin:meshcore_user_delete", args=[viewer.pk])
    before = last_event_id()

    response = browser_for(operator).post(url, {"post": "yes"})

    assert response.status_code == 302
    assert not User.objects.filter(username="victor").exists()
    assert not ApiToken.objects.exists()
    assert events_since(before) == [(EventType.USER_DELETED, "olivia")]
    assert LogEntry.objects.get(action_flag=DELETION).object_repr == "victor"


def test_it_deletes_selected_users_in_one_change(operator, viewer):
    other = User.objects.create_user("wanda")
    before = last_event_id()

    browser_for(operator).post(
        reverse("admin:meshcore_user_changelist"),
        {"action": "delete_selected", "_selected_action": [viewer.pk, other.pk], "post": "yes"},
    )

    assert list(User.objects.values_list("username", flat=True)) == ["olivia"]
    assert events_since(before) == [(EventType.USER_DELETED, "olivia"), (EventType.USER_DELETED, "olivia")]
    assert len({event.data["seq"] for event in Event.objects.filter(id__gt=before)}) == 1


def test_it_adds_a_group_with_permissions_through_the_registry(operator):
    before = last_event_id()

    response = browser_for(operator).post(
        GROUP_ADD_URL, {"name": "team-a", "permissions": permission_ids("view_node", "view_policy")}
    )

    assert response.status_code == 302
    group = Group.objects.get(name="team-a")
    assert sorted(group.permissions.values_list("codename", flat=True)) == ["view_node", "view_policy"]
    assert events_since(before) == [(EventType.GROUP_CREATED, "olivia")]
    assert LogEntry.objects.get(action_flag=ADDITION).object_id == str(group.pk)


def test_it_renames_a_group_and_changes_its_permissions(operator):
    group = make_group("team-a")
    browser = browser_for(operator)
    data = loaded_form(browser.get(group_url(group)))
    data.update({"name": "team-b", "permissions": permission_ids("view_model")})
    before = last_event_id()

    response = browser.post(group_url(group), data)

    assert response.status_code == 302
    group.refresh_from_db()
    assert group.name == "team-b"
    assert list(group.permissions.values_list("codename", flat=True)) == ["view_model"]
    assert events_since(before) == [(EventType.GROUP_UPDATED, "olivia")]
    assert data_of(Event.objects.get(id__gt=before)) == {"group": "team-b", "changed": ["name", "permissions"]}


def test_it_records_nothing_for_a_group_saved_unchanged(operator):
    group = make_group("team-a")
    browser = browser_for(operator)
    data = loaded_form(browser.get(group_url(group)))
    before = last_event_id()

    assert browser.post(group_url(group), data).status_code == 302

    assert events_since(before) == []


def test_it_refuses_a_duplicate_group_name_on_the_form(operator):
    make_group("team-a")

    response = browser_for(operator).post(GROUP_ADD_URL, {"name": "team-a"})

    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors
    assert Group.objects.count() == 1


def test_it_deletes_a_group_and_clears_it_from_members_and_tokens(operator, viewer):
    group = make_group("team-a")
    registry.set_user_groups(actor=operator, user=viewer, groups=[group])
    token, _ = registry.issue_api_token(actor=operator, user=viewer, name="dash", tenant=group)
    before = last_event_id()

    response = browser_for(operator).post(reverse("admin:auth_group_delete", args=[group.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert not Group.objects.exists()
    assert not viewer.groups.exists()
    token.refresh_from_db()
    assert token.tenant is None
    assert events_since(before) == [(EventType.GROUP_DELETED, "olivia")]
