from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """Live fleet pages and their WebSocket consumers (built in a later issue)."""

    name = "dashboard"
