"""The ASGI application of a mesh process.

`/proxy/` goes to the lean data-path handler; every other HTTP path to Django; WebSockets
to Channels behind origin and session checks.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "infermesh_site.settings")

from django.core.asgi import get_asgi_application

django_http_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from infermesh_site.routing import websocket_urlpatterns  # noqa: E402
from meshcore.proxy.app import proxy_app  # noqa: E402

PROXY_PREFIX = "/proxy/"


class PathPrefixDispatcher:
    """Sends HTTP requests under a prefix to one app and the rest to another, with no overhead."""

    def __init__(self, prefix: str, prefixed_app: Any, default_app: Any) -> None:
        self.prefix = prefix
        self.bare_prefix = prefix.rstrip("/")
        self.prefixed_app = prefixed_app
        self.default_app = default_app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope["path"]
        if path.startswith(self.prefix) or path == self.bare_prefix:
            await self.prefixed_app(scope, receive, send)
        else:
            await self.default_app(scope, receive, send)


async def lifespan_app(scope: dict, receive: Any, send: Any) -> None:
    """Answers ASGI lifespan for servers that send it (uvicorn); background parts start in `serve`."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolTypeRouter(
    {
        "http": PathPrefixDispatcher(PROXY_PREFIX, proxy_app, django_http_app),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        "lifespan": lifespan_app,
    }
)
