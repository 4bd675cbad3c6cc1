"""Policy specs are checked per kind, and every bad field is named with a message that
says what is allowed."""

from __future__ import annotations

from typing import Any

import pytest

from meshcore.models import Policy
from tests.meshcore.api_support import API, VALID_SPECS, events_since, last_event_id, make_policy

PIN = {"model": "resnet50", "nodes": ["gpu-a"]}
QUOTA = {"scope": "global", "max_concurrent": 4}
ACL = VALID_SPECS["acl"]
LB = {"model": "resnet50"}


def post_policy(client, kind: Any, spec: Any):
    return client.post(f"{API}/policies/", {"name": "p", "kind": kind, "spec": spec}, format="json")


def error_at(body: Any, path: tuple) -> str:
    for key in path:
        body = body[key]
    return " ".join(body)


@pytest.mark.parametrize("kind", ["pin", "quota", "acl", "load_balancing"])
def test_it_accepts_a_valid_spec_of_every_kind(operator_client, kind):
    response = post_policy(operator_client, kind, VALID_SPECS[kind])

    assert response.status_code == 201, response.content
    assert Policy.objects.get(name="p").kind == kind


@pytest.mark.parametrize("kind", ["x", "PIN", "", 5])
def test_it_rejects_an_unknown_kind_naming_it_and_the_allowed_ones(operator_client, kind):
    before = last_event_id()

    response = post_policy(operator_client, kind, PIN)

    assert response.status_code == 400
    assert response.json() == {"kind": [f"Unknown policy kind {kind!r}. Allowed: pin, quota, acl, load_balancing."]}
    assert not Policy.objects.exists()
    assert events_since(before) == []


@pytest.mark.parametrize(("spec", "type_name"), [([], "list"), ("pin", "str"), (3, "int")])
def test_it_rejects_a_spec_that_is_not_an_object(operator_client, spec, type_name):
    response = post_policy(operator_client, "pin", spec)

    assert response.status_code == 400
    assert response.json() == {"spec": [f"Must be a JSON object, not {type_name}."]}


def test_it_rejects_a_null_spec(operator_client):
    response = post_policy(operator_client, "pin", None)

    assert response.status_code == 400
    assert response.json() == {"spec": ["This field may not be null."]}


CASES = [
    # pin
    ("pin", {"model": "resnet50"}, ("nodes",), "exactly one of nodes"),
    ("pin", {**PIN, "selector": {"gpu-type": "h100"}}, ("nodes",), "exactly one of nodes"),
    ("pin", {**PIN, "min_replicas": 3, "max_replicas": 2}, ("max_replicas",), "at least min_replicas"),
    ("pin", {**PIN, "max_replicas": 0}, ("max_replicas",), "greater than or equal to 1"),
    ("pin", {**PIN, "replicas": 2}, ("replicas",), "Unknown field. Allowed: max_replicas, min_replicas, model"),
    ("pin", {"model": "resnet50", "nodes": []}, ("nodes",), "may not be empty"),
    ("pin", {"model": "resnet50", "selector": {"bad key!": "x"}}, ("selector",), "Invalid label key 'bad key!'"),
    ("pin", {"nodes": ["gpu-a"]}, ("model",), "required"),
    # quota
    ("quota", {"scope": "tenant", "max_concurrent": 2}, ("target",), "A tenant quota needs a target"),
    ("quota", {"scope": "model", "max_concurrent": 2}, ("target",), "A model quota needs a target"),
    ("quota", {**QUOTA, "target": "team-a"}, ("target",), "A global quota has no target"),
    ("quota", {"scope": "global"}, ("max_requests_per_second",), "max_requests_per_second, max_concurrent"),
    ("quota", {"scope": "planet", "max_concurrent": 1}, ("scope",), '"planet" is not a valid choice'),
    ("quota", {**QUOTA, "enforcement": "shout"}, ("enforcement",), "not a valid choice"),
    ("quota", {**QUOTA, "max_concurrent": 0}, ("max_concurrent",), "greater than or equal to 1"),
    ("quota", {"scope": "global", "max_requests_per_second": 0}, ("max_requests_per_second",), "greater than"),
    # acl
    ("acl", {**ACL, "subjects": {}}, ("subjects", "users"), "at least one user, group or token"),
    ("acl", {**ACL, "subjects": {"users": []}}, ("subjects", "users"), "at least one user, group or token"),
    ("acl", {**ACL, "subjects": {"people": ["a"]}}, ("subjects", "people"), "Unknown field. Allowed: groups, tokens"),
    ("acl", {**ACL, "actions": ["delete"]}, ("actions", "0"), '"delete" is not a valid choice'),
    ("acl", {**ACL, "actions": []}, ("actions",), "may not be empty"),
    ("acl", {**ACL, "effect": "maybe"}, ("effect",), '"maybe" is not a valid choice'),
    ("acl", {**ACL, "models": []}, ("models",), "may not be empty"),
    # load_balancing
    ("load_balancing", {**LB, "strategy": "fastest"}, ("strategy",), '"fastest" is not a valid choice'),
    ("load_balancing", {**LB, "weights": {"vibes": 1}}, ("weights",), "Unknown signal vibes. Allowed: gpu_utilization"),
    ("load_balancing", {**LB, "weights": {"gpu_memory": 1001}}, ("weights", "gpu_memory"), "less than or equal"),
    ("load_balancing", {**LB, "strategy": "consistent_hash"}, ("hash_header",), "consistent_hash needs the header"),
    ("load_balancing", {**LB, "hash_header": "X-User"}, ("hash_header",), "Only the consistent_hash strategy"),
    ("load_balancing", {**LB, "retries": 11}, ("retries",), "less than or equal to 10"),
    ("load_balancing", {**LB, "retries": -1}, ("retries",), "greater than or equal to 0"),
    ("load_balancing", {**LB, "speed": "fast"}, ("speed",), "Unknown field"),
]


