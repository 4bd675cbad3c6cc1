"""Every admin page renders for an operator; observed state is view-only; only staff get in."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from meshcore import registry
from meshcore.models import ApiToken, Event, Gpu, InstanceState, Model, ModelInstance, Node, Policy, Runtime
from tests.meshcore.admin_support import browser_for

ALL_MODELS = ("node", "gpu", "model", "runtime", "modelinstance", "policy", "apitoken", "event")
EDITABLE_MODELS = ("node", "model", "runtime", "policy", "apitoken")
OBSERVED_MODELS = ("gpu", "modelinstance", "event")


@pytest.fixture
def mesh(operator, registered_node):
    """One row of every kind, desired state through the registry, observed state as ingest writes it."""
    gpu = Gpu.objects.create(
        node=registered_node, uuid="GPU-1", index=0, name="NVIDIA H100", memory_total_bytes=80 * 2**30
    )
    model = registry.create_model(actor=operator, name="resnet50", platform="onnxruntime")
    runtime = registry.create_runtime(actor=operator, node_name="gpu-a", http_url="http://10.0.0.11:8000")
    instance = ModelInstance.objects.create(
        runtime=runtime, model=model, model_name="resnet50", model_revision="1", state=InstanceState.READY
    )
    policy = registry.create_policy(
        actor=operator, name="pin-resnet", kind="pin", spec={"model": "resnet50", "nodes": ["gpu-a"]}
    )
    token, _ = registry.issue_api_token(actor=operator, user=operator, name="ci")
    return {
        "node": registered_node,
        "gpu": gpu,
        "model": model,
        "runtime": runtime,
        "modelinstance": instance,
        "policy": policy,
        "apitoken": token,
        "event": Event.objects.first(),
    }


@pytest.mark.parametrize("model_name", ALL_MODELS)
def test_it_renders_every_list_and_detail_page(operator, mesh, model_name):
    browser = browser_for(operator)
    listing = browser.get(reverse(f"admin:meshcore_{model_name}_changelist"))
    detail = browser.get(reverse(f"admin:meshcore_{model_name}_change", args=[mesh[model_name].pk]))
    assert listing.status_code == 200
    assert mesh[model_name].pk in [row.pk for row in listing.context["cl"].result_list]
    assert detail.status_code == 200
    assert detail.context["original"].pk == mesh[model_name].pk


@pytest.mark.parametrize("model_name", EDITABLE_MODELS)
def test_it_renders_the_add_page_of_desired_state(operator, mesh, model_name):
    response = browser_for(operator).get(reverse(f"admin:meshcore_{model_name}_add"))
    assert response.status_code == 200
    assert "<form" in response.text


@pytest.mark.parametrize("model_name", ALL_MODELS)
def test_it_renders_lists_filtered_and_searched(operator, mesh, model_name):
    url = reverse(f"admin:meshcore_{model_name}_changelist")
    response = browser_for(operator).get(url, {"q": "gpu-a"})
    assert response.status_code == 200


@pytest.mark.parametrize("model_name", OBSERVED_MODELS)
def test_it_offers_no_add_for_observed_state(operator, mesh, model_name):
    browser = browser_for(operator)
    add_url = reverse(f"admin:meshcore_{model_name}_add")
    listing = browser.get(reverse(f"admin:meshcore_{model_name}_changelist"))
    assert listing.status_code == 200
    assert add_url not in listing.text
    assert browser.get(add_url).status_code == 403
    assert browser.post(add_url, {}).status_code == 403


def test_it_refuses_changes_to_a_gpu(operator, mesh):
    gpu = mesh["gpu"]
    browser = browser_for(operator)
    page = browser.get(reverse("admin:meshcore_gpu_change", args=[gpu.pk]))
    response = browser.post(
        reverse("admin:meshcore_gpu_change", args=[gpu.pk]), {"name": "Fake GPU", "index": 7, "node": gpu.node_id}
    )
    assert "View GPU" in page.text
    assert 'name="_save"' not in page.text
    assert response.status_code == 403
    gpu.refresh_from_db()
    assert (gpu.name, gpu.index) == ("NVIDIA H100", 0)


def test_it_refuses_changes_and_deletion_of_events_and_model_instances(operator, mesh):
    browser = browser_for(operator)
    event, instance = mesh["event"], mesh["modelinstance"]
    changed_event = browser.post(reverse("admin:meshcore_event_change", args=[event.pk]), {"type": "LEADER_CHANGED"})
    deleted_event = browser.post(reverse("admin:meshcore_event_delete", args=[event.pk]), {"post": "yes"})
    changed_instance = browser.post(
        reverse("admin:meshcore_modelinstance_change", args=[instance.pk]), {"state": "failed"}
    )
    assert (changed_event.status_code, deleted_event.status_code, changed_instance.status_code) == (403, 403, 403)
    event.refresh_from_db()
    instance.refresh_from_db()
    assert event.type != "LEADER_CHANGED"
    assert instance.state == InstanceState.READY


def test_it_shows_observed_node_fields_read_only(operator, mesh):
    node = mesh["node"]
    Node.objects.filter(pk=node.pk).update(health="healthy", agent_version="1.2.3", last_seen=timezone.now())
    response = browser_for(operator).get(reverse("admin:meshcore_node_change", args=[node.pk]))
    form = response.context["adminform"].form
    assert {"health", "last_seen", "agent_version", "draining", "name"}.isdisjoint(form.fields)
    assert "1.2.3" in response.text


def test_it_never_shows_a_token_digest(operator, mesh):
    browser = browser_for(operator)
    node_digest = mesh["node"].token.digest
    api_digest = mesh["apitoken"].digest
    pages = [
        reverse("admin:meshcore_node_changelist"),
        reverse("admin:meshcore_node_change", args=[mesh["node"].pk]),
        reverse("admin:meshcore_apitoken_changelist"),
        reverse("admin:meshcore_apitoken_change", args=[mesh["apitoken"].pk]),
        reverse("admin:meshcore_event_changelist"),
    ]
    for url in pages:
        text = browser.get(url).text
        assert node_digest not in text, url
        assert api_digest not in text, url
    assert mesh["apitoken"].prefix in browser.get(pages[3]).text


def test_it_filters_nodes_by_role(operator, registered_node):
    registry.create_node(actor=operator, name="router-1", address="10.0.0.2", roles=["router"])
    response = browser_for(operator).get(reverse("admin:meshcore_node_changelist"), {"role": "router"})
    names = [node.name for node in response.context["cl"].result_list]
    assert names == ["router-1"]


def test_it_sends_a_non_staff_user_to_the_login_page(viewer, mesh):
    browser = browser_for(viewer)
    for model_name in ALL_MODELS:
        url = reverse(f"admin:meshcore_{model_name}_changelist")
        response = browser.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_it_lets_a_non_staff_user_change_nothing(viewer, registered_node):
    url = reverse("admin:meshcore_node_change", args=[registered_node.pk])
    response = browser_for(viewer).post(url, {"address": "evil.example", "version": registered_node.version})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert Node.objects.get(pk=registered_node.pk).address == "10.0.0.11"
    assert not Policy.objects.exists() and not Model.objects.exists() and not Runtime.objects.exists()
    assert not ApiToken.objects.exists()


def test_it_offers_roles_as_checkboxes_and_hides_observed_fields_when_adding(operator, db):
    response = browser_for(operator).get(reverse("admin:meshcore_node_add"))

    for role in ("gpu", "control", "router"):
        assert f'type="checkbox" name="roles" value="{role}"' in response.text
    assert list(response.context["adminform"].form.fields) == ["name", "address", "roles", "zone", "labels"]
    assert "Last seen" not in response.text


def test_it_carries_the_loaded_version_in_the_change_form(operator, registered_node):
    registry.update_node(actor=operator, name="gpu-a", changes={"zone": "eu-2"})

    response = browser_for(operator).get(reverse("admin:meshcore_node_change", args=[registered_node.pk]))

    assert '<input type="hidden" name="version" value="2"' in response.text
