"""Optimistic concurrency: every write bumps `version`; GET answers an ETag of it; a stale
version (in the body or If-Match) is refused with 409 and changes nothing."""

from __future__ import annotations

import pytest

from meshcore.models import Model, Node, Policy, Runtime
from tests.meshcore.api_support import API, events_since, last_event_id, make_model, make_policy, make_runtime


@pytest.fixture
def resources(registered_node):
    """(detail URL, a change to send, the row) for each versioned resource."""
    model = make_model("resnet50")
    runtime = make_runtime(registered_node)
    policy = make_policy("team-a-rps")
    return {
        "node": (f"{API}/nodes/gpu-a/", {"zone": "eu-9"}, registered_node),
        "model": (f"{API}/models/{model.pk}/", {"description": "changed"}, model),
        "runtime": (f"{API}/runtimes/{runtime.pk}/", {"grpc_url": "changed:8001"}, runtime),
        "policy": (f"{API}/policies/team-a-rps/", {"priority": 7}, policy),
    }


KINDS = ["node", "model", "runtime", "policy"]


def bump(client, url: str, change: dict) -> None:
    """Someone else's write, which moves the resource to version 2."""
    response = client.patch(url, change, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["version"] == 2


def stale_change(change: dict) -> dict:
    """A different value for each field of `change`, as a writer who read version 1 would send."""
    return {key: f"{value}-again" if isinstance(value, str) else value + 1 for key, value in change.items()}


def patch_as_of_version_1(client, url: str, change: dict, version_in: str):
    """PATCH `change` as a writer who read version 1, with that version in the body (`version_in`
    "body") or in If-Match ("if_match")."""
    if version_in == "body":
        return client.patch(url, {**change, "version": 1}, format="json")
    return client.patch(url, change, format="json", HTTP_IF_MATCH='"1"')


def accepted_at_version_1(client, url: str, change: dict, row, version_in: str) -> None:
    """The writer read the current version: the change is accepted and moves the row to version 2."""
    response = patch_as_of_version_1(client, url, change, version_in)

    assert response.status_code == 200, response.content
    row.refresh_from_db()
    assert row.version == 2


def refused_at_version_1(client, url: str, change: dict, version_in: str):
    """Someone else's write moves the resource to version 2 first: the writer's change is refused with
    409 and changes nothing, neither the resource nor the events. The refusal."""
    bump(client, url, change)
    snapshot = client.get(url).json()
    before = last_event_id()

    response = patch_as_of_version_1(client, url, stale_change(change), version_in)

    assert response.status_code == 409, response.content
    assert client.get(url).json() == snapshot
    assert events_since(before) == []
    return response


@pytest.mark.parametrize("kind", KINDS)
def test_it_answers_the_version_as_an_etag(operator_client, resources, kind):
    url, change, _ = resources[kind]

    first = operator_client.get(url)
    bump(operator_client, url, change)
    second = operator_client.get(url)

    assert first["ETag"] == '"1"'
    assert first.json()["version"] == 1
    assert second["ETag"] == '"2"'


@pytest.mark.parametrize("kind", KINDS)
def test_it_accepts_the_current_version_in_the_body(operator_client, resources, kind):
    url, change, row = resources[kind]

    accepted_at_version_1(operator_client, url, change, row, "body")


@pytest.mark.parametrize("kind", KINDS)
def test_it_accepts_the_current_version_in_if_match(operator_client, resources, kind):
    url, change, row = resources[kind]

    accepted_at_version_1(operator_client, url, change, row, "if_match")


@pytest.mark.parametrize("kind", KINDS)
def test_it_refuses_a_stale_version_in_the_body(operator_client, resources, kind):
    url, change, _ = resources[kind]

    response = refused_at_version_1(operator_client, url, change, "body")

    assert "you sent version 1, it is now 2" in response.json()["detail"]


@pytest.mark.parametrize("kind", KINDS)
def test_it_refuses_a_stale_if_match(operator_client, resources, kind):
    url, change, _ = resources[kind]

    refused_at_version_1(operator_client, url, change, "if_match")


def test_it_refuses_a_stale_version_on_put(operator_client, registered_node):
    bump(operator_client, f"{API}/nodes/gpu-a/", {"zone": "eu-2"})

    response = operator_client.put(
        f"{API}/nodes/gpu-a/", {"name": "gpu-a", "address": "10.1.1.1", "version": 1}, format="json"
    )

    assert response.status_code == 409
    registered_node.refresh_from_db()
    assert registered_node.address == "10.0.0.11"


def test_it_prefers_the_body_version_over_if_match(operator_client, registered_node):
    response = operator_client.patch(
        f"{API}/nodes/gpu-a/", {"zone": "eu-2", "version": 1}, format="json", HTTP_IF_MATCH='"7"'
    )

    assert response.status_code == 200
    assert Node.objects.get(name="gpu-a").zone == "eu-2"


@pytest.mark.parametrize("kind", KINDS)
def test_it_refuses_a_delete_with_a_stale_if_match(operator_client, resources, kind):
    url, change, row = resources[kind]
    bump(operator_client, url, change)

    response = operator_client.delete(url, HTTP_IF_MATCH='"1"')

    assert response.status_code == 409
    assert type(row).objects.filter(pk=row.pk).exists()


@pytest.mark.parametrize("kind", KINDS)
def test_it_deletes_with_the_current_if_match(operator_client, resources, kind):
    url, _, row = resources[kind]

    response = operator_client.delete(url, HTTP_IF_MATCH='"1"')

    assert response.status_code == 204
    assert not type(row).objects.filter(pk=row.pk).exists()


@pytest.mark.parametrize("if_match", ['"*"', "*", ""])
def test_it_treats_a_wildcard_or_empty_if_match_as_unconditional(operator_client, registered_node, if_match):
    bump(operator_client, f"{API}/nodes/gpu-a/", {"zone": "eu-2"})

    response = operator_client.patch(f"{API}/nodes/gpu-a/", {"zone": "eu-3"}, format="json", HTTP_IF_MATCH=if_match)

    assert response.status_code == 200
    assert Node.objects.get(name="gpu-a").zone == "eu-3"


@pytest.mark.parametrize("if_match", ['W/"1"', '"one"', "-1"])
def test_it_rejects_an_if_match_that_is_not_a_version(operator_client, registered_node, if_match):
    patched = operator_client.patch(f"{API}/nodes/gpu-a/", {"zone": "eu-2"}, format="json", HTTP_IF_MATCH=if_match)
    deleted = operator_client.delete(f"{API}/nodes/gpu-a/", HTTP_IF_MATCH=if_match)

    assert (patched.status_code, deleted.status_code) == (400, 400)
    assert "If-Match" in patched.json()
    assert Node.objects.get(name="gpu-a").zone == "eu-1"


@pytest.mark.parametrize("version", [0, -3, "two", None])
def test_it_rejects_a_version_that_is_not_a_positive_integer(operator_client, registered_node, version):
    response = operator_client.patch(f"{API}/nodes/gpu-a/", {"zone": "eu-2", "version": version}, format="json")

    assert response.status_code == 400
    assert "version" in response.json()


def test_it_bumps_the_version_once_per_write(operator_client, resources):
    for kind in KINDS:
        url, change, _ = resources[kind]
        for expected in (2, 3):
            flipped = {
                key: f"{value}{expected}" if isinstance(value, str) else value + expected
                for key, value in change.items()
            }
            assert operator_client.patch(url, flipped, format="json").json()["version"] == expected
    assert [Model.objects.get().version, Runtime.objects.get().version, Policy.objects.get().version] == [3, 3, 3]
    assert Node.objects.get(name="gpu-a").version == 3
