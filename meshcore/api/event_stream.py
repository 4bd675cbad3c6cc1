"""The event stream as server-sent events: `GET /api/v1/events/stream/`.

A plain async Django view, outside DRF (which cannot stream from async code): it checks the
session or Bearer token itself, then streams `id:`/`event:`/`data:` frames as events commit,
so a browser's EventSource resumes after a dropped connection with `Last-Event-ID`.
The same filters as the WebSocket (`meshcore.events.parse_subscription`); a comment line
every HEARTBEAT_SECONDS keeps proxies from closing an idle stream. Resuming past more than
BACKLOG_LIMIT stored events sends that many, a `backlog_truncated` frame and ends the
response: EventSource reconnects from the last id by itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from meshcore import events
from meshcore.api.authentication import BEARER, TokenRejected, authenticate_bearer

HEARTBEAT_SECONDS = 15.0
RETRY_MILLISECONDS = 3000


def _frame(payload: dict[str, Any], event: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _backlog(subscription: events.Subscription) -> tuple[list[dict[str, Any]], bool]:
    try:
        return subscription.backlog()
    finally:
        # A stream stays open for hours; it must not hold a database connection all that time.
        connection.close()


async def _stream(subscription: events.Subscription, layer: BaseChannelLayer, channel: str) -> AsyncIterator[str]:
    groups = subscription.groups()
    receiving: asyncio.Task | None = None
    try:
        yield f"retry: {RETRY_MILLISECONDS}\n\n"
        backlog, truncated = await sync_to_async(_backlog)(subscription)
        for message in backlog:
            yield _frame(events.event_payload(message), message["event_type"], message["id"])
        if truncated:
            after = backlog[-1]["id"]
            detail = f"More than {len(backlog)} stored events match; reconnect from id {after} for the rest."
            yield _frame({"kind": "backlog_truncated", "after": after, "detail": detail}, "backlog_truncated")
            return
        sent = {message["id"] for message in backlog}
        while True:
            receiving = receiving or asyncio.ensure_future(layer.receive(channel))
            done, _ = await asyncio.wait({receiving}, timeout=HEARTBEAT_SECONDS)
            if not done:
                # channels-redis forgets group members after a day: each heartbeat renews them.
                for group in groups:
                    await layer.group_add(group, channel)
                yield ": heartbeat\n\n"
                continue
            message, receiving = receiving.result(), None
            if message["type"] == "mesh.event":
                if message["id"] not in sent and subscription.wants_event(message):
                    yield _frame(events.event_payload(message), message["event_type"], message["id"])
            elif message["type"] == "mesh.telemetry":
                for text in subscription.telemetry_texts(message):
                    yield f"event: telemetry\ndata: {text}\n\n"
    finally:
        if receiving is not None:
            receiving.cancel()
        for group in groups:
            await layer.group_discard(group, channel)


def _unauthorized(detail: str) -> JsonResponse:
    response = JsonResponse({"detail": detail}, status=401)
    response["WWW-Authenticate"] = f'{BEARER} realm="api"'
    return response


@csrf_exempt  # only GET is served, which changes nothing: other methods get a plain 405, not a CSRF 403
async def event_stream(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        response = JsonResponse({"detail": f'Method "{request.method}" not allowed.'}, status=405)
        response["Allow"] = "GET"
        return response
    try:
        found = await sync_to_async(authenticate_bearer)(request.headers.get("Authorization", ""))
    except TokenRejected as error:
        return _unauthorized(str(error))
    if found is None and not (await request.auser()).is_authenticated:
        return _unauthorized("Authentication credentials were not provided.")
    try:
        subscription = events.parse_subscription(
            dict(request.GET.lists()), last_event_id=request.headers.get("Last-Event-ID")
        )
    except events.InvalidSubscription as error:
        return JsonResponse(error.errors, status=400)

    layer = get_channel_layer()
    channel = await layer.new_channel()
    try:
        # Join before the backlog is read: an event committed in between then arrives live, not lost.
        for group in subscription.groups():
            await layer.group_add(group, channel)
    except Exception:
        return JsonResponse({"detail": "The live event channel is unreachable; try again shortly."}, status=503)
    response = StreamingHttpResponse(_stream(subscription, layer, channel), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx would otherwise hold frames back until its buffer fills
    return response


class EventStreamDescription(APIView):
    """How the OpenAPI schema describes `event_stream`; requests never reach this class."""

    @extend_schema(
        operation_id="v1_events_stream",
        tags=["events"],
        summary="Stream events as they happen (server-sent events)",
        description=(
            "A `text/event-stream` of events: one frame per event, `id:` its id, `event:` its type, "
            "`data:` JSON `{kind, id, type, time, node, actor, data}`; `event: telemetry` frames with "
            "`telemetry=1`; a comment every 15 s. Reconnect with `Last-Event-ID` (EventSource does) "
            "or `after` to get the events missed, oldest first, then live ones, none twice."
        ),
        parameters=[
            OpenApiParameter("types", str, description="Comma-separated event types (repeatable); default all."),
            OpenApiParameter("node", str, description="Comma-separated node names (repeatable); default all."),
            OpenApiParameter("after", int, description="Send stored events with a larger id first."),
            OpenApiParameter("telemetry", bool, description="Also stream telemetry reports."),
            OpenApiParameter(
                "Last-Event-ID", int, OpenApiParameter.HEADER, description="As `after`; wins over it on reconnect."
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description="The stream."),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="A parameter is wrong; each one lists why."),
            401: OpenApiResponse(OpenApiTypes.OBJECT, description="Not signed in, or the token is not usable."),
        },
    )
    def get(self, request: Request) -> Response:
        raise NotImplementedError("served by meshcore.api.event_stream.event_stream")


# drf-spectacular documents DRF views only: this names the class that describes the plain view.
event_stream.cls = EventStreamDescription  # type: ignore[attr-defined]
event_stream.initkwargs = {}  # type: ignore[attr-defined]
