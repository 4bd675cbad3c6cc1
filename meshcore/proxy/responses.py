"""The proxy's own answers: JSON `{"error", "detail"}` with the request id, never a stack trace."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"


async def send_json(send: Send, status: int, payload: Any, headers: Headers | None = None) -> None:
    body = orjson.dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", JSON), (b"content-length", str(len(body)).encode()), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send,
    status: int,
    error: str,
    detail: str,
    request_id: bytes,
    headers: Headers | None = None,
    **extra: Any,
) -> None:
    await send_json(
        send, status, {"error": error, "detail": detail, **extra}, [(b"x-request-id", request_id), *(headers or [])]
    )
