"""Bad input gets a 4xx that says what was wrong, never a 500: malformed bodies, wrong
types, nulls, huge numbers, lists for objects, unknown objects and URLs."""

from __future__ import annotations

from typing import Any

import pytest

from meshcore import registry
from meshcore.models import ApiToken, Model, Node, Policy
from tests.meshcore.api_support import (
    API,
    VALID_SPECS,
    commit_ops,
    events_since,
    last_event_id,
    make_model,
    make_policy,
    make_runtime,
)

GARBAGE: list[Any] = [
    None,
    True,
    0,
    -1,
    10**30,
    1.5e308,
    "",
    "x" * 5000,
    "a\u0000b",
    "日本語",
    "'; DROP TABLE meshcore_node; --",
    [],
    [1, 2],
    [{"a": 1}],
    {},
    {"a": None},
    {"a": [1, {"b": {}}]},
    {"x" * 300: "y"},
]

# Raw bodies the JSON parser sees as they are, including what Python's json reads but
# databases and strict JSON do not (NaN, 1e999) and nesting deeper than the parser's stack.
RAW_BODIES = [
    "",
    "{",
    "}",
    "null",
    "[]",
    "[{}]",
    "1",
    '"a string"',
    "true",
    '{"name": NaN}',
    '{"name": Infinity}',
    '{"version": 1e999}',
    '{"config": {"x": 1e999}, "name": "m", "platform": "python"}',
    '{"name": "x", "name": "y"}',
    "[" * 5000 + "]" * 5000,
    '{"a":' * 5000 + "1" + "}" * 5000,
    '{"labels": ' + "[" * 900 + "]" * 900 + "}",
    '{"config": ' + "[" * 900 + "]" * 900 + ', "name": "m", "platform": "python"}',
    '{"spec": ' + "[" * 900 + "]" * 900 + ', "name": "p", "kind": "pin"}',
    '{"name": "\\ud800"}',
]

VALID_BODIES: dict[str, dict[str, Any]] = {
    "nodes": {"name": "gpu-z", "address": "10.0.0.99", "roles": ["gpu"], "zone": "eu-1", "labels": {"a": "b"}},
    "models": {"name": "bert", "platform": "python", "revision": "1", "config": {}, "description": ""},
    "runtimes": {"node": "gpu-a", "name": "triton-z", "http_url": "http://10.0.0.11:9000", "grpc_url": ""},
    "policies": {"name": "p", "kind": "pin", "spec": VALID_SPECS["pin"], "enabled": True, "priority": 1},
    "tokens": {"name": "ci", "user": "olivia", "tenant": None, "expires_at": None},
}
EXTRA_FIELDS = ["version", "id", "metrics_url", "description", "draining", "health", "owner", "token"]


@pytest.fixture
def details(registered_node):
    """A detail URL for each writable resource."""
    model = make_model("resnet50")
    runtime = make_runtime(registered_node)
    make_policy("existing")
    return {
        "nodes": f"{API}/nodes/gpu-a/",
        "models": f"{API}/models/{model.pk}/",
        "runtimes": f"{API}/runtimes/{runtime.pk}/",
        "policies": f"{API}/policies/existing/",
        "tokens": None,
    }


def assert_no_server_error(response, what: str) -> None:
    assert response.status_code < 500, f"{what} -> {response.status_code}: {response.content[:500]!r}"
    if response.status_code >= 400:
        assert response["Content-Type"].startswith("application/json"), what
        assert "Traceback" not in response.content.decode("utf-8", "replace"), what


def undo_creates() -> None:
    """Undo a create that garbage did not stop, so the next one is judged on its own."""
    for model in Model.objects.exclude(name="resnet50"):
        registry.delete_model(actor="setup", model_id=model.pk)
    for name in Node.objects.exclude(name="gpu-a").values_list("name", flat=True):
        registry.delete_node(actor="setup", name=name)
    for name in Policy.objects.exclude(name="existing").values_list("name", flat=True):
        registry.delete_policy(actor="setup", name=name)
    # Tokens are only ever revoked, and a revoked one still holds its name: delete it outright.
    tokens = ApiToken.objects.values_list("pk", flat=True)
    if tokens:
        commit_ops(*({"op": "delete", "kind": "api_token", "id": pk} for pk in tokens))


@pytest.mark.parametrize("resource", list(VALID_BODIES))
def test_it_never_answers_500_to_garbage_fields(operator_client, details, resource):
    valid = VALID_BODIES[resource]
    for field in [*valid, *EXTRA_FIELDS]:
        for value in GARBAGE:
            body = {**valid, field: value}
            created = operator_client.post(f"{API}/{resource}/", body, format="json")
            assert_no_server_error(created, f"POST {resource} {field}={value!r:.60}")
            if details[resource]:
                patched = operator_client.patch(details[resource], {field: value}, format="json")
                assert_no_server_error(patched, f"PATCH {resource} {field}={value!r:.60}")
            if created.status_code == 201:
                undo_creates()


