"""What agents observe (GPUs, model instances) and the event log are read-only in the API."""

from __future__ import annotations

import pytest

from meshcore.models import Event, Gpu, ModelInstance
from tests.meshcore.api_support import API, make_gpu, make_instance, make_model, make_runtime

RESOURCES = ["gpus", "instances", "events"]


@pytest.fixture
def observed(registered_node):
    """One GPU, one model instance and the events registering them caused; their ids by resource."""
    gpu = make_gpu(registered_node, index=0, memory_total_bytes=80 * 2**30)
    runtime = make_runtime(registered_node)
    instance = make_instance(runtime, "resnet50", model=make_model("resnet50"))
    return {"gpus": gpu.pk, "instances": instance.pk, "events": Event.objects.latest("id").pk}


def test_it_lists_and_shows_gpus(operator_client, observed):
    listing = operator_client.get(f"{API}/gpus/")
    detail = operator_client.get(f"{API}/gpus/{observed['gpus']}/")

    assert listing.json()["count"] == 1
    assert detail.status_code == 200
    body = detail.json()
    assert (body["node"], body["index"], body["name"]) == ("gpu-a", 0, "NVIDIA H100 80GB HBM3")
    assert body["memory_total_bytes"] == 80 * 2**30


def test_it_lists_and_shows_model_instances(operator_client, observed):
    detail = operator_client.get(f"{API}/instances/{observed['instances']}/")

    assert detail.status_code == 200
    body = detail.json()
    assert (body["model_name"], body["node"], body["runtime"], body["state"]) == (
        "resnet50",
        "gpu-a",
        "triton",
        "ready",
    )
    assert body["in_catalog"] is True


def test_it_marks_instances_the_catalog_lacks(operator_client, registered_node):
    instance = make_instance(make_runtime(registered_node), "mystery")

    body = operator_client.get(f"{API}/instances/{instance.pk}/").json()

    assert (body["in_catalog"], body["model"]) == (False, None)


def test_it_lists_and_shows_events_newest_first(operator_client, observed):
    listing = operator_client.get(f"{API}/events/").json()
    detail = operator_client.get(f"{API}/events/{observed['events']}/")

    # The operator fixture's own account came first.
    assert [event["type"] for event in listing["results"]] == [
        "MODEL_CREATED",
        "RUNTIME_CREATED",
        "NODE_JOINED",
        "USER_CREATED",
    ]
    assert listing["results"][1]["node"] == "gpu-a"
    assert listing["results"][2]["actor"] == "olivia"
    assert detail.status_code == 200
    assert detail.json()["type"] == "MODEL_CREATED"


@pytest.mark.parametrize("resource", RESOURCES)
def test_it_refuses_writes_by_staff_with_405(operator_client, observed, resource):
    detail = f"{API}/{resource}/{observed[resource]}/"
    counts = (Gpu.objects.count(), ModelInstance.objects.count(), Event.objects.count())

    assert operator_client.post(f"{API}/{resource}/", {}, format="json").status_code == 405
    assert operator_client.put(detail, {}, format="json").status_code == 405
    assert operator_client.patch(detail, {}, format="json").status_code == 405
    assert operator_client.delete(detail).status_code == 405
    assert (Gpu.objects.count(), ModelInstance.objects.count(), Event.objects.count()) == counts


@pytest.mark.parametrize("resource", RESOURCES)
def test_it_refuses_writes_by_viewers_with_403(viewer_client, observed, resource):
    detail = f"{API}/{resource}/{observed[resource]}/"

    assert viewer_client.post(f"{API}/{resource}/", {}, format="json").status_code == 403
    assert viewer_client.put(detail, {}, format="json").status_code == 403
    assert viewer_client.delete(detail).status_code == 403
    assert Event.objects.filter(pk=observed["events"]).exists()


@pytest.mark.parametrize("resource", RESOURCES)
def test_it_refuses_strangers_with_401(stranger_client, observed, resource):
    assert stranger_client.get(f"{API}/{resource}/").status_code == 401
    assert stranger_client.post(f"{API}/{resource}/", {}, format="json").status_code == 401
    assert stranger_client.delete(f"{API}/{resource}/{observed[resource]}/").status_code == 401


@pytest.mark.parametrize("resource", RESOURCES)
def test_it_answers_404_for_unknown_ids(operator_client, db, resource):
    assert operator_client.get(f"{API}/{resource}/987654/").status_code == 404
