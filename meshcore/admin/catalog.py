"""The model catalog, the Triton runtimes and the observed model instances."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from meshcore import registry
from meshcore.admin.base import (
    ObservedAdmin,
    PrettyJSONField,
    RegistryAdmin,
)
from meshcore.models import (
    Model,
    ModelInstance,
    Runtime,
)


class CatalogModelForm(forms.ModelForm):
    config = PrettyJSONField(required=False, help_text="Triton model configuration, as a JSON object.")

    class Meta:
        model = Model
        fields = ("name", "revision", "platform", "config", "description", "version")

    def clean_config(self) -> dict:
        config = self.cleaned_data["config"]
        if config is None:
            return {}
        if not isinstance(config, dict):
            raise ValidationError('Must be a JSON object, e.g. {"max_batch_size": 8}.')
        return config


@admin.register(Model)
class CatalogModelAdmin(RegistryAdmin):
    created_with, updated_with, deleted_with = "create_model", "update_model", "delete_models"
    create_fields = ("name", "revision", "platform", "config", "description")
    key = ("model_id", "pk")
    form = CatalogModelForm
    list_display = ("name", "revision", "platform", "instance_count", "version", "updated_at")
    list_filter = ("platform",)
    search_fields = ("name", "platform", "description")
    fields = ("name", "revision", "platform", "config", "description", "created_at", "updated_at")
    readonly_fields = ("created_at", "updated_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(instance_total=Count("instances"))

    @admin.display(description="instances", ordering="instance_total")
    def instance_count(self, model: Model) -> int:
        return model.instance_total


@admin.register(Runtime)
class RuntimeAdmin(RegistryAdmin):
    updated_with, deleted_with = "update_runtime", "delete_runtimes"
    key = ("runtime_id", "pk")
    list_display = ("__str__", "node", "name", "http_url", "health", "last_seen", "instance_count")
    list_filter = ("health", "node")
    search_fields = ("name", "node__name", "http_url", "grpc_url")
    list_select_related = ("node",)
    fields = ("node", "name", "http_url", "grpc_url", "metrics_url", "health", "last_seen", "created_at", "updated_at")
    readonly_fields = ("health", "last_seen", "created_at", "updated_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Runtime | None = None) -> tuple[str, ...]:
        # A runtime belongs to one node for life: add one on the other node instead.
        return (*self.readonly_fields, "node") if obj is not None else self.readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(instance_total=Count("instances"))

    @admin.display(description="models", ordering="instance_total")
    def instance_count(self, runtime: Runtime) -> int:
        return runtime.instance_total

    def create(self, request: HttpRequest, obj: Runtime, data: dict[str, Any]) -> Runtime:
        return registry.create_runtime(
            actor=request.user,
            node_name=data["node"].name,
            name=data["name"],
            http_url=data["http_url"],
            grpc_url=data["grpc_url"],
            metrics_url=data["metrics_url"],
        )


@admin.register(ModelInstance)
class ModelInstanceAdmin(ObservedAdmin):
    list_display = ("model_name", "model_revision", "runtime", "node_name", "state", "updated_at")
    list_filter = ("state", "runtime__node")
    search_fields = ("model_name", "reason", "runtime__node__name")
    list_select_related = ("runtime__node",)

    @admin.display(description="node", ordering="runtime__node__name")
    def node_name(self, instance: ModelInstance) -> str:
        return instance.runtime.node.name