@pytest.mark.parametrize(("kind", "spec", "path", "message"), CASES, ids=[f"{c[0]}-{'.'.join(c[2])}" for c in CASES])
def test_it_names_the_bad_field_of_a_spec(operator_client, kind, spec, path, message):
    response = post_policy(operator_client, kind, spec)

    assert response.status_code == 400, response.content
    assert message in error_at(response.json()["spec"], path)
    assert not Policy.objects.exists()


def test_it_reports_every_bad_field_at_once(operator_client):
    response = post_policy(operator_client, "acl", {**ACL, "actions": [], "effect": "maybe", "models": []})

    assert response.status_code == 400
    assert set(response.json()["spec"]) == {"actions", "effect", "models"}


@pytest.mark.parametrize("retries", [0, 10])
def test_it_accepts_retries_at_the_bounds(operator_client, retries):
    response = post_policy(operator_client, "load_balancing", {**LB, "retries": retries})

    assert response.status_code == 201
    assert Policy.objects.get(name="p").spec["retries"] == retries


def test_it_accepts_consistent_hash_with_a_header_and_known_weights(operator_client):
    spec = {**LB, "strategy": "consistent_hash", "hash_header": "X-User", "weights": {"gpu_memory": 2}}

    response = post_policy(operator_client, "load_balancing", spec)

    assert response.status_code == 201, response.content
    assert Policy.objects.get(name="p").spec["weights"] == {"gpu_memory": 2.0}


def test_it_accepts_a_pin_by_selector(operator_client):
    response = post_policy(operator_client, "pin", {"model": "resnet50", "selector": {"gpu-type": "h100"}})

    assert response.status_code == 201, response.content


def test_it_rejects_a_bad_spec_on_update_and_keeps_the_old_one(operator_client):
    make_policy("p", kind="load_balancing")

    response = operator_client.patch(f"{API}/policies/p/", {"spec": {**LB, "retries": 11}}, format="json")

    assert response.status_code == 400
    assert "retries" in response.json()["spec"]
    policy = Policy.objects.get(name="p")
    assert (policy.spec["retries"], policy.version) == (1, 1)


def test_it_requires_name_kind_and_spec(operator_client):
    response = operator_client.post(f"{API}/policies/", {}, format="json")

    assert response.status_code == 400
    assert set(response.json()) == {"name", "kind", "spec"}
