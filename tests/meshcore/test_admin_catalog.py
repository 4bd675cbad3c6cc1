"""Models and runtimes in the admin: created, edited and deleted through the registry."""

from __future__ import annotations

import json

from django.urls import reverse

from meshcore import registry
from meshcore.models import Event, EventType, Model, ModelInstance, Runtime
from tests.meshcore.admin_support import browser_for, loaded_form, messages_of


def test_it_adds_a_model_to_the_catalog(operator):
    response = browser_for(operator).post(
        reverse("admin:meshcore_model_add"),
        {"name": "resnet50", "revision": "2", "platform": "onnxruntime", "config": json.dumps({"max_batch_size": 8})},
    )

    assert response.status_code == 302
    model = Model.objects.get(name="resnet50")
    assert (model.revision, model.config) == ("2", {"max_batch_size": 8})
    created = Event.objects.get(type=EventType.MODEL_CREATED)
    assert (created.actor, created.data["id"]) == ("olivia", model.pk)


def test_it_refuses_a_model_config_that_is_not_an_object(operator):
    response = browser_for(operator).post(
        reverse("admin:meshcore_model_add"), {"name": "resnet50", "revision": "1", "platform": "onnx", "config": "[1]"}
    )

    assert response.status_code == 200
    assert "Must be a JSON object" in response.context["adminform"].form.errors["config"][0]
    assert not Model.objects.exists()


def test_it_edits_a_model_and_refuses_a_stale_edit(operator):
    model = registry.create_model(actor=operator, name="resnet50", platform="onnxruntime")
    url = reverse("admin:meshcore_model_change", args=[model.pk])
    browser = browser_for(operator)

    data = loaded_form(browser.get(url))
    data["description"] = "ImageNet classifier"
    browser.post(url, data)
    stale = dict(data, description="lost update")
    refused = browser.post(url, stale, follow=True)

    model.refresh_from_db()
    assert (model.description, model.version) == ("ImageNet classifier", 2)
    assert Event.objects.get(type=EventType.MODEL_UPDATED).data["changed"] == ["description"]
    assert any("changed since you read it" in message for message in messages_of(refused))


def test_it_deletes_a_model_and_keeps_what_runtimes_report(operator, registered_node):
    model = registry.create_model(actor=operator, name="resnet50", platform="onnxruntime")
    runtime = registry.create_runtime(actor=operator, node_name="gpu-a", http_url="http://10.0.0.11:8000")
    instance = ModelInstance.objects.create(runtime=runtime, model=model, model_name="resnet50")

    browser_for(operator).post(reverse("admin:meshcore_model_delete", args=[model.pk]), {"post": "yes"})

    assert not Model.objects.exists()
    instance.refresh_from_db()
    assert instance.model is None and instance.model_name == "resnet50"
    assert Event.objects.get(type=EventType.MODEL_DELETED).actor == "olivia"


def test_it_adds_a_runtime_to_a_node(operator, registered_node):
    response = browser_for(operator).post(
        reverse("admin:meshcore_runtime_add"),
        {"node": registered_node.pk, "name": "triton", "http_url": "http://10.0.0.11:8000", "grpc_url": ""},
    )

    assert response.status_code == 302
    runtime = Runtime.objects.get()
    assert (runtime.node, runtime.http_url) == (registered_node, "http://10.0.0.11:8000")
    created = Event.objects.get(type=EventType.RUNTIME_CREATED)
    assert (created.node_id, created.actor) == (registered_node.pk, "olivia")


def test_it_edits_a_runtime_but_not_its_node_or_health(operator, registered_node):
    other, _ = registry.create_node(actor=operator, name="gpu-b", address="10.0.0.12")
    runtime = registry.create_runtime(actor=operator, node_name="gpu-a", http_url="http://10.0.0.11:8000")
    url = reverse("admin:meshcore_runtime_change", args=[runtime.pk])
    browser = browser_for(operator)
    data = loaded_form(browser.get(url))
    data.update(http_url="http://10.0.0.11:9000", node=other.pk, health="healthy")

    browser.post(url, data)

    runtime.refresh_from_db()
    assert (runtime.http_url, runtime.node_id, runtime.health) == (
        "http://10.0.0.11:9000",
        registered_node.pk,
        "unknown",
    )
    assert Event.objects.get(type=EventType.RUNTIME_UPDATED).data["changed"] == ["http_url"]


def test_it_deletes_a_runtime_with_its_instances(operator, registered_node):
    runtime = registry.create_runtime(actor=operator, node_name="gpu-a", http_url="http://10.0.0.11:8000")
    ModelInstance.objects.create(runtime=runtime, model_name="resnet50")

    browser_for(operator).post(reverse("admin:meshcore_runtime_delete", args=[runtime.pk]), {"post": "yes"})

    assert not Runtime.objects.exists() and not ModelInstance.objects.exists()
    assert Event.objects.get(type=EventType.RUNTIME_DELETED).actor == "olivia"
