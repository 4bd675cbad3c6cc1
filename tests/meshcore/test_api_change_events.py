"""Every change made through the API records exactly one event, by the user who made it,
whether they signed in or sent an API token."""

from __future__ import annotations

from typing import Any

import pytest

from meshcore.models import Event
from tests.meshcore.api_support import (
    API,
    VALID_SPECS,
    events_since,
    last_event_id,
    make_model,
    make_policy,
    make_runtime,
)

# (name, method, path, body, event type); {model} and {runtime} are filled in with ids.
CHANGES: list[tuple[str, str, str, dict[str, Any] | None, str]] = [
    ("register node", "post", "nodes/", {"name": "gpu-b", "address": "10.0.0.12"}, "NODE_JOINED"),
    ("update node", "patch", "nodes/gpu-a/", {"zone": "eu-2"}, "NODE_UPDATED"),
    ("replace node", "put", "nodes/gpu-a/", {"name": "gpu-a", "address": "10.0.0.99"}, "NODE_UPDATED"),
    ("drain node", "post", "nodes/gpu-a/drain/", None, "NODE_DRAINING"),
    ("rotate node token", "post", "nodes/gpu-a/rotate-token/", None, "NODE_TOKEN_ROTATED"),
    ("revoke node token", "post", "nodes/gpu-a/revoke-token/", None, "NODE_TOKEN_REVOKED"),
    ("delete node", "delete", "nodes/gpu-a/", None, "NODE_LEFT"),
    ("add model", "post", "models/", {"name": "bert", "platform": "python"}, "MODEL_CREATED"),
    ("update model", "patch", "models/{model}/", {"platform": "python"}, "MODEL_UPDATED"),
    ("delete model", "delete", "models/{model}/", None, "MODEL_DELETED"),
    (
        "add runtime",
        "post",
        "runtimes/",
        {"node": "gpu-a", "name": "t2", "http_url": "http://10.0.0.11:9001"},
        "RUNTIME_CREATED",
    ),
    ("update runtime", "patch", "runtimes/{runtime}/", {"grpc_url": "h:8001"}, "RUNTIME_UPDATED"),
    ("delete runtime", "delete", "runtimes/{runtime}/", None, "RUNTIME_DELETED"),
    ("add policy", "post", "policies/", {"name": "acl", "kind": "acl", "spec": VALID_SPECS["acl"]}, "POLICY_CREATED"),
    ("update policy", "patch", "policies/existing/", {"priority": 3}, "POLICY_UPDATED"),
    ("delete policy", "delete", "policies/existing/", None, "POLICY_DELETED"),
    ("issue token", "post", "tokens/", {"name": "ci"}, "TOKEN_ISSUED"),
]


@pytest.fixture
def ids(registered_node):
    return {
        "model": make_model("resnet50").pk,
        "runtime": make_runtime(registered_node).pk,
        "policy": make_policy("existing").pk,
    }


def send(client, method: str, path: str, body: dict | None, ids: dict):
    url = f"{API}/{path.format(**ids)}"
    response = getattr(client, method)(url, body, format="json") if body is not None else getattr(client, method)(url)
    assert response.status_code < 300, response.content
    return response


@pytest.mark.parametrize(("name", "method", "path", "body", "event_type"), CHANGES, ids=[c[0] for c in CHANGES])
def test_it_records_one_event_by_the_signed_in_operator(operator_client, ids, name, method, path, body, event_type):
    before = last_event_id()

    send(operator_client, method, path, body, ids)

    assert events_since(before) == [(event_type, "olivia")]


@pytest.mark.parametrize(("name", "method", "path", "body", "event_type"), CHANGES, ids=[c[0] for c in CHANGES])
def test_it_records_one_event_by_the_token_holder(operator_token_client, ids, name, method, path, body, event_type):
    before = last_event_id()

    send(operator_token_client, method, path, body, ids)

    assert events_since(before) == [(event_type, "olivia")]


def test_it_records_one_event_when_revoking_an_api_token(operator_client, ids):
    token_id = send(operator_client, "post", "tokens/", {"name": "ci"}, ids).json()["id"]
    before = last_event_id()

    send(operator_client, "delete", f"tokens/{token_id}/", None, ids)

    assert events_since(before) == [("TOKEN_REVOKED", "olivia")]


def test_it_records_no_event_for_refused_changes(operator_client, viewer_client, ids):
    before = last_event_id()

    operator_client.post(f"{API}/nodes/", {"name": "gpu-a", "address": "x"}, format="json")  # duplicate
    operator_client.patch(f"{API}/nodes/gpu-a/", {"roles": ["toaster"]}, format="json")  # invalid
    operator_client.patch(f"{API}/nodes/gpu-a/", {"zone": "x", "version": 9}, format="json")  # stale
    viewer_client.post(f"{API}/nodes/gpu-a/drain/")  # forbidden

    assert events_since(before) == []
    assert Event.objects.filter(type="NODE_UPDATED").count() == 0
