"""WebSocket routes; the dashboard and event stream add theirs in later issues."""

websocket_urlpatterns: list = []
