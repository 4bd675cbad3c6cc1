"""Policies in the admin: the spec is JSON checked against its kind, and saves go through the registry."""

from __future__ import annotations

import json

from django.urls import reverse

from meshcore import registry
from meshcore.models import Event, EventType, Policy
from tests.meshcore.admin_support import action, browser_for, loaded_form, messages_of
from tests.meshcore.api_support import events_since, last_event_id

ADD_URL = reverse("admin:meshcore_policy_add")
LIST_URL = reverse("admin:meshcore_policy_changelist")
PIN_SPEC = {"model": "resnet50", "nodes": ["gpu-a"]}


def change_url(policy: Policy) -> str:
    return reverse("admin:meshcore_policy_change", args=[policy.pk])


def new_policy(**fields) -> dict:
    return {"name": "pin-resnet", "kind": "pin", "spec": json.dumps(PIN_SPEC), "enabled": "on", "priority": "0"} | {
        key: json.dumps(value) if key == "spec" else value for key, value in fields.items()
    }


def spec_errors(response) -> list[str]:
    assert response.status_code == 200
    return response.context["adminform"].form.errors.get("spec", [])


def test_it_names_the_bad_field_of_a_spec_and_saves_nothing(operator):
    before = last_event_id()

    response = browser_for(operator).post(ADD_URL, new_policy(spec={**PIN_SPEC, "min_replicas": -1}))

    assert spec_errors(response) == ["min_replicas: Ensure this value is greater than or equal to 0."]
    assert "min_replicas: Ensure this value is greater than or equal to 0." in response.text
    assert not Policy.objects.exists()
    assert events_since(before) == []


def test_it_names_a_misspelt_field(operator):
    response = browser_for(operator).post(ADD_URL, new_policy(spec={**PIN_SPEC, "min_replica": 2}))

    assert spec_errors(response) == [
        "min_replica: Unknown field. Allowed: max_replicas, min_replicas, model, nodes, revision, selector."
    ]
    assert not Policy.objects.exists()


def test_it_names_nested_fields_in_the_path(operator):
    acl = {"subjects": {}, "models": ["*"], "actions": ["infer", "fly"], "effect": "allow"}

    response = browser_for(operator).post(ADD_URL, new_policy(kind="acl", spec=acl))

    errors = spec_errors(response)
    assert "subjects.users: Name at least one user, group or token." in errors
    assert 'actions.1: "fly" is not a valid choice.' in errors
    assert not Policy.objects.exists()


def test_it_checks_the_spec_against_the_kind_chosen(operator):
    response = browser_for(operator).post(ADD_URL, new_policy(kind="quota"))

    allowed = "Allowed: enforcement, max_concurrent, max_requests_per_second, scope, target."
    assert spec_errors(response) == [f"model: Unknown field. {allowed}", f"nodes: Unknown field. {allowed}"]
    assert not Policy.objects.exists()


def test_it_refuses_a_spec_that_is_not_an_object(operator):
    response = browser_for(operator).post(ADD_URL, new_policy(spec=["resnet50"]))

    assert spec_errors(response) == ["Must be a JSON object, not list."]


def test_it_refuses_text_that_is_not_json_and_keeps_it_in_the_form(operator):
    data = new_policy()
    data["spec"] = '{"model": "resnet50",'

    response = browser_for(operator).post(ADD_URL, data)

    assert spec_errors(response) == ["Enter a valid JSON."]
    assert "{&quot;model&quot;: &quot;resnet50&quot;," in response.text
    assert not Policy.objects.exists()


def test_it_creates_a_valid_policy_through_the_registry(operator):
    response = browser_for(operator).post(ADD_URL, new_policy(priority="5", description="resnet on gpu-a"))

    assert response.status_code == 302
    policy = Policy.objects.get(name="pin-resnet")
    assert (policy.owner, policy.priority, policy.version) == (operator, 5, 1)
    assert policy.spec == {**PIN_SPEC, "min_replicas": 1}  # normal form, defaults filled in
    created = Event.objects.get(type=EventType.POLICY_CREATED)
    assert (created.actor, created.data["policy"]) == ("olivia", "pin-resnet")


def test_it_shows_the_spec_as_indented_json(operator):
    policy = registry.create_policy(actor=operator, name="pin-resnet", kind="pin", spec=PIN_SPEC)

    response = browser_for(operator).get(change_url(policy))

    assert "{\n  &quot;min_replicas&quot;: 1,\n  &quot;model&quot;: &quot;resnet50&quot;," in response.text


