from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """Live fleet pages (`/dashboard/`) and their WebSocket consumer (`/ws/dashboard/`)."""

    name = "dashboard"

    def ready(self) -> None:
        from dashboard import checks  # noqa: F401  (registers the system checks; nothing starts here)
