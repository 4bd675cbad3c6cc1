"""Nodes (with drain, token actions and their GPUs) and the observed GPUs."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from meshcore import registry
from meshcore.admin.base import (
    SHOWN_ONCE,
    ObservedAdmin,
    PrettyJSONField,
    RegistryAdmin,
)
from meshcore.labels import validate_labels
from meshcore.models import (
    Gpu,
    Node,
    NodeRole,
)


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
    updated_with, deleted_with = "update_node", "delete_nodes"
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

    def _set_draining(self, request: HttpRequest, queryset: QuerySet, draining: bool) -> int:
        return self.for_each_name(
            request,
            queryset,
            lambda name: registry.set_node_draining(actor=request.user, name=name, draining=draining),
        )

    @admin.action(description="Drain selected nodes", permissions=["change"])
    def drain_nodes(self, request: HttpRequest, queryset: QuerySet) -> None:
        if done := self._set_draining(request, queryset, True):
            self.message_user(request, f"Drained {done} node(s): no new work is routed or placed on them.")

    @admin.action(description="Undrain selected nodes", permissions=["change"])
    def undrain_nodes(self, request: HttpRequest, queryset: QuerySet) -> None:
        if done := self._set_draining(request, queryset, False):
            self.message_user(request, f"Undrained {done} node(s): they take new work again.")

    @admin.action(description="Rotate agent token", permissions=["change"])
    def rotate_agent_token(self, request: HttpRequest, queryset: QuerySet) -> None:
        def rotate(name: str) -> None:
            node, token = registry.rotate_node_token(actor=request.user, name=name)
            self.show_node_token(request, node, token)

        self.for_each_name(request, queryset, rotate)

    @admin.action(description="Revoke agent token", permissions=["change"])
    def revoke_agent_token(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = self.for_each_name(
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
