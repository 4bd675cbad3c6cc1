"""Routing and access policies through /api/v1/policies/ (looked up by name)."""

from __future__ import annotations

from meshcore.models import Event, EventType, Policy
from tests.meshcore.api_support import API, VALID_SPECS, events_since, last_event_id, make_policy
from tests.meshcore.test_registry_updates import writer_reads

QUOTA = {"name": "team-a-rps", "kind": "quota", "spec": VALID_SPECS["quota"], "priority": 5}


def test_it_creates_a_policy_owned_by_the_operator(operator_client, operator):
    before = last_event_id()

    response = operator_client.post(f"{API}/policies/", QUOTA, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["name"], body["kind"], body["owner"], body["version"], body["enabled"]) == (
        "team-a-rps",
        "quota",
        "olivia",
        1,
        True,
    )
    policy = Policy.objects.get(name="team-a-rps")
    assert policy.owner == operator
    assert policy.priority == 5
    assert events_since(before) == [(EventType.POLICY_CREATED, "olivia")]


def test_it_stores_the_spec_in_normal_form(operator_client):
    response = operator_client.post(f"{API}/policies/", QUOTA, format="json")

    expected = {**VALID_SPECS["quota"], "max_requests_per_second": 10.0, "enforcement": "block"}
    assert response.json()["spec"] == expected
    assert Policy.objects.get(name="team-a-rps").spec == expected


def test_it_looks_policies_up_by_name(operator_client):
    make_policy("lb-resnet", kind="load_balancing")

    response = operator_client.get(f"{API}/policies/lb-resnet/")

    assert response.status_code == 200
    assert response.json()["kind"] == "load_balancing"
    assert response.json()["spec"]["strategy"] == "least_request"
    assert response["ETag"] == '"1"'


def test_it_answers_404_for_an_unknown_policy(operator_client):
    assert operator_client.get(f"{API}/policies/nope/").status_code == 404
    assert operator_client.patch(f"{API}/policies/nope/", {"enabled": False}, format="json").status_code == 404


def test_it_refuses_a_duplicate_name_with_409(operator_client):
    make_policy("team-a-rps")

    response = operator_client.post(
        f"{API}/policies/", {**QUOTA, "kind": "acl", "spec": VALID_SPECS["acl"]}, format="json"
    )

    assert response.status_code == 409
    assert "team-a-rps" in response.json()["detail"]
    assert Policy.objects.get(name="team-a-rps").kind == "quota"


def test_it_disables_a_policy_and_bumps_its_version(operator_client):
    make_policy("team-a-rps")
    before = last_event_id()

    response = operator_client.patch(f"{API}/policies/team-a-rps/", {"enabled": False}, format="json")

    assert response.status_code == 200, response.content
    policy = Policy.objects.get(name="team-a-rps")
    assert (policy.enabled, policy.version) == (False, 2)
    assert events_since(before) == [(EventType.POLICY_UPDATED, "olivia")]
    assert Event.objects.get(type=EventType.POLICY_UPDATED).data["changed"] == ["enabled"]


def test_it_validates_a_new_spec_against_the_current_kind(operator_client):
    make_policy("team-a-rps")

    response = operator_client.patch(f"{API}/policies/team-a-rps/", {"spec": {"scope": "global"}}, format="json")

    assert response.status_code == 400
    assert "max_requests_per_second" in response.json()["spec"]
    assert Policy.objects.get(name="team-a-rps").spec["scope"] == "tenant"


def test_it_validates_the_current_spec_against_a_new_kind(operator_client):
    make_policy("team-a-rps")

    response = operator_client.patch(f"{API}/policies/team-a-rps/", {"kind": "pin"}, format="json")

    assert response.status_code == 400
    assert "spec" in response.json()
    assert Policy.objects.get(name="team-a-rps").kind == "quota"


def test_it_changes_kind_and_spec_together(operator_client):
    make_policy("team-a-rps")

    response = operator_client.patch(
        f"{API}/policies/team-a-rps/", {"kind": "pin", "spec": VALID_SPECS["pin"]}, format="json"
    )

    assert response.status_code == 200, response.content
    policy = Policy.objects.get(name="team-a-rps")
    assert policy.kind == "pin"
    assert policy.spec == {"model": "resnet50", "nodes": ["gpu-a"], "min_replicas": 1}


def test_it_renames_a_policy(operator_client):
    make_policy("team-a-rps")

    response = operator_client.patch(f"{API}/policies/team-a-rps/", {"name": "team-a-limit"}, format="json")

    assert response.status_code == 200
    assert list(Policy.objects.values_list("name", flat=True)) == ["team-a-limit"]


def test_it_refuses_renaming_onto_an_existing_policy_with_409(operator_client):
    make_policy("team-a-rps")
    make_policy("team-b-rps")

    response = operator_client.patch(f"{API}/policies/team-b-rps/", {"name": "team-a-rps"}, format="json")

    assert response.status_code == 409
    assert sorted(Policy.objects.values_list("name", flat=True)) == ["team-a-rps", "team-b-rps"]


def test_it_deletes_a_policy(operator_client):
    make_policy("team-a-rps")
    before = last_event_id()

    response = operator_client.delete(f"{API}/policies/team-a-rps/")

    assert response.status_code == 204
    assert not Policy.objects.exists()
    assert events_since(before) == [(EventType.POLICY_DELETED, "olivia")]


def test_it_lists_policies_by_priority(operator_client):
    make_policy("low", priority=1)
    make_policy("high", priority=9)

    response = operator_client.get(f"{API}/policies/")

    assert [policy["name"] for policy in response.json()["results"]] == ["high", "low"]


def test_a_patch_reads_the_policy_once_and_answers_with_its_owner(operator_client, operator, monkeypatch):
    operator_client.post(f"{API}/policies/", QUOTA, format="json")

    response, reads = writer_reads(
        Policy._meta.db_table,
        lambda: operator_client.patch(f"{API}/policies/team-a-rps/", {"priority": 9}, format="json"),
        monkeypatch,
    )

    assert response.status_code == 200, response.content
    assert (response.json()["priority"], response.json()["owner"]) == (9, "olivia")
    assert reads == 1  # the view's; the registry changes the row the view read
