"""WebSocket routes; the dashboard adds its own in a later issue."""

from django.urls import path

from meshcore.consumers import EventStreamConsumer

websocket_urlpatterns: list = [
    path("ws/events/", EventStreamConsumer.as_asgi(), name="ws-events"),
]
