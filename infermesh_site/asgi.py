"""The ASGI application of a mesh process.

`/proxy/` goes to the lean data-path handler, `POST /api/v1/telemetry/` to the lean
ingest handler (unless `MESH_TELEMETRY_PATH=django`); every other HTTP path to Django;
WebSockets to Channels behind origin and session checks.
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
from django.conf import settings  # noqa: E402

from infermesh_site.ws_urls import websocket_urlpatterns  # noqa: E402
from meshcore.channel_bridge import remember_server_loop  # noqa: E402
from meshcore.live.asgi import telemetry_app  # noqa: E402
from meshcore.proxy.app import proxy_app  # noqa: E402
from meshcore.proxy.upstream import close_pools  # noqa: E402

PROXY_PREFIX = "/proxy/"
TELEMETRY_PATH = "/api/v1/telemetry/"
METRICS_PATH = "/metrics"


class PathPrefixDispatcher:
    """Sends HTTP requests under a prefix to one app, exact paths to others, the rest to a default."""

    def __init__(self, prefix: str, prefixed_app: Any, default_app: Any, exact: dict[str, Any] | None = None) -> None:
        self.prefix = prefix
        self.bare_prefix = prefix.rstrip("/")
        self.prefixed_app = prefixed_app
        self.default_app = default_app
        self.exact = exact or {}
        self.loop_known = False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if not self.loop_known:
            remember_server_loop()
            self.loop_known = True
        path = scope["path"]
        if path.startswith(self.prefix) or path == self.bare_prefix:
            await self.prefixed_app(scope, receive, send)
        elif path in self.exact:
            await self.exact[path](scope, receive, send)
        else:
            await self.default_app(scope, receive, send)


def remembering_loop(app: Any) -> Any:
    """The server's loop, recorded on the first connection: threads send to the channel layer on it."""

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        remember_server_loop()
        await app(scope, receive, send)

    return wrapped


async def lifespan_app(scope: dict, receive: Any, send: Any) -> None:
    """Answers ASGI lifespan for servers that send it (uvicorn); background parts start in `serve`.
    At shutdown the proxy finishes recording its events and closes its upstream connections, on
    the loop they belong to."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await proxy_app.close()
            await close_pools()
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolTypeRouter(
    {
        "http": PathPrefixDispatcher(
            PROXY_PREFIX,
            proxy_app,
            django_http_app,
            exact={
                METRICS_PATH: proxy_app.metrics_app,
                **({TELEMETRY_PATH: telemetry_app} if settings.MESH_TELEMETRY_PATH == "lean" else {}),
            },
        ),
        "websocket": remembering_loop(
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
        "lifespan": lifespan_app,
    }
)
