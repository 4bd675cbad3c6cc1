"""One FilterSet per model, shared by the API (and usable by admin/UI lists)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.db.models.fields.json import KeyTransform
from django_filters.fields import IsoDateTimeField
from rest_framework.exceptions import ValidationError as ApiValidationError

from meshcore.labels import validate_label_key
from meshcore.models import (
    ApiToken,
    Event,
    EventType,
    Gpu,
    Health,
    Model,
    ModelInstance,
    Node,
    NodeRole,
    Policy,
    PolicyKind,
    Runtime,
)


class NodeFilter(django_filters.FilterSet):
    role = django_filters.ChoiceFilter(choices=NodeRole.choices, method="filter_role")
    zone = django_filters.CharFilter()
    health = django_filters.ChoiceFilter(choices=Health.choices)
    draining = django_filters.BooleanFilter()
    label = django_filters.CharFilter(method="filter_label", help_text="key:value; repeat for several labels.")

    class Meta:
        model = Node
        fields = ["role", "zone", "health", "draining", "label"]

    def filter_role(self, queryset: QuerySet, name: str, role: str) -> QuerySet:
        # Roles are a JSON list; SQLite has no JSON containment, and the role is one of a few
        # known words, so matching its quoted form in the JSON text is exact on both databases.
        return queryset.filter(roles__icontains=f'"{role}"')

    def filter_label(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        for selector in self.data.getlist("label") if hasattr(self.data, "getlist") else [value]:
            key, separator, label_value = selector.partition(":")
            if not separator:
                raise ApiValidationError({"label": [f"{selector!r} is not key:value, e.g. label=gpu-type:h100."]})
            try:
                validate_label_key(key)
            except ValidationError as error:
                raise ApiValidationError({"label": error.messages}) from None
            alias = f"_label_{len(queryset.query.annotations)}"
            # KeyTransform compares JSON to JSON on both databases; KeyTextTransform's `exact` would
            # hand SQLite the raw value as JSON ("malformed JSON").
            queryset = queryset.alias(**{alias: KeyTransform(key, "labels")}).filter(**{alias: label_value})
        return queryset


class ModelFilter(django_filters.FilterSet):
    name = django_filters.CharFilter()
    platform = django_filters.CharFilter()
    revision = django_filters.CharFilter()

    class Meta:
        model = Model
        fields = ["name", "platform", "revision"]


class RuntimeFilter(django_filters.FilterSet):
    node = django_filters.CharFilter(field_name="node__name")
    health = django_filters.ChoiceFilter(choices=Health.choices)

    class Meta:
        model = Runtime
        fields = ["node", "health"]


class PolicyFilter(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=PolicyKind.choices)
    enabled = django_filters.BooleanFilter()

    class Meta:
        model = Policy
        fields = ["kind", "enabled"]


class ApiTokenFilter(django_filters.FilterSet):
    user = django_filters.CharFilter(field_name="user__username")
    tenant = django_filters.CharFilter(field_name="tenant__name")

    class Meta:
        model = ApiToken
        fields = ["user", "tenant"]


class GpuFilter(django_filters.FilterSet):
    node = django_filters.CharFilter(field_name="node__name")
    simulated = django_filters.BooleanFilter()

    class Meta:
        model = Gpu
        fields = ["node", "simulated"]


class ModelInstanceFilter(django_filters.FilterSet):
    node = django_filters.CharFilter(field_name="runtime__node__name")
    model = django_filters.CharFilter(field_name="model_name")
    state = django_filters.CharFilter()

    class Meta:
        model = ModelInstance
        fields = ["node", "model", "state"]


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, handed to the database in UTC.

    Python accepts UTC offsets up to ±23:59 and PostgreSQL only up to ±15:59: `since=2000-01-01T00:00:00+16:00`
    reached the database as written and failed there (500). In UTC every offset is the same instant, and one
    that leaves the years 1-9999 (`0001-01-01T00:00:00+01:00`) is a 400.
    """

    def to_python(self, value: Any) -> datetime | None:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise ValidationError("This date-time is out of range (years 1-9999 in UTC).", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class EventFilter(django_filters.FilterSet):
    type = django_filters.MultipleChoiceFilter(choices=EventType.choices)
    node = django_filters.CharFilter(field_name="node_name")
    since = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Event
        fields = ["type", "node", "since"]
