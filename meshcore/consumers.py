"""The event stream over WebSocket: `/ws/events/`.

A subscriber signs in with its session or sends `Authorization: Bearer imt_...` in the
handshake, chooses with query parameters (see `meshcore.events.parse_subscription`), and
receives one JSON object per event (`"kind": "event"`) and, with `telemetry=1`, per
telemetry report (`"kind": "telemetry"`); once the handshake completes it is subscribed.
Refusals are sent after accepting, so the client sees why: an `{"kind": "error", ...}`
message, then close code 4401 (not signed in, bad token) or 4400 (bad parameters).
Resuming past more than BACKLOG_LIMIT stored events sends that many, a `backlog_truncated`
message and close code 4000: reconnect with its `after`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from meshcore import events
from meshcore.api.authentication import TokenRejected, authenticate_bearer

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_RESUME = 4000
# channels-redis forgets group members after a day; long-lived subscribers renew well before.
GROUP_RENEW_SECONDS = 3600.0
SIGN_IN = "Sign in, or send an API token in the handshake: Authorization: Bearer imt_..."


class EventStreamConsumer(AsyncJsonWebsocketConsumer):
    subscription: events.Subscription | None = None
    backlog_ids: frozenset[int] = frozenset()
    renewer: asyncio.Task | None = None

    async def connect(self) -> None:
        refusal = await self._authentication_refusal()
        if refusal:
            await self._refuse(CLOSE_UNAUTHORIZED, {"status": 401, "detail": refusal})
            return
        params = parse_qs(self.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        try:
            subscription = events.parse_subscription(params)
        except events.InvalidSubscription as error:
            await self._refuse(CLOSE_BAD_REQUEST, {"status": 400, "errors": error.errors})
            return

        # Join before accepting and before reading the backlog: once connected, nothing committed is missed.
        self.groups = subscription.groups()
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.renewer = asyncio.create_task(self._renew_groups())
        await self.accept()
        backlog, truncated = await database_sync_to_async(subscription.backlog)()
        for message in backlog:
            await self.send_json(events.event_payload(message))
        if truncated:
            after = backlog[-1]["id"]
            detail = f"More than {len(backlog)} stored events match; reconnect with after={after} for the rest."
            await self.send_json({"kind": "backlog_truncated", "after": after, "detail": detail})
            await self.close(code=CLOSE_RESUME)
            return
        # Live copies of events already sent from the backlog are dropped (messages wait until connect returns).
        self.backlog_ids = frozenset(message["id"] for message in backlog)
        self.subscription = subscription

    async def disconnect(self, code: int) -> None:
        if self.renewer is not None:
            self.renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.renewer

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        """The stream is one-way; whatever a client sends is ignored."""

    async def mesh_event(self, message: dict[str, Any]) -> None:
        subscription = self.subscription
        if subscription is None or message["id"] in self.backlog_ids or not subscription.wants_event(message):
            return
        await self.send_json(events.event_payload(message))

    async def mesh_telemetry(self, message: dict[str, Any]) -> None:
        if self.subscription is not None:
            for text in self.subscription.telemetry_texts(message):
                await self.send(text_data=text)

    async def _authentication_refusal(self) -> str:
        """Why this connection may not subscribe; empty when it may (Bearer token first, then session)."""
        header = next((value for name, value in self.scope.get("headers", []) if name == b"authorization"), b"")
        if header:
            try:
                found = await database_sync_to_async(authenticate_bearer)(header.decode("latin-1"))
            except TokenRejected as error:
                return str(error)
            if found is not None:
                return ""
        user = self.scope.get("user")
        return "" if user is not None and user.is_authenticated else SIGN_IN

    async def _refuse(self, code: int, error: dict[str, Any]) -> None:
        # Accepted first: a handshake refused outright reaches the client as a bare 403, without the reason.
        await self.accept()
        await self.send_json({"kind": "error", **error})
        await self.close(code=code)

    async def _renew_groups(self) -> None:
        while True:
            await asyncio.sleep(GROUP_RENEW_SECONDS)
            for group in self.groups:
                await self.channel_layer.group_add(group, self.channel_name)
