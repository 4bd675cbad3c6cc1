"""Replicated tables change only through the log: every other ORM write path fails loudly."""

import pytest
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from meshcore import registry
from meshcore.models import ApiToken, Model, Node, Policy
from meshcore.writeguard import DirectWriteError


@pytest.fixture
def node(operator):
    node, _ = registry.create_node(actor=operator, name="gpu-a", address="10.0.0.1")
    return node


@pytest.mark.parametrize(
    "write",
    [
        lambda node: Node.objects.create(name="sneaky", address="x"),
        lambda node: Node(name="sneaky", address="x").save(),
        lambda node: node.save(),
        lambda node: node.delete(),
        lambda node: Node.objects.filter(pk=node.pk).update(draining=True),
        lambda node: Node.objects.all().delete(),
        lambda node: Node.objects.bulk_create([Node(name="sneaky", address="x")]),
        lambda node: Node.objects.bulk_update([node], ["zone"]),
        lambda node: Model.objects.create(name="m", platform="python"),
        lambda node: Policy.objects.filter(name="x").update(enabled=False),
        lambda node: ApiToken.objects.all().delete(),
        lambda node: Group.objects.create(name="tenant"),
    ],
)
def test_it_refuses_orm_writes_outside_the_apply_path(node, write):
    with pytest.raises(DirectWriteError, match=r"meshcore\.registry"):
        write(node)
    node.refresh_from_db()
    assert (node.draining, node.zone) == (False, "")
    assert not Node.objects.filter(name="sneaky").exists()


def test_it_refuses_membership_changes_outside_the_apply_path(operator):
    group = registry.save_group(actor=operator, group=Group(name="tenant-a"))
    with pytest.raises(DirectWriteError), transaction.atomic():
        operator.groups.add(group)
    assert not operator.groups.exists()


def test_it_allows_observed_fields_to_be_written_by_telemetry(node):
    assert Node.objects.filter(pk=node.pk).update(health="healthy", last_seen=timezone.now()) == 1
    node.health = "unhealthy"
    node.save(update_fields=["health"])
    node.refresh_from_db()
    assert node.health == "unhealthy"


def test_a_users_own_save_goes_through_the_registry(operator):
    from meshcore.models import Event

    operator.first_name = "Olivia"
    operator.save()
    assert Event.objects.filter(type="USER_UPDATED", data__user="olivia").count() == 1
    operator.refresh_from_db()
    assert operator.first_name == "Olivia"
