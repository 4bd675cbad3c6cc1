"""Policies, edited with their spec validated as the API validates it."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from meshcore import registry
from meshcore.admin.base import (
    PrettyJSONField,
    RegistryAdmin,
    spec_error_messages,
)
from meshcore.models import (
    Policy,
)
from meshcore.policy_specs import SpecError, validate_spec


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
    created_with, deleted_with = "create_policy", "delete_policies"
    create_fields = ("name", "kind", "spec", "enabled", "priority", "description")
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

    def update(
        self, request: HttpRequest, obj: Policy, form: forms.ModelForm, changes: dict[str, Any], version: int | None
    ) -> Policy:
        # The form already holds a new name if the user renamed it; the row is found by the old one.
        return registry.update_policy(
            actor=request.user, name=form.initial["name"], changes=changes, expected_version=version
        )

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet, enabled: bool) -> int:
        return self.for_each_name(
            request,
            queryset,
            lambda name: registry.update_policy(actor=request.user, name=name, changes={"enabled": enabled}),
        )

    @admin.action(description="Enable selected policies", permissions=["change"])
    def enable_policies(self, request: HttpRequest, queryset: QuerySet) -> None:
        if done := self._set_enabled(request, queryset, True):
            self.message_user(request, f"Enabled {done} polic{'y' if done == 1 else 'ies'}.")

    @admin.action(description="Disable selected policies", permissions=["change"])
    def disable_policies(self, request: HttpRequest, queryset: QuerySet) -> None:
        if done := self._set_enabled(request, queryset, False):
            self.message_user(request, f"Disabled {done} polic{'y' if done == 1 else 'ies'}.")