def test_it_updates_only_the_changed_fields(operator):
    policy = registry.create_policy(actor=operator, name="pin-resnet", kind="pin", spec=PIN_SPEC)
    browser = browser_for(operator)
    data = loaded_form(browser.get(change_url(policy)))
    data["priority"] = "10"

    response = browser.post(change_url(policy), data)

    assert response.status_code == 302
    policy.refresh_from_db()
    assert (policy.priority, policy.version) == (10, 2)
    updated = Event.objects.get(type=EventType.POLICY_UPDATED)
    assert (updated.actor, updated.data["changed"]) == ("olivia", ["priority"])


def test_it_renames_a_policy(operator):
    policy = registry.create_policy(actor=operator, name="pin-resnet", kind="pin", spec=PIN_SPEC)
    browser = browser_for(operator)
    data = loaded_form(browser.get(change_url(policy)))
    data["name"] = "pin-resnet-eu"

    browser.post(change_url(policy), data)

    assert list(Policy.objects.values_list("name", flat=True)) == ["pin-resnet-eu"]
    assert Event.objects.get(type=EventType.POLICY_UPDATED).data["changed"] == ["name"]


def test_it_refuses_a_bad_spec_on_edit_and_keeps_the_old_one(operator):
    policy = registry.create_policy(actor=operator, name="pin-resnet", kind="pin", spec=PIN_SPEC)
    browser = browser_for(operator)
    data = loaded_form(browser.get(change_url(policy)))
    data["spec"] = json.dumps({**PIN_SPEC, "max_replicas": 0})

    response = browser.post(change_url(policy), data)

    assert spec_errors(response) == ["max_replicas: Ensure this value is greater than or equal to 1."]
    policy.refresh_from_db()
    assert (policy.spec, policy.version) == ({**PIN_SPEC, "min_replicas": 1}, 1)


def test_it_refuses_a_stale_edit_with_a_conflict_message(operator):
    policy = registry.create_policy(actor=operator, name="pin-resnet", kind="pin", spec=PIN_SPEC)
    browser = browser_for(operator)
    data = loaded_form(browser.get(change_url(policy)))
    registry.update_policy(actor="someone-else", name="pin-resnet", changes={"priority": 3})
    data["priority"] = "10"

    response = browser.post(change_url(policy), data, follow=True)

    assert response.status_code == 200
    assert any(
        "Policy 'pin-resnet' changed since you read it (you sent version 1, it is now 2)" in message
        for message in messages_of(response)
    )
    policy.refresh_from_db()
    assert (policy.priority, policy.version) == (3, 2)
    assert not Event.objects.filter(type=EventType.POLICY_UPDATED, actor="olivia").exists()


def test_it_deletes_a_policy_through_the_registry(operator):
    policy = registry.create_policy(actor=operator, name="pin-resnet", kind="pin", spec=PIN_SPEC)

    response = browser_for(operator).post(
        reverse("admin:meshcore_policy_delete", args=[policy.pk]), {"post": "yes"}, follow=True
    )

    assert response.status_code == 200
    assert not Policy.objects.exists()
    deleted = Event.objects.get(type=EventType.POLICY_DELETED)
    assert (deleted.actor, deleted.data["policy"]) == ("olivia", "pin-resnet")


def test_it_disables_and_enables_selected_policies(operator):
    policy = registry.create_policy(actor=operator, name="pin-resnet", kind="pin", spec=PIN_SPEC)
    browser = browser_for(operator)

    browser.post(LIST_URL, action("disable_policies", policy.pk))
    disabled = Policy.objects.get(pk=policy.pk).enabled
    browser.post(LIST_URL, action("enable_policies", policy.pk))

    assert disabled is False
    assert Policy.objects.get(pk=policy.pk).enabled is True
    changes = [event.data["changed"] for event in Event.objects.filter(type=EventType.POLICY_UPDATED)]
    assert changes == [["enabled"], ["enabled"]]


def test_it_sends_the_registry_only_what_the_user_changed(operator, monkeypatch):
    policy = registry.create_policy(actor=operator, name="pin-resnet", kind="pin", spec=PIN_SPEC)
    browser = browser_for(operator)
    data = loaded_form(browser.get(change_url(policy)))
    data["description"] = "pinned for latency"
    calls = []
    real = registry.update_policy

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(registry, "update_policy", spy)

    browser.post(change_url(policy), data)

    assert len(calls) == 1
    assert calls[0]["changes"] == {"description": "pinned for latency"}
    assert (calls[0]["name"], calls[0]["expected_version"], calls[0]["actor"]) == ("pin-resnet", 1, operator)
