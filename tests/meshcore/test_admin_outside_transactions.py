"""The admin writes through the registry outside any transaction, as it must under Raft: a
registry write waits for the projection, which another thread writes (`registry.commit`
refuses to run inside `transaction.atomic()` there). Django's admin wraps its change,
add and delete views in one; these tests run without the test's own transaction and fail
if a proposal is made inside any."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.urls import reverse

from meshcore import registry
from meshcore.models import Model, Node, Policy, User
from meshcore.replication.log import local_log
from tests.conftest import PASSWORD
from tests.meshcore.admin_support import action, browser_for, loaded_form, messages_of, pin_policy_form
from tests.meshcore.api_support import make_group

pytestmark = pytest.mark.django_db(transaction=True)

NEW_PASSWORD = "another-horse-battery-staple"


@pytest.fixture
def proposals(monkeypatch) -> list[dict]:
    """The batches proposed to the log, each checked for a transaction held by its caller."""
    log = local_log()
    real_propose = log.propose
    proposed: list[dict] = []

    def propose(batch: dict, timeout: float | None = None) -> dict:
        op = batch["ops"][0]
        assert not connection.in_atomic_block, f"{op['op']} {op['kind']} was proposed inside a transaction"
        proposed.append(batch)
        return real_propose(batch, timeout)

    monkeypatch.setattr(log, "propose", propose)
    return proposed


def kinds(proposed: list[dict]) -> list[tuple[str, str]]:
    return [(op["op"], op["kind"]) for batch in proposed for op in batch["ops"]]


def test_it_would_notice_a_proposal_inside_a_transaction(proposals):
    assert not connection.in_atomic_block  # no test transaction around this test

    with pytest.raises(AssertionError, match="inside a transaction"), transaction.atomic():
        registry.create_model(actor="setup", name="resnet50", platform="onnxruntime")


def test_it_adds_a_node(operator, proposals):
    response = browser_for(operator).post(reverse("admin:meshcore_node_add"), {"name": "gpu-b", "address": "10.0.0.12"})

    assert response.status_code == 302
    assert Node.objects.filter(name="gpu-b").exists()
    assert kinds(proposals) == [("create", "node"), ("create", "node_token")]


def test_it_changes_a_policy(operator, proposals):
    policy, url, browser, data = pin_policy_form(operator)
    data["priority"] = "5"

    response = browser.post(url, data)

    assert response.status_code == 302
    assert Policy.objects.get(pk=policy.pk).priority == 5
    assert kinds(proposals)[-1] == ("update", "policy")


def test_it_shows_a_stale_policy_edit_as_a_message(operator, proposals):
    policy, url, browser, data = pin_policy_form(operator)
    registry.update_policy(actor="someone-else", name="pin-resnet", changes={"priority": 3})
    data["priority"] = "5"

    response = browser.post(url, data, follow=True)

    assert any("changed since you read it" in message for message in messages_of(response))
    assert Policy.objects.get(pk=policy.pk).priority == 3


def test_it_deletes_a_model(operator, proposals):
    model = registry.create_model(actor=operator, name="resnet50", platform="onnxruntime")

    response = browser_for(operator).post(reverse("admin:meshcore_model_delete", args=[model.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert not Model.objects.exists()
    assert kinds(proposals)[-1] == ("delete", "model")


def test_it_deletes_selected_nodes(operator, proposals):
    first, _ = registry.create_node(actor=operator, name="gpu-a", address="10.0.0.11")
    second, _ = registry.create_node(actor=operator, name="gpu-b", address="10.0.0.12")

    browser_for(operator).post(
        reverse("admin:meshcore_node_changelist"), {**action("delete_selected", first.pk, second.pk), "post": "yes"}
    )

    assert not Node.objects.exists()
    assert kinds(proposals)[-1:] == [("delete", "node")] and len(proposals[-1]["ops"]) == 2


def test_it_adds_a_user_and_sets_their_groups(operator, proposals):
    team = make_group("team-a")
    browser = browser_for(operator)

    added = browser.post(
        reverse("admin:meshcore_user_add"),
        {"username": "wanda", "usable_password": "true", "password1": PASSWORD, "password2": PASSWORD},
    )
    user = User.objects.get(username="wanda")
    url = reverse("admin:meshcore_user_change", args=[user.pk])
    data = loaded_form(browser.get(url))
    joined = data.pop("date_joined")
    for prefix in ("", "initial-"):
        data.update({f"{prefix}date_joined_0": f"{joined:%Y-%m-%d}", f"{prefix}date_joined_1": f"{joined:%H:%M:%S}"})
    changed = browser.post(url, {**data, "groups": [team.pk]})

    assert (added.status_code, changed.status_code) == (302, 302)
    assert list(user.groups.all()) == [team]
    assert kinds(proposals)[-2:] == [("create", "user"), ("update", "user")]


def test_it_changes_a_password(operator, viewer, proposals):
    response = browser_for(operator).post(
        reverse("admin:auth_user_password_change", args=[viewer.pk]),
        {"usable_password": "true", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )

    assert response.status_code == 302
    viewer.refresh_from_db()
    assert viewer.check_password(NEW_PASSWORD)
    assert kinds(proposals)[-1] == ("update", "user")
    assert proposals[-1]["actor"] == "olivia"


def test_it_adds_and_deletes_a_group(operator, proposals):
    browser = browser_for(operator)

    added = browser.post(reverse("admin:auth_group_add"), {"name": "team-a"})
    group = Group.objects.get(name="team-a")
    deleted = browser.post(reverse("admin:auth_group_delete", args=[group.pk]), {"post": "yes"})

    assert (added.status_code, deleted.status_code) == (302, 302)
    assert not Group.objects.exists()
    assert kinds(proposals)[-2:] == [("create", "group"), ("delete", "group")]
