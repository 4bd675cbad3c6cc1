"""Triton endpoints on nodes through /api/v1/runtimes/."""

from __future__ import annotations

import pytest

from meshcore.models import EventType, Runtime
from tests.meshcore.api_support import API, events_since, last_event_id, make_node, make_runtime

TRITON = {"node": "gpu-a", "name": "triton", "http_url": "http://10.0.0.11:8000", "grpc_url": "10.0.0.11:8001"}


def test_it_adds_a_runtime_to_a_node(operator_client, registered_node):
    before = last_event_id()

    response = operator_client.post(f"{API}/runtimes/", TRITON, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["node"], body["name"], body["version"], body["health"]) == ("gpu-a", "triton", 1, "unknown")
    runtime = Runtime.objects.get(pk=body["id"])
    assert runtime.node == registered_node
    assert runtime.grpc_url == "10.0.0.11:8001"
    assert events_since(before) == [(EventType.RUNTIME_CREATED, "olivia")]


def test_it_refuses_a_duplicate_runtime_name_on_a_node_with_409(operator_client, registered_node):
    make_runtime(registered_node)

    response = operator_client.post(f"{API}/runtimes/", TRITON, format="json")

    assert response.status_code == 409
    assert "triton" in response.json()["detail"]
    assert Runtime.objects.count() == 1


def test_it_allows_the_same_runtime_name_on_another_node(operator_client, registered_node):
    make_runtime(registered_node)
    make_node("gpu-b")

    response = operator_client.post(f"{API}/runtimes/", {**TRITON, "node": "gpu-b"}, format="json")

    assert response.status_code == 201
    assert Runtime.objects.filter(name="triton").count() == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"node": "nope"}, "node"),
        ({"node": None}, "node"),
        ({"http_url": "not a url"}, "http_url"),
        ({"metrics_url": "ftp//x"}, "metrics_url"),
        ({"name": "Not A Slug"}, "name"),
    ],
)
def test_it_rejects_bad_fields_with_400_naming_the_field(operator_client, registered_node, change, field):
    response = operator_client.post(f"{API}/runtimes/", {**TRITON, **change}, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert not Runtime.objects.exists()


def test_it_updates_a_runtime_and_bumps_its_version(operator_client, registered_node):
    runtime = make_runtime(registered_node)
    before = last_event_id()

    response = operator_client.patch(
        f"{API}/runtimes/{runtime.pk}/", {"metrics_url": "http://10.0.0.11:8002/metrics"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["version"] == 2
    runtime.refresh_from_db()
    assert runtime.metrics_url == "http://10.0.0.11:8002/metrics"
    assert events_since(before) == [(EventType.RUNTIME_UPDATED, "olivia")]


def test_it_refuses_moving_a_runtime_to_another_node(operator_client, registered_node):
    runtime = make_runtime(registered_node)
    make_node("gpu-b")

    response = operator_client.patch(f"{API}/runtimes/{runtime.pk}/", {"node": "gpu-b"}, format="json")

    assert response.status_code == 400
    assert "node" in response.json()
    runtime.refresh_from_db()
    assert runtime.node == registered_node


def test_it_refuses_renaming_onto_an_existing_runtime_with_409(operator_client, registered_node):
    make_runtime(registered_node, name="triton")
    other = make_runtime(registered_node, name="triton-2")

    response = operator_client.patch(f"{API}/runtimes/{other.pk}/", {"name": "triton"}, format="json")

    assert response.status_code == 409
    other.refresh_from_db()
    assert other.name == "triton-2"


def test_it_reads_and_deletes_a_runtime(operator_client, registered_node):
    runtime = make_runtime(registered_node)

    detail = operator_client.get(f"{API}/runtimes/{runtime.pk}/")
    before = last_event_id()
    deleted = operator_client.delete(f"{API}/runtimes/{runtime.pk}/")

    assert detail.status_code == 200
    assert detail.json()["http_url"] == "http://10.0.0.11:8000"
    assert deleted.status_code == 204
    assert not Runtime.objects.exists()
    assert events_since(before) == [(EventType.RUNTIME_DELETED, "olivia")]


def test_it_answers_404_for_an_unknown_runtime(operator_client):
    assert operator_client.get(f"{API}/runtimes/424242/").status_code == 404
    assert operator_client.delete(f"{API}/runtimes/424242/").status_code == 404
