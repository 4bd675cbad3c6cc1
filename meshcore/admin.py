"""The Django admin for the mesh.

Desired state (nodes, models, runtimes, policies, API tokens, users and groups) is edited
here, but every write goes through `meshcore.registry`, outside any transaction, with the
signed-in user as the actor, only the fields the user changed, and the version the user
loaded (a concurrent edit is a conflict, shown as a message). Observed state (GPUs, model
instances, events, health) is view-only. Token values are shown once, when issued, and
never stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR, csrf_protect_m
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models as db_models
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters

from meshcore import registry
from meshcore.labels import validate_labels
from meshcore.models import (
    ApiToken,
    Event,
    Gpu,
    Model,
    ModelInstance,
    Node,
    NodeRole,
    Policy,
    Runtime,
    User,
)
from meshcore.policy_specs import SpecError, validate_spec
from meshcore.registry import RegistryError

admin.site.site_header = "infermesh control plane"
admin.site.site_title = "infermesh"
admin.site.index_title = "Mesh registry"

SHOWN_ONCE = "store it now, it will not be shown again"


# ---- form fields --------------------------------------------------------------------


class PrettyJSONField(forms.JSONField):
    """JSON edited in a roomy textarea, indented and with sorted keys."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 12, "cols": 80, "style": "font-family: monospace"}))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, cls=self.encoder)


def spec_error_messages(errors: dict[str, Any]) -> dict[str, list[str]]:
    """`SpecError.errors` as form errors per field, each message naming the bad sub-field.

    {"spec": {"min_replicas": ["Must be ..."]}} becomes {"spec": ["min_replicas: Must be ..."]}.
    """
    return {
        field: [f"{path}: {message}" if path else message for path, message in _flatten_errors(detail)]
        for field, detail in errors.items()
    }


def _flatten_errors(detail: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(detail, dict):
        for key, item in detail.items():
            # DRF reports object-level errors under non_field_errors: they belong to the object itself.
            sub_path = path if key == "non_field_errors" else f"{path}.{key}" if path else str(key)
            yield from _flatten_errors(item, sub_path)
    elif isinstance(detail, list):
        for index, item in enumerate(detail):
            if isinstance(item, dict | list):
                yield from _flatten_errors(item, f"{path}.{index}" if path else str(index))
            else:
                yield path, str(item)
    else:
        yield path, str(detail)


# ---- shared behaviour ---------------------------------------------------------------

# Where a deletion waits to be logged until the registry has made it (see RegistryWritesAdmin).
PENDING_DELETIONS = "_meshcore_pending_deletions"

# Rows that go with a deleted node or runtime; the registry removes them, so the admin's
# own "no delete permission" on these view-only models must not block that.
OBSERVED_MODELS = (Gpu, ModelInstance)


def copy_saved(obj: db_models.Model, saved: db_models.Model) -> None:
    """Make the admin's unsaved `obj` the row the registry saved, for the redirect and the log entry."""
    for field in saved._meta.concrete_fields:
        setattr(obj, field.attname, getattr(saved, field.attname))
    obj._state.adding = False
    obj._state.db = saved._state.db


class RegistryWritesAdmin(admin.ModelAdmin):
    """An admin whose writes go through `meshcore.registry`.

    - No transaction around the views: a registry write waits for the Raft commit, and the
      projection it waits for is written by another thread (a transaction held here would
      hide it or block it). Each registry call is all or nothing on its own.
    - A change the registry refuses (conflict, invalid, unavailable) is a message on the page,
      never a 500; nothing of it was applied.
    - Deletions are logged in the admin's history once the registry has made them.

    Subclasses implement `delete_through_registry` with the registry calls.
    """

    def refused(self, request: HttpRequest, error: RegistryError) -> HttpResponse:
        self.message_user(request, f"The registry refused this change: {error.message}", messages.ERROR)
        return HttpResponseRedirect(request.get_full_path())

    @csrf_protect_m
    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        try:
            return self._changeform_view(request, object_id, form_url, extra_context)
        except RegistryError as error:
            return self.refused(request, error)

    @csrf_protect_m
    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict | None = None) -> HttpResponse:
        try:
            return self._delete_view(request, object_id, extra_context)
        except RegistryError as error:
            return self.refused(request, error)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        try:
            return super().changelist_view(request, extra_context)
        except RegistryError as error:
            return self.refused(request, error)

    # -- deletions

    def delete_through_registry(self, request: HttpRequest, objs: list[Any]) -> None:
        """Delete `objs` in one registry change: all of them, or (one refused) none."""
        raise NotImplementedError

    def log_deletions(self, request: HttpRequest, queryset: Any) -> list:
        # Django logs before deleting, counting on its transaction to undo the entry if the
        # deletion fails; with none held, the entry is written once the registry has deleted.
        setattr(request, PENDING_DELETIONS, list(queryset))
        return []

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        self.delete_through_registry(request, [obj])
        self._log_deleted(request)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        self.delete_through_registry(request, list(queryset))
        self._log_deleted(request)

    def _log_deleted(self, request: HttpRequest) -> None:
        deleted = getattr(request, PENDING_DELETIONS, [])
        if deleted:
            super().log_deletions(request, deleted)
            delattr(request, PENDING_DELETIONS)