@pytest.mark.parametrize("resource", list(VALID_BODIES))
def test_it_never_answers_500_to_garbage_bodies(operator_client, details, resource):
    urls = [f"{API}/{resource}/"] + ([details[resource]] if details[resource] else [])
    for url in urls:
        for body in RAW_BODIES:
            for method in ("post", "put", "patch"):
                response = getattr(operator_client, method)(url, body, content_type="application/json")
                assert_no_server_error(response, f"{method.upper()} {url} {body[:40]!r}")


@pytest.mark.parametrize("resource", list(VALID_BODIES))
def test_it_never_answers_500_to_garbage_form_posts(operator_client, details, resource):
    for value in ["", "x", "{", "[]", "null", "1e999", "a\u0000b"]:
        form = dict.fromkeys([*VALID_BODIES[resource], "version"], value)
        response = operator_client.post(f"{API}/{resource}/", form)
        assert_no_server_error(response, f"form POST {resource} {value!r}")


@pytest.mark.parametrize(
    "query",
    [
        "page=abc",
        "page=0",
        "page=-1",
        "page=99999999999999999999",
        "page_size=-5",
        "page_size=99999999999999999999",
        "ordering=nope",
        "ordering=-password",
        "role=%00",
        "label=%00:%00",
        "label=:",
        "label=a:b:c",
        "label=" + "k" * 300 + ":v",
        "zone=" + "z" * 5000,
        "since=not-a-time",
        "since=99999-99-99",
        "draining=maybe",
        "enabled=2",
        "kind=%00",
        "type=%00",
        "node=%00",
        "state=%00",
        "user=%00",
    ],
)
def test_it_never_answers_500_to_garbage_queries(operator_client, details, query):
    for resource in ["nodes", "models", "runtimes", "policies", "tokens", "gpus", "instances", "events"]:
        response = operator_client.get(f"{API}/{resource}/?{query}")
        assert_no_server_error(response, f"GET {resource}?{query}")


@pytest.mark.parametrize(
    "path",
    [
        "nodes/%00/",
        "nodes/..%2F..%2Fetc/",
        "models/1e999/",
        "models/-1/",
        "models/99999999999999999999999999/",
        "runtimes/0x10/",
        "policies/" + "p" * 3000 + "/",
        "tokens/abc/",
        "gpus/99999999999999999999999999/",
        "instances/-1/",
        "events/1.5/",
    ],
)
def test_it_answers_404_for_unknown_objects(operator_client, db, path):
    response = operator_client.get(f"{API}/{path}")

    assert response.status_code == 404
    assert "detail" in response.json()


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
@pytest.mark.parametrize("path", ["nodes/nope/", "models/424242/", "runtimes/424242/", "policies/nope/"])
def test_it_answers_404_for_every_method_on_unknown_objects(operator_client, db, method, path):
    before = last_event_id()

    response = getattr(operator_client, method)(f"{API}/{path}", {}, format="json")

    assert response.status_code == 404
    assert events_since(before) == []


@pytest.mark.parametrize("body", ["{", '{"name": ', "[1,", "{'name': 'x'}", "not json at all"])
def test_it_answers_400_to_malformed_json(operator_client, db, body):
    response = operator_client.post(f"{API}/nodes/", body, content_type="application/json")

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert not Node.objects.exists()


def test_it_answers_400_to_json_nested_beyond_the_parser(operator_client, db):
    response = operator_client.post(f"{API}/models/", "[" * 100_000, content_type="application/json")

    assert response.status_code == 400
    assert "nests too deeply" in response.json()["detail"]


def test_it_answers_415_to_an_unsupported_media_type(operator_client, db):
    response = operator_client.post(f"{API}/nodes/", "<node/>", content_type="application/xml")

    assert response.status_code == 415
    assert "application/xml" in response.json()["detail"]


def test_it_names_each_bad_field_in_drf_format(operator_client, db):
    response = operator_client.post(
        f"{API}/nodes/", {"name": "Bad Name", "address": None, "roles": ["toaster"]}, format="json"
    )

    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"name", "address", "roles"}
    assert isinstance(body["name"], list)
    assert body["address"] == ["This field may not be null."]


def test_it_answers_registry_errors_in_drf_format(operator_client, registered_node):
    response = operator_client.patch(f"{API}/nodes/gpu-a/", {"name": "gpu-z"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"name": ["A node's name cannot change; register a new node and delete this one."]}


def test_it_answers_json_404_for_unknown_api_urls(operator_client, db):
    response = operator_client.get(f"{API}/no-such-thing/")

    assert response.status_code == 404
    assert "/api/v1/" in response.json()["detail"]
