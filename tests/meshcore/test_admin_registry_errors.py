"""A change the registry refuses is an error message on the page, never a server error."""

from __future__ import annotations

from django.contrib.admin.models import LogEntry
from django.urls import reverse

from meshcore import registry
from meshcore.models import Event, EventType, Node, Policy
from tests.meshcore.admin_support import browser_for, loaded_form, messages_of

PIN_SPEC = {"model": "resnet50", "nodes": ["gpu-a"]}


def unavailable(**kwargs):
    raise registry.Unavailable("The registry has no quorum right now; try again in a few seconds.")


def test_it_shows_an_unavailable_registry_on_save(operator, monkeypatch):
    policy = registry.create_policy(actor=operator, name="pin-resnet", kind="pin", spec=PIN_SPEC)
    url = reverse("admin:meshcore_policy_change", args=[policy.pk])
    browser = browser_for(operator)
    data = loaded_form(browser.get(url))
    data["priority"] = "9"
    monkeypatch.setattr(registry, "update_policy", unavailable)

    response = browser.post(url, data)
    followed = browser.get(response["Location"])

    assert response.status_code == 302 and response["Location"] == url
    assert followed.status_code == 200
    assert any("no quorum" in message for message in messages_of(followed))
    assert Policy.objects.get(pk=policy.pk).priority == 0


def test_it_shows_an_unavailable_registry_on_add_and_keeps_nothing(operator, monkeypatch):
    monkeypatch.setattr(registry, "create_node", unavailable)

    response = browser_for(operator).post(
        reverse("admin:meshcore_node_add"), {"name": "gpu-z", "address": "10.0.0.99"}, follow=True
    )

    assert response.status_code == 200
    assert any("no quorum" in message for message in messages_of(response))
    assert not Node.objects.exists()
    assert not LogEntry.objects.exists()  # the admin's own log entry rolled back with the refused change


def test_it_shows_a_refused_deletion(operator, registered_node, monkeypatch):
    monkeypatch.setattr(registry, "delete_node", unavailable)

    response = browser_for(operator).post(
        reverse("admin:meshcore_node_delete", args=[registered_node.pk]), {"post": "yes"}, follow=True
    )

    assert response.status_code == 200
    assert any("no quorum" in message for message in messages_of(response))
    assert Node.objects.filter(pk=registered_node.pk).exists()


def test_it_deletes_all_selected_or_none(operator, monkeypatch):
    first = registry.create_policy(actor=operator, name="a-first", kind="pin", spec=PIN_SPEC)
    second = registry.create_policy(actor=operator, name="b-second", kind="pin", spec=PIN_SPEC)
    real = registry.delete_policy

    def refuse_second(*, name: str, **kwargs):
        if name == "b-second":
            raise registry.Conflict("Policy 'b-second' changed since you read it.")
        return real(name=name, **kwargs)

    monkeypatch.setattr(registry, "delete_policy", refuse_second)

    response = browser_for(operator).post(
        reverse("admin:meshcore_policy_changelist"),
        {"action": "delete_selected", "_selected_action": [first.pk, second.pk], "post": "yes"},
        follow=True,
    )

    assert response.status_code == 200
    assert any("b-second" in message for message in messages_of(response))
    assert Policy.objects.count() == 2
    assert not Event.objects.filter(type=EventType.POLICY_DELETED).exists()
