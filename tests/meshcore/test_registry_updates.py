"""A registry update returns what its commit wrote, without reading the row a second time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, models
from django.test.utils import CaptureQueriesContext

from meshcore import registry
from meshcore.models import Model, Node, Policy, Runtime
from meshcore.replication.log import local_log
from tests.meshcore.api_support import make_model, make_node, make_policy, make_runtime


def row(instance: models.Model) -> dict[str, Any]:
    """Every column of the instance, by attribute name (foreign keys as ids)."""
    return {field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields}


def writer_reads(table: str, update: Callable[[], models.Model], monkeypatch) -> tuple[models.Model, int]:
    """Run `update`; count its reads of `table`, leaving out those of the commit itself.

    Without Raft (the tests) the commit's projection runs in the caller; with it, in the replica.
    """
    log = local_log()
    real_propose = log.propose
    committing: list[range] = []

    def propose(batch: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        start = len(captured.captured_queries)
        try:
            return real_propose(batch, timeout)
        finally:
            committing.append(range(start, len(captured.captured_queries)))

    monkeypatch.setattr(log, "propose", propose)
    with CaptureQueriesContext(connection) as captured:
        returned = update()
    reads = [
        query
        for index, query in enumerate(captured.captured_queries)
        if query["sql"].startswith("SELECT")
        and f'FROM "{table}"' in query["sql"]
        and not any(index in span for span in committing)
    ]
    return returned, len(reads)


UPDATES: dict[str, tuple[type[models.Model], Callable[[], Any], Callable[[Any], models.Model]]] = {
    "policy": (
        Policy,
        lambda: make_policy("team-a-rps"),
        lambda policy: registry.update_policy(
            actor="ops", name="team-a-rps", changes={"priority": 7, "description": "busy hours"}
        ),
    ),
    "node": (
        Node,
        lambda: make_node("gpu-a"),
        lambda node: registry.update_node(
            actor="ops", name="gpu-a", changes={"zone": "eu-2", "labels": {"rack": "r9"}}
        ),
    ),
    "draining": (
        Node,
        lambda: make_node("gpu-a"),
        lambda node: registry.set_node_draining(actor="ops", name="gpu-a", draining=True),
    ),
    "model": (
        Model,
        lambda: make_model("resnet50"),
        lambda model: registry.update_model(actor="ops", model_id=model.pk, changes={"description": "v2 weights"}),
    ),
    "runtime": (
        Runtime,
        lambda: make_runtime(make_node("gpu-a")),
        lambda runtime: registry.update_runtime(
            actor="ops",
            runtime_id=runtime.pk,
            changes={"metrics_url": "http://gpu-a.mesh.internal:8002/metrics"},
        ),
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("kind", UPDATES)
def test_an_update_returns_the_committed_row_and_reads_it_once(kind, monkeypatch):
    model, make, update = UPDATES[kind]
    made = make()
    before = row(made)

    returned, reads = writer_reads(model._meta.db_table, lambda: update(made), monkeypatch)

    stored = model.objects.get(pk=returned.pk)
    assert row(returned) == row(stored)
    assert returned.version == before["version"] + 1
    assert returned.updated_at > before["updated_at"]
    # The read that validates the change; the commit's answer stands in for a second one.
    assert reads == 1


@pytest.mark.django_db
def test_a_caller_holding_the_policy_spares_the_registry_reading_it_and_keeps_its_owner(operator, monkeypatch):
    registry.create_policy(
        actor=operator, name="team-a-rps", kind="quota", spec={"scope": "global", "max_concurrent": 1}
    )
    held = Policy.objects.select_related("owner").get(name="team-a-rps")  # as the API's view reads it

    returned, reads = writer_reads(
        Policy._meta.db_table,
        lambda: registry.update_policy(actor=operator, name="team-a-rps", changes={"enabled": False}, current=held),
        monkeypatch,
    )

    assert reads == 0
    with CaptureQueriesContext(connection) as captured:
        owner = returned.owner
    assert (owner, returned.enabled, len(captured.captured_queries)) == (operator, False, 0)
    assert row(returned) == row(Policy.objects.get(name="team-a-rps"))


@pytest.mark.django_db
def test_a_policy_held_under_another_name_is_not_taken_for_the_named_one(operator):
    make_policy("team-a-rps")
    other = make_policy("team-b-rps")

    returned = registry.update_policy(actor=operator, name="team-a-rps", changes={"priority": 4}, current=other)

    assert returned.name == "team-a-rps" and returned.priority == 4
    assert Policy.objects.get(name="team-b-rps").priority == other.priority
