"""The dashboard's one WebSocket, `/ws/dashboard/`: a snapshot, then coalesced updates.

A signed-in browser connects with the page it shows (`?page=fleet`, `?page=node&node=gpu-a`,
`?page=models`, `?page=events&after=<id>&types=...&node=...`). It first receives a snapshot of
that page (`{"kind": "snapshot", ...}`, the same data the server rendered), then at most
FRAMES_PER_S frames a second (`{"kind": "update", ...}`) carrying only the values that changed
since the last frame, and events as they commit. A page reconnects with backoff and gets a new
snapshot (the events page resumes after the last event it has). The wire format is described
in docs/dashboard.md.

Refusals are sent after accepting, so the page can act on them: `{"kind": "error", ...}`, then
close code 4401 (not signed in: the page goes to the login page), 4400 (bad parameters) or
4404 (no such node).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from dashboard import snapshots
from dashboard.readings import changed, decode_telemetry
from meshcore import events
from meshcore.consumers import CLOSE_BAD_REQUEST, CLOSE_RESUME, CLOSE_UNAUTHORIZED, GROUP_RENEW_SECONDS
from meshcore.jsontext import compact

CLOSE_NOT_FOUND = 4404
FRAMES_PER_S = 4
ROUTER_POLL_S = 2.0
ABSENT_RETRY_S = 30.0
HISTORY_NODES_PER_FRAME = 16
PAGES = ("fleet", "node", "models", "events")
SIGN_IN = "Sign in to see the dashboard."


class InvalidView(Exception):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


class View:
    """Which page a connection shows, and so what it hears and receives."""

    def __init__(self, params: dict[str, list[str]]) -> None:
        errors: dict[str, list[str]] = {}
        page = (params.pop("page", ["fleet"]) or ["fleet"])[-1]
        if page not in PAGES:
            errors["page"] = [f"Unknown page {page!r}; use one of: {', '.join(PAGES)}."]
        self.page = page
        self.node: str | None = None
        self.subscription = events.Subscription()
        if page == "node":
            nodes = params.pop("node", [])
            if len(nodes) != 1 or not nodes[0]:
                errors["node"] = ["Name the node: ?page=node&node=<name>."]
            else:
                self.node = nodes[0]
        if page == "events":
            try:
                self.subscription = events.parse_subscription(params)
            except events.InvalidSubscription as error:
                errors.update(error.errors)
        elif params:
            errors.update({name: [f"Not a parameter of the {page} page."] for name in params})
        if errors:
            raise InvalidView(errors)

    def groups(self) -> list[str]:
        return [events.EVENTS_GROUP] if self.page == "events" else [events.EVENTS_GROUP, events.TELEMETRY_GROUP]

    def wants_event(self, message: dict[str, Any]) -> bool:
        if self.page == "events":
            return self.subscription.wants_event(message)
        return self.page == "node" and message["node"] == self.node

    def snapshot(self) -> dict[str, Any] | None:
        """The page's snapshot (None: the node does not exist); the events page's is its backlog."""
        if self.page == "fleet":
            return snapshots.fleet_snapshot()
        if self.page == "node":
            return snapshots.node_snapshot(self.node or "")
        if self.page == "models":
            return snapshots.models_snapshot()
        if self.subscription.after is None:
            recent = snapshots.recent_events(subscription=self.subscription)
            return {"page": "events", "time": time.time(), "events": recent, "truncated": False}
        backlog, truncated = self.subscription.backlog()
        return {
            "page": "events",
            "time": time.time(),
            "events": [events.event_payload(message) for message in reversed(backlog)],
            "truncated": truncated,
        }


class DashboardConsumer(AsyncWebsocketConsumer):
    view: View | None = None

    async def connect(self) -> None:
        self.ready = False
        self.tasks: list[asyncio.Task] = []
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self._refuse(CLOSE_UNAUTHORIZED, {"status": 401, "detail": SIGN_IN})
            return
        params = parse_qs(self.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        try:
            self.view = View(params)
        except InvalidView as error:
            await self._refuse(CLOSE_BAD_REQUEST, {"status": 400, "errors": error.errors})
            return
        self._reset_pending()
        self.sent_gpus: dict[str, dict[str, Any]] = {}
        self.sent_nodes: dict[str, dict[str, Any]] = {}
        self.sent_instances: dict[str, dict[str, Any]] = {}
        self.sent_router: dict[str, dict[str, Any]] = {}
        self.last_event_id = 0
        self.absent: dict[str, float] = {}  # nodes a refresh did not find, and when: not looked up again for a while
        self.wake = asyncio.Event()

        # Join before reading the snapshot: whatever changes after it is heard (and sent if it differs).
        self.groups = self.view.groups()
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        snapshot = await database_sync_to_async(self.view.snapshot)()
        if snapshot is None:
            detail = f"There is no node {self.view.node!r}."
            await self._refuse(CLOSE_NOT_FOUND, {"status": 404, "detail": detail}, accepted=True)
            return
        await self._send_snapshot(snapshot)
        if self.view.page == "events" and snapshot["truncated"]:
            after = snapshot["events"][0]["id"]
            detail = f"More stored events follow; reconnect with after={after} for the rest."
            await self._send({"kind": "backlog_truncated", "after": after, "detail": detail})
            await self.close(code=CLOSE_RESUME)
            return
        self.ready = True
        if self.view.page == "fleet":
            self.tasks.append(asyncio.create_task(self._send_histories(snapshot["nodes"], snapshot["time"])))
        self.tasks.append(asyncio.create_task(self._flush_forever()))
        self.tasks.append(asyncio.create_task(self._renew_groups()))
        if self.view.page == "models":
            self.tasks.append(asyncio.create_task(self._poll_router()))

    async def disconnect(self, code: int) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The page sends nothing the server acts on; whatever arrives is ignored."""

    # ---- what the channel layer brings ----

    async def mesh_telemetry(self, message: dict[str, Any]) -> None:
        if not self.ready or self.view is None:
            return
        page = self.view.page
        for update in message.get("updates", [message]):
            if page == "node" and update.get("node") != self.view.node:
                continue
            decoded = decode_telemetry(events.telemetry_text(update))
            node = decoded.node
            if page in ("fleet", "node"):
                if node not in self.sent_nodes:
                    if time.monotonic() - self.absent.get(node, -ABSENT_RETRY_S) >= ABSENT_RETRY_S:
                        self.refresh.add(node)
                    continue
                gpus = decoded.gpu_details() if page == "node" else decoded.gpus
                for uuid, view in gpus.items():
                    if uuid not in self.sent_gpus:
                        self.refresh.add(node)
                        continue
                    self.pending_gpus[uuid].update(view)
                self.pending_nodes[node]["seen"] = decoded.time
            if page in ("node", "models"):
                for key, view in decoded.instances.items():
                    self.pending_instances[key].update(view)
        self.wake.set()

    async def mesh_event(self, message: dict[str, Any]) -> None:
        if not self.ready or self.view is None:
            return
        page, node, kind = self.view.page, message["node"], message["event_type"]
        if message["id"] <= self.last_event_id:
            return  # already in the snapshot
        if self.view.wants_event(message):
            self.pending_events.append(events.event_payload(message))
        if page in ("fleet", "node") and node is not None and (page == "fleet" or node == self.view.node):
            if kind in snapshots.HEALTH_EVENTS:
                self.pending_nodes[node]["health"] = snapshots.HEALTH_EVENTS[kind]
            elif kind == events.EventType.NODE_LEFT:
                self.removed.add(node)
            elif kind in snapshots.NODE_STRUCTURE_EVENTS:
                self.refresh.add(node)
        if page == "models" and (kind in snapshots.MODEL_EVENTS or kind.startswith("RUNTIME_")):
            self.refresh.add("*")
        self.wake.set()

    # ---- frames ----

    def _reset_pending(self) -> None:
        self.pending_gpus: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        self.pending_nodes: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        self.pending_instances: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        self.pending_router: dict[str, dict[str, Any]] = {}
        self.pending_events: list[dict[str, Any]] = []
        self.refresh: set[str] = set()
        self.removed: set[str] = set()

    async def _send(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=compact(payload))

    async def _send_snapshot(self, snapshot: dict[str, Any]) -> None:
        """Send a whole page, and remember what it showed: later frames carry only differences."""
        page = snapshot["page"]
        if page in ("fleet", "node"):
            nodes = snapshot["nodes"] if page == "fleet" else [snapshot["node"]]
            self._remember_nodes(nodes)
        if page in ("node", "models"):
            runtimes = snapshot.get("runtimes", [])
            targets = [model for runtime in runtimes for model in runtime["models"]]
            targets += [target for model in snapshot.get("models", []) for target in model["targets"]]
            self.sent_instances = {target["key"]: _without(target, "history") for target in targets}
        if page == "models":
            self.sent_router = dict(snapshot["router"])
        listed = snapshot.get("events") or []
        self.last_event_id = max([self.last_event_id, *(event["id"] for event in listed)])
        await self._send({"kind": "snapshot", **snapshot})

    def _remember_nodes(self, nodes: list[dict[str, Any]]) -> None:
        for node in nodes:
            self.sent_nodes[node["name"]] = {"seen": node["seen"], "health": node["health"]}
            for gpu in node["gpus"]:
                self.sent_gpus[gpu["uuid"]] = dict(gpu)

    async def _send_histories(self, nodes: list[dict[str, Any]], now: float) -> None:
        """The fleet's sparkline history after its snapshot, a few nodes a frame: the page is live at
        once, and no frame makes the browser load a thousand histories in one go."""
        read = sync_to_async(snapshots.spark_histories, thread_sensitive=False)
        for start in range(0, len(nodes), HISTORY_NODES_PER_FRAME):
            histories = await read(nodes[start : start + HISTORY_NODES_PER_FRAME], now)
            await self._send({"kind": "history", "time": time.time(), "gpus": histories})

    async def _flush_forever(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            await self.flush()
            await asyncio.sleep(1 / FRAMES_PER_S)  # what arrives meanwhile goes into the next frame

    async def flush(self) -> None:
        """Send one frame with what changed since the last (nothing when nothing did)."""
        assert self.view is not None
        gpus, nodes, instances = self.pending_gpus, self.pending_nodes, self.pending_instances
        router, new_events = self.pending_router, self.pending_events
        refresh, removed = self.refresh, self.removed
        self._reset_pending()
        if refresh and self.view.page in ("node", "models"):
            # A node's runtimes or the models' placement changed: the page is resent whole (rare).
            snapshot = await database_sync_to_async(self.view.snapshot)()
            if snapshot is not None:
                await self._send_snapshot(snapshot)
            refresh = set()
        frame: dict[str, Any] = {"kind": "update", "time": time.time()}
        if refresh:
            fresh, now = await database_sync_to_async(snapshots.fleet_nodes)(refresh - removed)
            found = {node["name"] for node in fresh}
            self.absent.update((name, time.monotonic()) for name in refresh - found)
            history = await sync_to_async(snapshots.spark_histories, thread_sensitive=False)(fresh, now)
            self._remember_nodes(fresh)
            if fresh:
                frame["refresh"] = fresh
                frame["history"] = history
        if removed:
            frame["removed"] = sorted(removed)
            for name in removed:
                self.sent_nodes.pop(name, None)
        self._add_changes(frame, "gpus", gpus, self.sent_gpus)
        self._add_changes(frame, "nodes", nodes, self.sent_nodes)
        self._add_changes(frame, "instances", instances, self.sent_instances)
        self._add_changes(frame, "router", router, self.sent_router)
        if new_events:
            frame["events"] = new_events
            self.last_event_id = max(self.last_event_id, *(event["id"] for event in new_events))
        if len(frame) > 2:
            await self._send(frame)

    @staticmethod
    def _add_changes(
        frame: dict[str, Any], name: str, pending: dict[str, dict[str, Any]], sent: dict[str, dict[str, Any]]
    ) -> None:
        changes = {}
        for key, values in pending.items():
            previous = sent.get(key)
            difference = changed(previous, values)
            if difference:
                changes[key] = difference
                sent[key] = {**(previous or {}), **difference}
        if changes:
            frame[name] = changes

    async def _poll_router(self) -> None:
        """The models page's router figures: routers publish them to the store each second, not as messages."""
        while True:
            await asyncio.sleep(ROUTER_POLL_S)
            figures = await sync_to_async(snapshots.router_view, thread_sensitive=False)()
            for key in set(self.sent_router) - set(figures):
                figures[key] = {"rate": 0.0, "errors": 0, "p50": None, "p99": None, "share": None}
            self.pending_router.update(figures)
            self.wake.set()

    async def _renew_groups(self) -> None:
        while True:
            await asyncio.sleep(GROUP_RENEW_SECONDS)
            for group in self.groups:
                await self.channel_layer.group_add(group, self.channel_name)

    async def _refuse(self, code: int, error: dict[str, Any], *, accepted: bool = False) -> None:
        # Accepted first: a handshake refused outright reaches the page as a bare failure, without the reason.
        if not accepted:
            await self.accept()
        await self._send({"kind": "error", **error})
        await self.close(code=code)


def _without(values: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in values.items() if name != key}
