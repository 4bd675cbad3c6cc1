"""List endpoints cost the same number of queries for 2 objects as for 30 (no N+1)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from meshcore import registry
from meshcore.models import Event, Node
from tests.meshcore.api_support import API, make_gpu, make_group, make_instance, make_model, make_node, make_runtime


def add_nodes(start: int, count: int) -> None:
    for index in range(start, start + count):
        make_node(f"node-{index:02}", labels={"rack": f"r{index}"})


def add_runtimes(start: int, count: int) -> None:
    for index in range(start, start + count):
        make_runtime(make_node(f"node-{index:02}"))


def add_policies(start: int, count: int) -> None:
    owner = get_user_model().objects.get(username="olivia")
    for index in range(start, start + count):
        registry.create_policy(
            actor=owner, name=f"quota-{index:02}", kind="quota", spec={"scope": "global", "max_concurrent": 1}
        )


def add_tokens(start: int, count: int) -> None:
    tenant = Group.objects.filter(name="team-a").first() or make_group("team-a")
    for index in range(start, start + count):
        user = get_user_model().objects.create_user(f"user-{index:02}")
        registry.issue_api_token(actor="setup", user=user, name="ci", tenant=tenant)


def add_gpus(start: int, count: int) -> None:
    for index in range(start, start + count):
        make_gpu(make_node(f"node-{index:02}"))


def add_instances(start: int, count: int) -> None:
    for index in range(start, start + count):
        runtime = make_runtime(make_node(f"node-{index:02}"))
        make_instance(runtime, f"model-{index:02}", model=make_model(f"model-{index:02}"))


def add_events(start: int, count: int) -> None:
    node = Node.objects.first() or make_node("node-events")
    Event.objects.bulk_create(
        Event(type="NODE_UPDATED", node=node, node_name=node.name, actor="setup") for _ in range(count)
    )


def add_models(start: int, count: int) -> None:
    for index in range(start, start + count):
        make_model(f"model-{index:02}")


CASES: dict[str, Callable[[int, int], None]] = {
    "nodes": add_nodes,
    "models": add_models,
    "runtimes": add_runtimes,
    "policies": add_policies,
    "tokens": add_tokens,
    "gpus": add_gpus,
    "instances": add_instances,
    "events": add_events,
}


def count_queries(client, url: str) -> tuple[int, int]:
    """(number of queries, number of results) for one GET."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(captured), len(response.json()["results"])


@pytest.mark.parametrize("resource", list(CASES))
def test_it_lists_with_a_constant_number_of_queries(operator_client, resource):
    add = CASES[resource]
    url = f"{API}/{resource}/?page_size=100"
    add(0, 2)
    few_queries, few = count_queries(operator_client, url)

    add(2, 28)
    many_queries, many = count_queries(operator_client, url)

    assert many - few >= 28
    assert many_queries == few_queries


@pytest.mark.parametrize("resource", list(CASES))
def test_it_lists_thirty_objects_in_a_handful_of_queries(operator_client, resource, django_assert_max_num_queries):
    CASES[resource](0, 30)

    with django_assert_max_num_queries(6):
        response = operator_client.get(f"{API}/{resource}/?page_size=100")

    assert len(response.json()["results"]) >= 30
