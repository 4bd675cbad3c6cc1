"""WebSocket routes: the event stream and the dashboard's live updates."""

from django.urls import path

from dashboard.consumers import DashboardConsumer
from meshcore.consumers import EventStreamConsumer

websocket_urlpatterns: list = [
    path("ws/events/", EventStreamConsumer.as_asgi(), name="ws-events"),
    path("ws/dashboard/", DashboardConsumer.as_asgi(), name="ws-dashboard"),
]
