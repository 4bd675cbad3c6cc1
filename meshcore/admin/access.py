"""API tokens, users and groups: identity is replicated, so every write goes through the registry."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR, csrf_protect_m
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters

from meshcore import registry
from meshcore.admin.base import (
    PENDING_DELETIONS,
    SHOWN_ONCE,
    RegistryWritesAdmin,
    copy_saved,
)
from meshcore.models import (
    ApiToken,
    User,
)
from meshcore.registry import RegistryError


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
