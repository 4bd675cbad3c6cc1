"""`POST /api/v1/telemetry/` on a lean path: a plain ASGI application, no Django request cycle.

Every node reports every second, so the per-report cost decides how large a fleet one
process can take (benchmarks/telemetry_ingest.py measures both paths). Answers match
the API's: 400 with field errors, 401 with WWW-Authenticate, 403, 405, 413, 415, and
503 with Retry-After when the live state store is away. The DRF view
`meshcore.api.telemetry.TelemetryView` does the same through Django, for the schema and
for `MESH_TELEMETRY_PATH=django`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async

from meshcore import jsontext
from meshcore.live.node_auth import node_tokens
from meshcore.live.parts import telemetry_ingest
from meshcore.live.reports import Report, ReportInvalid, parse_report

logger = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY_BYTES = 1024 * 1024
UNAUTHORIZED = "Send this node's token: Authorization: Bearer imn_… (issued when the node was registered)."


class _Reject(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or []


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Reject(400, {"detail": "The request ended before its body."})
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _Reject(413, {"detail": f"A report may be at most {MAX_BODY_BYTES} bytes."})
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _bearer(headers: dict[bytes, bytes]) -> str:
    scheme, _, value = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or " " in value:
        raise _Reject(401, {"detail": UNAUTHORIZED}, [(b"www-authenticate", b'Bearer realm="agents"')])
    return value


async def node_for_token(token: str) -> str | None:
    known, node = node_tokens.cached(token)
    if not known:
        node = await sync_to_async(node_tokens.lookup)(token)
    return node


def _checked_report(node: str, body: bytes | Any) -> Report | tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
    """The parsed report, or the answer that refuses it."""
    if isinstance(body, bytes | bytearray | str):
        try:
            body = jsontext.loads(body)
        except (ValueError, RecursionError):
            return 400, {"non_field_errors": ["The body is not valid JSON."]}, []
    try:
        report = parse_report(body)
    except ReportInvalid as invalid:
        return 400, invalid.errors, []
    if report.node != node:
        return 403, {"node": [f"This token belongs to node {node!r}, not {report.node!r}."]}, []
    return report


def _unavailable(node: str) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
    logger.warning("telemetry ingest failed for node %s", node, exc_info=True)
    return 503, {"detail": "The live state store is unavailable; retry shortly."}, [(b"retry-after", b"1")]


def handle_report(node: str, body: bytes | Any) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
    """The whole ingest of one authenticated report (its body, or its decoded JSON): status, answer, headers."""
    report = _checked_report(node, body)
    if not isinstance(report, Report):
        return report
    try:
        outcome = telemetry_ingest().ingest(report)
    except Exception:
        return _unavailable(node)
    return 200, outcome.as_json(), []


async def handle_report_async(node: str, body: bytes) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
    """The same on the server's loop: checked inline (short, local), the store write awaited."""
    report = _checked_report(node, body)
    if not isinstance(report, Report):
        return report
    try:
        outcome = await telemetry_ingest().ingest_async(report)
    except Exception:
        return _unavailable(node)
    return 200, outcome.as_json(), []


async def telemetry_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    headers = dict(scope.get("headers", []))
    extra: list[tuple[bytes, bytes]] = []
    try:
        if scope["method"] != "POST":
            raise _Reject(405, {"detail": f'Method "{scope["method"]}" not allowed.'}, [(b"allow", b"POST")])
        content_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip()
        if content_type != b"application/json":
            raise _Reject(415, {"detail": "Send the report as application/json."})
        token = _bearer(headers)
        body = await _read_body(receive)
        node = await node_for_token(token)
        if node is None:
            raise _Reject(
                401, {"detail": "Invalid or revoked node token."}, [(b"www-authenticate", b'Bearer realm="agents"')]
            )
        status, answer, extra = await handle_report_async(node, body)
    except _Reject as reject:
        status, answer, extra = reject.status, reject.body, reject.headers
    payload = jsontext.compact(answer).encode()
    response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    response_headers += extra
    if b"x-request-id" in headers:
        response_headers.append((b"x-request-id", headers[b"x-request-id"]))
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": payload})
