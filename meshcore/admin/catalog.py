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

    def create(self, request: HttpRequest, obj: Model, data: dict[str, Any]) -> Model:
        return registry.create_model(
            actor=request.user,
            name=data["name"],
            revision=data["revision"],
            platform=data["platform"],
            config=data["config"],
            description=data["description"],
        )

    def update(
        self, request: HttpRequest, obj: Model, form: forms.ModelForm, changes: dict[str, Any], version: int | None
    ) -> Model:
        return registry.update_model(actor=request.user, model_id=obj.pk, changes=changes, expected_version=version)

    def delete_through_registry(self, request: HttpRequest, objs: list[Model]) -> None:
        registry.delete_models(actor=request.user, model_ids=[model.pk for model in objs])


@admin.register(Runtime)
class RuntimeAdmin(RegistryAdmin):
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

    def update(
        self, request: HttpRequest, obj: Runtime, form: forms.ModelForm, changes: dict[str, Any], version: int | None
    ) -> Runtime:
        return registry.update_runtime(actor=request.user, runtime_id=obj.pk, changes=changes, expected_version=version)

    def delete_through_registry(self, request: HttpRequest, objs: list[Runtime]) -> None:
        registry.delete_runtimes(actor=request.user, runtime_ids=[runtime.pk for runtime in objs])


@admin.register(ModelInstance)
class ModelInstanceAdmin(ObservedAdmin):
    list_display = ("model_name", "model_revision", "runtime", "node_name", "state", "updated_at")
    list_filter = ("state", "runtime__node")
    search_fields = ("model_name", "reason", "runtime__node__name")
    list_select_related = ("runtime__node",)

    @admin.display(description="node", ordering="runtime__node__name")
    def node_name(self, instance: ModelInstance) -> str:
        return instance.runtime.node.name
