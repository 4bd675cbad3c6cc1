"""A change the registry refuses is an error message on the page, never a server error."""

from __future__ import annotations

from django.contrib.admin.models import DELETION, LogEntry
from django.urls import reverse

from meshcore import registry
from meshcore.models import Event, EventType, Node, Policy
from meshcore.replication.log import local_log
from tests.meshcore.admin_support import PIN_SPEC, browser_for, messages_of, pin_policy_form


def unavailable(**kwargs):
    raise registry.Unavailable("The registry has no quorum right now; try again in a few seconds.")


def test_it_shows_an_unavailable_registry_on_save(operator, monkeypatch):
    policy, url, browser, data = pin_policy_form(operator)
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
    monkeypatch.setattr(registry, "delete_nodes", unavailable)

    response = browser_for(operator).post(
        reverse("admin:meshcore_node_delete", args=[registered_node.pk]), {"post": "yes"}, follow=True
    )

    assert response.status_code == 200
    assert any("no quorum" in message for message in messages_of(response))
    assert Node.objects.filter(pk=registered_node.pk).exists()
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()  # the history says nothing was deleted


def test_it_deletes_all_selected_or_none(operator, monkeypatch):
    first = registry.create_policy(actor=operator, name="a-first", kind="pin", spec=PIN_SPEC)
    second = registry.create_policy(actor=operator, name="b-second", kind="pin", spec=PIN_SPEC)
    log = local_log()
    real_propose = log.propose

    def someone_else_deletes_the_second_first(batch, timeout=None):
        # The operator's selection is read; before its change commits, another writer's does.
        monkeypatch.setattr(log, "propose", real_propose)
        registry.delete_policy(actor="someone-else", name="b-second")
        return real_propose(batch, timeout)

    monkeypatch.setattr(log, "propose", someone_else_deletes_the_second_first)

    response = browser_for(operator).post(
        reverse("admin:meshcore_policy_changelist"),
        {"action": "delete_selected", "_selected_action": [first.pk, second.pk], "post": "yes"},
        follow=True,
    )

    assert response.status_code == 200
    assert any("No policy with name='b-second'" in message for message in messages_of(response))
    assert list(Policy.objects.values_list("name", flat=True)) == ["a-first"]
    assert list(Event.objects.filter(type=EventType.POLICY_DELETED).values_list("actor", flat=True)) == ["someone-else"]
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()