class RegistryAdmin(RegistryWritesAdmin):
    """Admin for versioned desired state: only the changed fields are sent, with the version loaded.

    Subclasses implement `create`, `update` and `delete_through_registry` with the registry calls.
    """

    def create(self, request: HttpRequest, obj: Any, data: dict[str, Any]) -> db_models.Model:
        raise NotImplementedError

    def update(
        self, request: HttpRequest, obj: Any, form: forms.ModelForm, changes: dict[str, Any], version: int | None
    ) -> db_models.Model:
        raise NotImplementedError

    # -- the version the user loaded travels with the change form

    def get_fieldsets(self, request: HttpRequest, obj: db_models.Model | None = None) -> list:
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is None:
            # Nothing is observed or recorded about a row before it exists.
            readonly = set(self.get_readonly_fields(request, obj))
            fieldsets = [
                (name, {**options, "fields": [field for field in options["fields"] if field not in readonly]})
                for name, options in fieldsets
            ]
            return [(name, options) for name, options in fieldsets if options["fields"]]
        if not self.has_change_permission(request, obj):
            return fieldsets
        (name, options), *rest = fieldsets
        return [(name, {**options, "fields": [*options["fields"], "version"]}), *rest]

    def formfield_for_dbfield(self, db_field: db_models.Field, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "version":
            kwargs["widget"] = forms.HiddenInput
        if isinstance(db_field, db_models.URLField):
            kwargs.setdefault("assume_scheme", "http")  # Triton serves plain HTTP unless told otherwise
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @staticmethod
    def changes(form: forms.ModelForm) -> dict[str, Any]:
        return {name: form.cleaned_data[name] for name in form.changed_data if name != "version"}

    # -- writes

    def save_model(self, request: HttpRequest, obj: Any, form: forms.ModelForm, change: bool) -> None:
        if change:
            saved = self.update(request, obj, form, self.changes(form), form.cleaned_data.get("version"))
        else:
            saved = self.create(request, obj, form.cleaned_data)
        copy_saved(obj, saved)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple:
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed -= {model._meta.verbose_name for model in OBSERVED_MODELS}
        return deleted, model_count, perms_needed, protected


class ObservedAdmin(admin.ModelAdmin):
    """Observed state, written only by telemetry ingest: the admin shows it and changes nothing."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: db_models.Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: db_models.Model | None = None) -> bool:
        return False


# ---- nodes --------------------------------------------------------------------------


class NodeForm(forms.ModelForm):
    roles = forms.MultipleChoiceField(choices=NodeRole.choices, widget=forms.CheckboxSelectMultiple, required=False)
    labels = PrettyJSONField(
        required=False,
        help_text='An object of label key to value, e.g. {"gpu-type": "h100"}. Policies select nodes by labels.',
    )

    class Meta:
        model = Node
        fields = ("name", "address", "roles", "zone", "labels", "version")

    def clean_roles(self) -> list[str]:
        return sorted(set(self.cleaned_data["roles"]))

    def clean_labels(self) -> dict[str, str]:
        labels = self.cleaned_data["labels"]
        if labels is None:  # an emptied textarea
            return {}
        return validate_labels(labels)


class RoleFilter(admin.SimpleListFilter):
    title = "role"
    parameter_name = "role"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return list(NodeRole.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() not in NodeRole.values:
            return queryset
        # Roles are a JSON list and SQLite has no JSON containment lookup; the node table is small.
        ids = [pk for pk, roles in Node.objects.values_list("pk", "roles") if self.value() in (roles or [])]
        return queryset.filter(pk__in=ids)


@admin.register(Node)
class NodeAdmin(RegistryAdmin):
    form = NodeForm
    list_display = (
        "name",
        "address",
        "zone",
        "role_list",
        "health",
        "draining",
        "last_seen",
        "gpu_count",
        "agent_version",
        "agent_token",
    )
    list_filter = ("health", "draining", RoleFilter, "zone")
    search_fields = ("name", "address", "zone", "agent_version")
    actions = ("drain_nodes", "undrain_nodes", "rotate_agent_token", "revoke_agent_token")
    fieldsets = (
        (None, {"fields": ["name", "address", "roles", "zone", "labels"]}),
        (
            "State",
            {
                "fields": ["draining", "health", "last_seen", "agent_version", "agent_token"],
                "description": "Drain, undrain and token changes are actions on the node list; "
                "health, last seen and agent version are reported by the node's agent.",
            },
        ),
        ("History", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    )
    readonly_fields = ("draining", "health", "last_seen", "agent_version", "agent_token", "created_at", "updated_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Node | None = None) -> tuple[str, ...]:
        # A node's name is its identity in the mesh: register a new node to rename one.
        return (*self.readonly_fields, "name") if obj is not None else self.readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("token").annotate(gpu_total=Count("gpus"))

    @admin.display(description="roles")
    def role_list(self, node: Node) -> str:
        return ", ".join(node.roles or []) or "—"

    @admin.display(description="GPUs", ordering="gpu_total")
    def gpu_count(self, node: Node) -> int:
        return node.gpu_total

    @admin.display(description="agent token")
    def agent_token(self, node: Node) -> str:
        token = getattr(node, "token", None)
        if token is None:
            return "none"
        if token.revoked_at is not None:
            return f"{token.prefix}… revoked {timezone.localtime(token.revoked_at):%Y-%m-%d %H:%M}"
        return f"{token.prefix}… issued {timezone.localtime(token.issued_at):%Y-%m-%d %H:%M}"

    def create(self, request: HttpRequest, obj: Node, data: dict[str, Any]) -> Node:
        node, token = registry.create_node(
            actor=request.user,
            name=data["name"],
            address=data["address"],
            roles=data["roles"],
            zone=data["zone"],
            labels=data["labels"],
        )
        self.show_node_token(request, node, token)
        return node

    def update(
        self, request: HttpRequest, obj: Node, form: forms.ModelForm, changes: dict[str, Any], version: int | None
    ) -> Node:
        return registry.update_node(actor=request.user, name=obj.name, changes=changes, expected_version=version)

    def delete_through_registry(self, request: HttpRequest, objs: list[Node]) -> None:
        registry.delete_nodes(actor=request.user, names=[node.name for node in objs])

    def show_node_token(self, request: HttpRequest, node: Node, token: str) -> None:
        self.message_user(
            request,
            format_html(
                "Agent token for node “{}”: <code>{}</code> — {}. Configure the node's agent with it.",
                node.name,
                token,
                SHOWN_ONCE,
            ),
            messages.SUCCESS,
        )

    def _for_each_node(self, request: HttpRequest, queryset: QuerySet, change: Any) -> int:
        """Apply `change(name)` to each node; a refusal is reported and the others go on."""
        done = 0
        for name in queryset.values_list("name", flat=True):
            try:
                change(name)
            except RegistryError as error:
                self.message_user(request, f"Node “{name}”: {error.message}", messages.ERROR)
            else:
                done += 1
        return done

    @admin.action(description="Drain selected nodes", permissions=["change"])
    def drain_nodes(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = self._for_each_node(
            request, queryset, lambda name: registry.set_node_draining(actor=request.user, name=name, draining=True)
        )
        if done:
            self.message_user(request, f"Drained {done} node(s): no new work is routed or placed on them.")

    @admin.action(description="Undrain selected nodes", permissions=["change"])
    def undrain_nodes(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = self._for_each_node(
            request, queryset, lambda name: registry.set_node_draining(actor=request.user, name=name, draining=False)
        )
        if done:
            self.message_user(request, f"Undrained {done} node(s): they take new work again.")

    @admin.action(description="Rotate agent token", permissions=["change"])
    def rotate_agent_token(self, request: HttpRequest, queryset: QuerySet) -> None:
        def rotate(name: str) -> None:
            node, token = registry.rotate_node_token(actor=request.user, name=name)
            self.show_node_token(request, node, token)

        self._for_each_node(request, queryset, rotate)

    @admin.action(description="Revoke agent token", permissions=["change"])
    def revoke_agent_token(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = self._for_each_node(
            request, queryset, lambda name: registry.revoke_node_token(actor=request.user, name=name)
        )
        if done:
            self.message_user(
                request,
                f"Revoked the agent token of {done} node(s); their agents are refused until you rotate a new token.",
            )


@admin.register(Gpu)
class GpuAdmin(ObservedAdmin):
    list_display = ("node", "index", "name", "uuid", "memory", "mig_profile", "simulated", "last_seen")
    list_filter = ("simulated", "name", "node")
    search_fields = ("uuid", "name", "node__name", "mig_profile")
    list_select_related = ("node",)

    @admin.display(description="memory", ordering="memory_total_bytes")
    def memory(self, gpu: Gpu) -> str:
        return f"{gpu.memory_total_bytes / 2**30:.1f} GiB"


# ---- catalog and runtimes -----------------------------------------------------------


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


# ---- policies -----------------------------------------------------------------------


class PolicyForm(forms.ModelForm):
    spec = PrettyJSONField(help_text="The policy's settings for its kind, as a JSON object; checked when you save.")

    class Meta:
        model = Policy
        fields = ("name", "kind", "spec", "enabled", "priority", "description", "version")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        kind = cleaned.get("kind")
        if kind and "spec" in cleaned:  # both parsed: the spec is checked against its kind
            try:
                cleaned["spec"] = validate_spec(kind, cleaned["spec"])
            except SpecError as error:
                for field, field_messages in spec_error_messages(error.errors).items():
                    self.add_error(field if field in self.fields else None, field_messages)
        return cleaned


@admin.register(Policy)
class PolicyAdmin(RegistryAdmin):
    form = PolicyForm
    list_display = ("name", "kind", "enabled", "priority", "spec_summary", "owner", "version", "updated_at")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "description")
    list_select_related = ("owner",)
    actions = ("enable_policies", "disable_policies")
    fieldsets = (
        (None, {"fields": ["name", "kind", "spec", "enabled", "priority", "description"]}),
        ("History", {"fields": ["owner", "created_at", "updated_at"], "classes": ["collapse"]}),
    )
    readonly_fields = ("owner", "created_at", "updated_at")

    @admin.display(description="spec")
    def spec_summary(self, policy: Policy) -> str:
        text = json.dumps(policy.spec, sort_keys=True)
        return text if len(text) <= 80 else text[:79] + "…"

    def create(self, request: HttpRequest, obj: Policy, data: dict[str, Any]) -> Policy:
        return registry.create_policy(
            actor=request.user,
            name=data["name"],
            kind=data["kind"],
            spec=data["spec"],
            enabled=data["enabled"],
            priority=data["priority"],
            description=data["description"],
        )

    def update(
        self, request: HttpRequest, obj: Policy, form: forms.ModelForm, changes: dict[str, Any], version: int | None
    ) -> Policy:
        # The form already holds a new name if the user renamed it; the row is found by the old one.
        return registry.update_policy(
            actor=request.user, name=form.initial["name"], changes=changes, expected_version=version
        )

    def delete_through_registry(self, request: HttpRequest, objs: list[Policy]) -> None:
        registry.delete_policies(actor=request.user, names=[policy.name for policy in objs])

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet, enabled: bool) -> int:
        done = 0
        for name in queryset.values_list("name", flat=True):
            try:
                registry.update_policy(actor=request.user, name=name, changes={"enabled": enabled})
            except RegistryError as error:
                self.message_user(request, f"Policy “{name}”: {error.message}", messages.ERROR)
            else:
                done += 1
        return done

    @admin.action(description="Enable selected policies", permissions=["change"])
    def enable_policies(self, request: HttpRequest, queryset: QuerySet) -> None:
        if done := self._set_enabled(request, queryset, True):
            self.message_user(request, f"Enabled {done} polic{'y' if done == 1 else 'ies'}.")

    @admin.action(description="Disable selected policies", permissions=["change"])
    def disable_policies(self, request: HttpRequest, queryset: QuerySet) -> None:
        if done := self._set_enabled(request, queryset, False):
            self.message_user(request, f"Disabled {done} polic{'y' if done == 1 else 'ies'}.")


# ---- API tokens ---------------------------------------------------------------------


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ("name", "user", "tenant", "expires_at")

    def clean_expires_at(self) -> Any:
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= timezone.now():
            raise ValidationError("Must be in the future; leave it empty for a token that does not expire.")
        return expires_at


class TokenStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("usable", "usable"), ("revoked", "revoked"), ("expired", "expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        now = timezone.now()
        if self.value() == "usable":
            return queryset.filter(revoked_at__isnull=True).exclude(expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        return queryset


@admin.register(ApiToken)
class ApiTokenAdmin(RegistryWritesAdmin):
    """Issued here and shown once; afterwards read-only, except that it can be revoked ("delete" revokes)."""

    form = ApiTokenForm
    list_display = ("name", "user", "tenant", "prefix", "status", "created_at", "expires_at", "revoked_at")
    list_filter = (TokenStatusFilter, "tenant")
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user", "tenant")
    autocomplete_fields = ("user", "tenant")
    actions = ("revoke_tokens",)
    readonly_fields = ("prefix", "status", "created_at", "revoked_at")
    delete_confirmation_template = "admin/meshcore/apitoken/delete_confirmation.html"

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> tuple[str, ...]:
        # The digest is never shown, not even read-only.
        if obj is None:
            return ("name", "user", "tenant", "expires_at")
        return ("name", "user", "tenant", "prefix", "status", "created_at", "expires_at", "revoked_at")

    @admin.display(description="status")
    def status(self, token: ApiToken) -> str:
        if token.revoked_at is not None:
            return "revoked"
        return "usable" if token.is_usable() else "expired"

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        if obj is not None and obj.revoked_at is not None:
            return False  # already revoked: nothing left to do
        return super().has_delete_permission(request, obj)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return self.has_delete_permission(request)

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # "Revoke selected tokens" is what deleting means here
        return actions

    def save_model(self, request: HttpRequest, obj: ApiToken, form: forms.ModelForm, change: bool) -> None:
        data = form.cleaned_data
        token, value = registry.issue_api_token(
            actor=request.user,
            user=data["user"],
            name=data["name"],
            tenant=data["tenant"],
            expires_at=data["expires_at"],
        )
        copy_saved(obj, token)
        self.message_user(
            request,
            format_html(
                "API token “{}” for {}: <code>{}</code> — {}. Send it as <code>Authorization: Bearer …</code>.",
                token.name,
                token.user.get_username(),
                value,
                SHOWN_ONCE,
            ),
            messages.SUCCESS,
        )

    def delete_through_registry(self, request: HttpRequest, objs: list[ApiToken]) -> None:
        registry.revoke_api_tokens(actor=request.user, token_ids=[token.pk for token in objs])

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        if IS_POPUP_VAR in request.POST:
            return super().response_delete(request, obj_display, obj_id)
        self.message_user(
            request,
            f"The API token “{obj_display}” was revoked; it stays listed for the audit trail.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:meshcore_apitoken_changelist", current_app=self.admin_site.name))

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet) -> None:
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True):
            try:
                registry.revoke_api_token(actor=request.user, token_id=token.pk)
            except RegistryError as error:
                self.message_user(request, f"Token “{token.name}”: {error.message}", messages.ERROR)
            else:
                revoked += 1
        self.message_user(request, f"Revoked {revoked} token(s); they stop working at once.")


# ---- events -------------------------------------------------------------------------


@admin.register(Event)
class EventAdmin(ObservedAdmin):
    list_display = ("created_at", "type", "node_name", "actor", "data_summary")
    list_filter = ("type", "created_at")
    search_fields = ("node_name", "actor", "type")
    date_hierarchy = "created_at"

    @admin.display(description="data")
    def data_summary(self, event: Event) -> str:
        text = json.dumps(event.data, sort_keys=True)
        return text if len(text) <= 100 else text[:99] + "…"


# ---- users and groups ---------------------------------------------------------------

# Identity is replicated too: Django's own GroupAdmin would write groups directly.
admin.site.unregister(Group)


@admin.register(User)
class MeshUserAdmin(RegistryWritesAdmin, UserAdmin):
    """Django's user admin (meshcore.User, so that identity can be replicated), writing through the registry.

    Permissions are granted through groups; per-user permissions are not edited here.
    """

    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name", "email")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    filter_horizontal = ("groups",)
    # Written by each replica when the user signs in there; never replicated, so not editable.
    readonly_fields = ("last_login",)

    @method_decorator(sensitive_post_parameters())
    @csrf_protect_m
    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        # UserAdmin.add_view wraps this in a transaction; registry writes must not run inside one.
        return self._add_view(request, form_url, extra_context)

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        # The password form saves with `user.save()`, which the registry attributes to the signed-in user.
        try:
            with registry.acting_as(request.user):
                return super().user_change_password(request, id, form_url)
        except RegistryError as error:
            return self.refused(request, error)

    def save_model(self, request: HttpRequest, obj: User, form: forms.ModelForm, change: bool) -> None:
        if change:
            # Only what the user changed: the form rounds some values (date_joined loses its microseconds).
            stored = User.objects.get(pk=obj.pk)
            for field in User._meta.concrete_fields:
                if field.name in form.fields and field.name not in form.changed_data:
                    setattr(obj, field.attname, getattr(stored, field.attname))
        registry.save_user(actor=request.user, user=obj)
        copy_saved(obj, User.objects.get(pk=obj.pk))

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool) -> None:
        # Memberships are replicated: the groups chosen go through the registry, not the form's m2m save.
        if "groups" in form.cleaned_data:
            registry.set_user_groups(actor=request.user, user=form.instance, groups=form.cleaned_data["groups"])

    def delete_through_registry(self, request: HttpRequest, objs: list[User]) -> None:
        registry.delete_users(actor=request.user, users=objs)
        if any(user.pk == request.user.pk for user in objs):
            setattr(request, PENDING_DELETIONS, [])  # the admin's history went with the account that wrote it


@admin.register(Group)
class MeshGroupAdmin(RegistryWritesAdmin, GroupAdmin):
    """Groups (tenants) and their permissions, written through the registry."""

    def save_model(self, request: HttpRequest, obj: Group, form: forms.ModelForm, change: bool) -> None:
        permissions = [f"{p.content_type.app_label}.{p.codename}" for p in form.cleaned_data["permissions"]]
        registry.save_group(actor=request.user, group=obj, permissions=permissions)
        copy_saved(obj, Group.objects.get(pk=obj.pk))

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool) -> None:
        """Nothing: the permissions went with the group in `save_model`."""

    def delete_through_registry(self, request: HttpRequest, objs: list[Group]) -> None:
        registry.delete_groups(actor=request.user, groups=objs)
