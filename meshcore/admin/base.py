"""What every admin page of the mesh shares: writes through the registry, view-only observed state, JSON form fields."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import csrf_protect_m
from django.db import models as db_models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from meshcore import registry
from meshcore.models import (
    Gpu,
    ModelInstance,
)
from meshcore.registry import RegistryError

# Said beside a secret shown once: a token when issued or rotated.
SHOWN_ONCE = "store it now, it will not be shown again"


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

    A subclass names its registry functions (looked up when called) and what they are keyed by:
    `created_with` and `create_fields` (the form's fields passed as keywords of the same name),
    `updated_with` and `deleted_with`, with `key` = (the keyword, the row's attribute), e.g.
    ("model_id", "pk"); the delete takes the plural keyword. A subclass whose calls differ
    overrides `create`, `update` or `delete_through_registry`.
    """

    created_with = ""
    create_fields: tuple[str, ...] = ()
    updated_with = ""
    deleted_with = ""
    key: tuple[str, str] = ("name", "name")

    def for_each_name(self, request: HttpRequest, queryset: QuerySet, change: Any) -> int:
        """Apply `change(name)` to each selected row; a refusal is reported and the others go on."""
        done = 0
        label = self.model._meta.verbose_name.capitalize()
        for name in queryset.values_list("name", flat=True):
            try:
                change(name)
            except RegistryError as error:
                self.message_user(request, f"{label} “{name}”: {error.message}", messages.ERROR)
            else:
                done += 1
        return done

    def create(self, request: HttpRequest, obj: Any, data: dict[str, Any]) -> db_models.Model:
        create = getattr(registry, self.created_with)
        return create(actor=request.user, **{field: data[field] for field in self.create_fields})

    def update(
        self, request: HttpRequest, obj: Any, form: forms.ModelForm, changes: dict[str, Any], version: int | None
    ) -> db_models.Model:
        keyword, attribute = self.key
        update = getattr(registry, self.updated_with)
        return update(
            actor=request.user, changes=changes, expected_version=version, **{keyword: getattr(obj, attribute)}
        )

    def delete_through_registry(self, request: HttpRequest, objs: list[Any]) -> None:
        keyword, attribute = self.key
        delete = getattr(registry, self.deleted_with)
        delete(actor=request.user, **{f"{keyword}s": [getattr(obj, attribute) for obj in objs]})

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
