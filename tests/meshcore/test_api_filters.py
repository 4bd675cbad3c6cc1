"""List filters and pagination: ?role=, ?label=key:value, ?page_size=, ..."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from meshcore import registry
from meshcore.models import Event, Node
from tests.meshcore.api_support import (
    API,
    make_gpu,
    make_instance,
    make_model,
    make_node,
    make_policy,
    make_runtime,
)


def names(response, key: str = "name") -> list:
    assert response.status_code == 200, response.content
    return [item[key] for item in response.json()["results"]]


@pytest.fixture
def fleet(db):
    """Three nodes that differ in every filterable field."""
    make_node("gpu-a", roles=["gpu"], zone="eu-1", labels={"gpu-type": "h100", "example.com/rack": "r1"})
    make_node("gpu-b", roles=["gpu", "router"], zone="eu-2", labels={"gpu-type": "a100", "example.com/rack": "r1"})
    make_node("ctl-a", roles=["control"], zone="eu-1", labels={})
    Node.objects.filter(name="gpu-b").update(health="healthy")  # observed: reported by the agent
    registry.set_node_draining(actor="setup", name="gpu-b", draining=True)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("role=gpu", ["gpu-a", "gpu-b"]),
        ("role=router", ["gpu-b"]),
        ("role=control", ["ctl-a"]),
        ("zone=eu-1", ["ctl-a", "gpu-a"]),
        ("health=healthy", ["gpu-b"]),
        ("health=unknown", ["ctl-a", "gpu-a"]),
        ("draining=true", ["gpu-b"]),
        ("draining=false", ["ctl-a", "gpu-a"]),
        ("label=gpu-type:h100", ["gpu-a"]),
        ("label=example.com/rack:r1", ["gpu-a", "gpu-b"]),
        ("label=example.com/rack:r1&label=gpu-type:a100", ["gpu-b"]),
        ("label=gpu-type:h100&label=gpu-type:a100", []),
        ("label=gpu-type:", []),
        ("role=gpu&zone=eu-1", ["gpu-a"]),
    ],
)
def test_it_filters_nodes(operator_client, fleet, query, expected):
    assert names(operator_client.get(f"{API}/nodes/?{query}")) == expected


@pytest.mark.parametrize("label", ["bad key!:x", "-gpu:x", "UPPER.example/x:y", "a/b/c:x"])
def test_it_rejects_an_invalid_label_key_naming_it(operator_client, fleet, label):
    response = operator_client.get(f"{API}/nodes/", {"label": label})

    assert response.status_code == 400
    message = " ".join(response.json()["label"])
    assert f"Invalid label key {label.rpartition(':')[0]!r}" in message


def test_it_rejects_a_label_without_a_value(operator_client, fleet):
    response = operator_client.get(f"{API}/nodes/", {"label": "gpu-type"})

    assert response.status_code == 400
    assert "'gpu-type' is not key:value" in response.json()["label"][0]


@pytest.mark.parametrize("query", ["role=toaster", "health=sick"])
def test_it_rejects_unknown_choices(operator_client, fleet, query):
    response = operator_client.get(f"{API}/nodes/?{query}")

    assert response.status_code == 400
    assert query.partition("=")[0] in response.json()


def test_it_filters_models_by_name_and_platform(operator_client, db):
    make_model("resnet50", platform="onnxruntime")
    make_model("resnet50", platform="onnxruntime", revision="2")
    make_model("bert", platform="python")

    assert names(operator_client.get(f"{API}/models/?name=resnet50"), "revision") == ["1", "2"]
    assert names(operator_client.get(f"{API}/models/?platform=python")) == ["bert"]
    assert names(operator_client.get(f"{API}/models/?name=bert&platform=onnxruntime")) == []


def test_it_filters_policies_by_kind_and_enabled(operator_client, db):
    make_policy("q-on", kind="quota")
    make_policy("q-off", kind="quota", enabled=False)
    make_policy("acl-on", kind="acl")

    assert names(operator_client.get(f"{API}/policies/?kind=quota")) == ["q-off", "q-on"]
    assert names(operator_client.get(f"{API}/policies/?enabled=false")) == ["q-off"]
    assert names(operator_client.get(f"{API}/policies/?kind=acl&enabled=true")) == ["acl-on"]
    assert operator_client.get(f"{API}/policies/?kind=nope").status_code == 400


def test_it_filters_runtimes_by_node(operator_client, fleet):
    make_runtime(Node.objects.get(name="gpu-a"))
    make_runtime(Node.objects.get(name="gpu-b"))

    assert names(operator_client.get(f"{API}/runtimes/?node=gpu-b"), "node") == ["gpu-b"]


def test_it_filters_tokens_by_user(operator_client, operator, viewer):
    registry.issue_api_token(actor=operator, user=operator, name="ops")
    registry.issue_api_token(actor=operator, user=viewer, name="dash")

    assert names(operator_client.get(f"{API}/tokens/?user=victor")) == ["dash"]


def test_it_filters_events_by_type_node_and_time(operator_client, fleet):
    Event.objects.filter(node_name="ctl-a").update(created_at=timezone.now() - timedelta(days=2))
    registry.set_node_draining(actor="setup", name="gpu-a", draining=True)
    since = (timezone.now() - timedelta(days=1)).isoformat()

    assert names(operator_client.get(f"{API}/events/?type=NODE_DRAINING"), "node") == ["gpu-a", "gpu-b"]
    assert names(operator_client.get(f"{API}/events/?node=gpu-a"), "type") == ["NODE_DRAINING", "NODE_JOINED"]
    # Joined and drained (gpu-a, gpu-b) and the operator's account created (no node); not ctl-a's.
    assert sorted(names(operator_client.get(f"{API}/events/", {"since": since}), "node")) == [
        "",
        "gpu-a",
        "gpu-a",
        "gpu-b",
        "gpu-b",
    ]
    both = operator_client.get(f"{API}/events/?type=NODE_DRAINING&type=NODE_JOINED&node=gpu-a")
    assert names(both, "type") == ["NODE_DRAINING", "NODE_JOINED"]
    assert operator_client.get(f"{API}/events/?type=NOT_A_TYPE").status_code == 400
    assert operator_client.get(f"{API}/events/?since=yesterday").status_code == 400


def test_it_compares_since_in_utc_whatever_offset_it_is_written_with(operator_client, fleet):
    # Found by the API fuzz test: PostgreSQL stores offsets up to ±15:59 only, Python parses up to ±23:59.
    now = timezone.now()
    with_offset = (now - timedelta(days=1)).astimezone(timezone.get_fixed_timezone(16 * 60 + 30)).isoformat()
    same_in_utc = (now - timedelta(days=1)).isoformat()

    assert names(operator_client.get(f"{API}/events/", {"since": with_offset}), "id") == names(
        operator_client.get(f"{API}/events/", {"since": same_in_utc}), "id"
    )
    # An instant before year 1 in UTC is not a date-time the database can compare: a 400, not a 500.
    too_early = operator_client.get(f"{API}/events/", {"since": "0001-01-01T00:00:00+16:00"})
    assert too_early.status_code == 400 and "since" in too_early.json()


def test_it_filters_gpus_by_node(operator_client, fleet):
    make_gpu(Node.objects.get(name="gpu-a"), 0)
    make_gpu(Node.objects.get(name="gpu-a"), 1)
    make_gpu(Node.objects.get(name="gpu-b"), 0)

    assert names(operator_client.get(f"{API}/gpus/?node=gpu-a"), "index") == [0, 1]
    assert names(operator_client.get(f"{API}/gpus/?node=ctl-a")) == []


def test_it_filters_instances_by_node_model_and_state(operator_client, fleet):
    on_a = make_runtime(Node.objects.get(name="gpu-a"))
    on_b = make_runtime(Node.objects.get(name="gpu-b"))
    make_instance(on_a, "resnet50", state="ready")
    make_instance(on_a, "bert", state="failed")
    make_instance(on_b, "resnet50", state="loading")

    assert names(operator_client.get(f"{API}/instances/?node=gpu-a"), "model_name") == ["bert", "resnet50"]
    assert names(operator_client.get(f"{API}/instances/?model=resnet50"), "node") == ["gpu-a", "gpu-b"]
    assert names(operator_client.get(f"{API}/instances/?state=failed"), "model_name") == ["bert"]
    assert names(operator_client.get(f"{API}/instances/?node=gpu-b&model=bert")) == []


def test_it_paginates_lists(operator_client, db):
    for index in range(5):
        make_model(f"model-{index}")

    first = operator_client.get(f"{API}/models/?page_size=2").json()
    last = operator_client.get(f"{API}/models/?page_size=2&page=3").json()

    assert set(first) == {"count", "next", "previous", "results"}
    assert first["count"] == 5
    assert [model["name"] for model in first["results"]] == ["model-0", "model-1"]
    assert first["previous"] is None
    assert "page=2" in first["next"]
    assert "page_size=2" in first["next"]
    assert [model["name"] for model in last["results"]] == ["model-4"]
    assert last["next"] is None
    assert "page_size=2" in last["previous"]


def test_it_answers_404_past_the_last_page(operator_client, db):
    make_model("m")

    assert operator_client.get(f"{API}/models/?page=2").status_code == 404


def test_it_ignores_a_page_size_that_is_not_a_positive_number(operator_client, db):
    for index in range(3):
        make_model(f"model-{index}")

    for page_size in ["not-a-number", "0", "-2"]:
        response = operator_client.get(f"{API}/models/", {"page_size": page_size})
        assert response.status_code == 200
        assert len(response.json()["results"]) == 3


def test_it_pages_every_list_with_page_size(operator_client, fleet):
    response = operator_client.get(f"{API}/nodes/?page_size=1&page=2")

    assert response.json()["count"] == 3
    assert names(response) == ["gpu-a"]
