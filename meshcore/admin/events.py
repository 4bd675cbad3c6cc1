"""The event log, view-only."""

from __future__ import annotations

import json

from django.contrib import admin

from meshcore.admin.base import (
    ObservedAdmin,
)
from meshcore.models import (
    Event,
)


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
