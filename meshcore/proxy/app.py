"""The data path for `/proxy/...`: a plain ASGI application outside Django's request cycle.

Routing is not built yet, so every request gets a JSON 503 saying so. The request body
is drained first so clients that stream it see a clean answer rather than a reset.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

NOT_CONFIGURED = {
    "error": "routing_not_configured",
    "detail": "infermesh does not route inference yet: no router is configured in this process. "
    "Send requests straight to a Triton server until routing is enabled.",
}


async def _drain_body(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def proxy_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise ValueError(f"proxy_app serves HTTP only, not {scope['type']!r}")
    await _drain_body(receive)
    body = json.dumps(NOT_CONFIGURED).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.append((b"retry-after", b"60"))
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            headers.append((b"x-request-id", value))
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
