"""What the event stream tests share: a real channel layer (in memory or Redis), personas'
credentials as handshake headers, and recording events from async tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.db import connections
from django.test import Client

from meshcore import registry
from meshcore.channel_bridge import remember_server_loop
from meshcore.events import record_event
from meshcore.models import Event

REDIS_URL = os.environ.get("MESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
ORIGIN = (b"origin", b"http://127.0.0.1")
LAYERS = ["memory", "redis"]


@asynccontextmanager
async def channel_layer(kind: str, settings_fixture: Any) -> AsyncIterator[BaseChannelLayer]:
    """A fresh layer of that kind (Redis under a prefix of its own), entered in the test body.

    Not a fixture: sync fixtures publish their own changes (a user created, a node registered)
    from a loop of their thread, and Redis connections must be closed on the loop that opened
    them. The test's loop stands in for the server's, as the ASGI application's would.
    """
    if kind == "redis":
        settings_fixture.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [REDIS_URL], "prefix": f"infermesh-test-{uuid.uuid4().hex[:12]}"},
            }
        }
    else:
        settings_fixture.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    remember_server_loop()
    layer = get_channel_layer()
    try:
        yield layer
    finally:
        await layer.flush()
        # Connections opened by sync code the test ran in a worker thread (PostgreSQL keeps them open).
        await database_sync_to_async(connections.close_all)()


def session_cookie(user: Any) -> tuple[bytes, bytes]:
    """A Cookie header carrying a signed-in session of `user` (call from sync code)."""
    client = Client()
    client.force_login(user)
    return b"cookie", f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


def api_token_header(actor: Any, user: Any) -> tuple[bytes, bytes]:
    _, value = registry.issue_api_token(actor=actor, user=user, name=f"stream-{uuid.uuid4().hex[:6]}")
    return b"authorization", f"Bearer {value}".encode()


async def record(event_type: str, node: str = "gpu-a", **data: Any) -> Event:
    return await database_sync_to_async(record_event)(event_type, node_name=node, data=data)


async def record_unhealthy() -> Event:
    """The event both streams are followed with from end to end: gpu-a unhealthy, seen by the system."""
    return await record("NODE_UNHEALTHY", reason="missed 3 report intervals")


def unhealthy_message(event: Event) -> dict[str, Any]:
    """What a subscriber receives for `record_unhealthy`'s event: the WebSocket message, the SSE frame's data."""
    return {
        "kind": "event",
        "id": event.pk,
        "type": "NODE_UNHEALTHY",
        "time": event.created_at.isoformat(),
        "node": "gpu-a",
        "actor": "system",
        "data": {"reason": "missed 3 report intervals"},
    }
