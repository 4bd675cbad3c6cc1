"""The kinds table (meshcore/kinds.py) says what the Django models say: a kind added or changed
in one place and not the other fails here."""

import pytest
from django.apps import apps
from django.db import models

from meshcore.api import serializers
from meshcore.kinds import KIND_TABLE, KINDS, REFERENCES, Kind

KIND_OF_MODEL = {apps.get_model(kind.model): kind.name for kind in KIND_TABLE}


def column(model: type[models.Model], name: str) -> models.Field:
    return model._meta.get_field(name.removesuffix("_id") if name.endswith("_id") else name)


def unique_sets(model: type[models.Model]) -> set[frozenset[str]]:
    """Every unique key of the model's table, as sets of column names (`_id` for foreign keys)."""
    found = set()
    for field in model._meta.concrete_fields:
        if field.unique and not field.primary_key:
            found.add(frozenset({field.attname}))
    for together in model._meta.unique_together:
        found.add(frozenset(model._meta.get_field(name).attname for name in together))
    for constraint in model._meta.constraints:
        if isinstance(constraint, models.UniqueConstraint) and constraint.condition is None:
            found.add(frozenset(model._meta.get_field(name).attname for name in constraint.fields))
    return found


@pytest.mark.parametrize("kind", KIND_TABLE, ids=lambda kind: kind.name)
def test_it_names_every_replicated_column_of_the_model(kind: Kind):
    model = apps.get_model(kind.model)
    observed = set(getattr(model, "OBSERVED_FIELDS", ()))
    columns = {field.attname for field in model._meta.concrete_fields if not field.primary_key}
    if kind.name == "user":
        observed |= {"last_login"}
    assert set(kind.fields) == columns - observed, f"{kind.model}: table and model disagree on replicated fields"
    assert not set(kind.fields) & observed


@pytest.mark.parametrize("kind", KIND_TABLE, ids=lambda kind: kind.name)
def test_its_unique_keys_are_the_models(kind: Kind):
    model = apps.get_model(kind.model)
    assert {frozenset(key) for key in kind.unique} == unique_sets(model)


@pytest.mark.parametrize("kind", KIND_TABLE, ids=lambda kind: kind.name)
def test_its_references_are_the_models_foreign_keys(kind: Kind):
    model = apps.get_model(kind.model)
    foreign_keys = {
        field.attname: field
        for field in model._meta.concrete_fields
        if field.is_relation and field.attname in kind.fields
    }
    assert set(kind.references) == set(foreign_keys)
    for name, (target, on_delete) in kind.references.items():
        field = foreign_keys[name]
        assert KIND_OF_MODEL[field.related_model] == target
        expected = {models.CASCADE: "cascade", models.SET_NULL: "clear"}[field.remote_field.on_delete]
        assert on_delete == expected, f"{kind.name}.{name}"
    assert REFERENCES.get(kind.name, {}) == kind.references


def test_a_kind_comes_after_the_kinds_it_refers_to():
    for kind in KIND_TABLE:
        for target, _ in kind.references.values():
            assert KINDS.index(target) < KINDS.index(kind.name)


def test_every_model_with_a_guard_is_a_kind():
    from meshcore.models import ReplicatedModel

    guarded = {model for model in apps.get_app_config("meshcore").get_models() if issubclass(model, ReplicatedModel)}
    assert guarded <= set(KIND_OF_MODEL)


@pytest.mark.parametrize(
    ("serializer", "kind"),
    [
        (serializers.NodeSerializer, "node"),
        (serializers.ModelSerializer, "model"),
        (serializers.RuntimeSerializer, "runtime"),
        (serializers.PolicySerializer, "policy"),
    ],
)
def test_the_api_writes_only_fields_of_the_kind(serializer, kind):
    table = next(k for k in KIND_TABLE if k.name == kind)
    writable = {name for name, field in serializer().fields.items() if not field.read_only}
    plain = {name.removesuffix("_id") for name in table.fields}
    assert writable - {"version"} <= plain | {"node"}
