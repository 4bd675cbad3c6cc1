"""A write resent with the same Idempotency-Key gets the first answer, not a refusal caused by
the first attempt's own effect (a duplicate name, a version it moved on)."""

from __future__ import annotations

import uuid

from meshcore.models import EventType, Node, Policy
from tests.meshcore.api_support import API, VALID_SPECS, events_since, last_event_id


def retried(client, method: str, url: str, body: dict, **headers: str):
    """The same request twice with one key, as a client whose first attempt timed out."""
    key = str(uuid.uuid4())
    first = getattr(client, method)(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key, **headers)
    again = getattr(client, method)(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key, **headers)
    return first, again


def test_it_answers_a_retried_create_as_the_first_time(operator_client):
    before = last_event_id()

    first, again = retried(
        operator_client, "post", f"{API}/policies/", {"name": "p", "kind": "pin", "spec": VALID_SPECS["pin"]}
    )

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["version"] == first.json()["version"] == 1
    assert Policy.objects.count() == 1
    assert events_since(before) == [(EventType.POLICY_CREATED, "olivia")]


def test_it_answers_a_retried_versioned_update_as_the_first_time(operator_client, registered_node):
    before = last_event_id()

    first, again = retried(operator_client, "patch", f"{API}/nodes/gpu-a/", {"zone": "eu-2"}, HTTP_IF_MATCH='"1"')

    assert (first.status_code, again.status_code) == (200, 200)
    assert Node.objects.get(name="gpu-a").version == 2
    assert events_since(before) == [(EventType.NODE_UPDATED, "olivia")]


def test_it_still_refuses_a_duplicate_under_a_new_key(operator_client):
    body = {"name": "p", "kind": "pin", "spec": VALID_SPECS["pin"]}
    operator_client.post(f"{API}/policies/", body, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))

    response = operator_client.post(f"{API}/policies/", body, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))

    assert response.status_code == 409
    assert response.json()["detail"] == "A policy named 'p' already exists."
