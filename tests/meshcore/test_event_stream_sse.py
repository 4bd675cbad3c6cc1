"""The server-sent event stream `GET /api/v1/events/stream/`, driven through the ASGI
application by hand (test clients buffer a streaming body): auth, filters, resuming with
`Last-Event-ID`, heartbeats, telemetry on request; on the in-memory layer and on Redis."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async

from infermesh_site.asgi import application
from meshcore import events
from meshcore.api import event_stream
from meshcore.events import EVENTS_GROUP, TELEMETRY_GROUP, event_message
from tests.meshcore.event_stream_support import channel_layer, record, record_unhealthy, unhealthy_message

pytestmark = pytest.mark.django_db(transaction=True)
PATH = "/api/v1/events/stream/"


class SseClient:
    """One GET request to the ASGI application, its response read frame by frame as it streams."""

    def __init__(self, *headers: tuple[bytes, bytes], query: str = "", method: str = "GET") -> None:
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": PATH,
            "raw_path": PATH.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.gone = asyncio.Event()
        self.asked = False
        self.buffer = ""
        self.ended = False

    async def __aenter__(self) -> SseClient:
        self.task = asyncio.create_task(application(self.scope, self._receive, self.sent.put))
        start = await asyncio.wait_for(self.sent.get(), 5)
        self.status = start["status"]
        self.headers = {name.decode().lower(): value.decode() for name, value in start["headers"]}
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.gone.set()
        await asyncio.wait_for(self.task, 5)

    async def _receive(self) -> dict[str, Any]:
        if not self.asked:
            self.asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def _more(self) -> None:
        message = await asyncio.wait_for(self.sent.get(), 5)
        self.buffer += message.get("body", b"").decode()
        self.ended = not message.get("more_body", False)

    async def body(self) -> str:
        while not self.ended:
            await self._more()
        return self.buffer

    async def frame(self) -> dict[str, Any]:
        """The next frame: its fields (`data` parsed as JSON), or {"comment": ...}."""
        while "\n\n" not in self.buffer:
            assert not self.ended, "the stream ended"
            await self._more()
        raw, self.buffer = self.buffer.split("\n\n", 1)
        fields: dict[str, Any] = {}
        for line in raw.split("\n"):
            name, _, value = line.partition(":")
            fields[name or "comment"] = value.removeprefix(" ")
        if "data" in fields:
            fields["data"] = json.loads(fields["data"])
        return fields

    async def event(self) -> dict[str, Any]:
        """The next frame that is not a comment or a retry hint."""
        while True:
            frame = await self.frame()
            if "comment" not in frame and "retry" not in frame:
                return frame


async def test_it_challenges_a_stranger_with_401(use_layer):
    async with use_layer(), SseClient() as client:
        body = json.loads(await client.body())

    assert client.status == 401
    assert client.headers["www-authenticate"] == 'Bearer realm="api"'
    assert "credentials" in body["detail"]


async def test_it_refuses_a_node_token_with_401(use_layer, registered_node):
    async with use_layer(), SseClient((b"authorization", f"Bearer {registered_node.issued_token}".encode())) as client:
        body = json.loads(await client.body())

    assert client.status == 401
    assert "node token" in body["detail"]


async def test_it_streams_events_to_a_signed_in_viewer(use_layer, viewer_cookie):
    async with use_layer(), SseClient(viewer_cookie) as client:
        assert await client.frame() == {"retry": "3000"}
        event = await record_unhealthy()
        frame = await client.event()

    assert client.status == 200
    assert client.headers["content-type"].startswith("text/event-stream")
    assert client.headers["cache-control"] == "no-cache"
    assert client.headers["x-accel-buffering"] == "no"
    assert frame == {"id": str(event.pk), "event": "NODE_UNHEALTHY", "data": unhealthy_message(event)}


async def test_it_streams_events_to_an_api_token_holder(use_layer, viewer_token):
    async with use_layer(), SseClient(viewer_token) as client:
        await client.frame()
        await record("MODEL_LOADED", model="resnet50")
        frame = await client.event()

    assert (client.status, frame["event"]) == (200, "MODEL_LOADED")


async def test_it_sends_only_the_types_and_nodes_asked_for(use_layer, viewer_cookie):
    async with use_layer(), SseClient(viewer_cookie, query="types=NODE_UNHEALTHY,NODE_HEALTHY&node=gpu-a") as client:
        await client.frame()
        await record("NODE_UNHEALTHY", "gpu-b")
        await record("MODEL_LOADED", "gpu-a")
        wanted = await record("NODE_HEALTHY", "gpu-a")
        frame = await client.event()

    assert (frame["id"], frame["event"]) == (str(wanted.pk), "NODE_HEALTHY")


@pytest.mark.parametrize(
    ("query", "headers", "field"),
    [
        ("types=NODE_EXPLODED", [], "types"),
        ("after=abc", [], "after"),
        ("after=99999999999999999999", [], "after"),
        ("", [(b"last-event-id", b"x1")], "Last-Event-ID"),
        ("node=a%20b", [], "node"),
        ("telemetry=maybe", [], "telemetry"),
        ("nodes=gpu-a", [], "nodes"),
    ],
)
async def test_it_answers_bad_parameters_with_400_naming_each(use_layer, viewer_cookie, query, headers, field):
    async with use_layer(), SseClient(viewer_cookie, *headers, query=query) as client:
        body = json.loads(await client.body())

    assert client.status == 400
    assert list(body) == [field]
    assert isinstance(body[field], list)


async def test_it_resumes_from_last_event_id_with_the_backlog_then_live_events_and_no_duplicate(
    use_layer, viewer_cookie
):
    async with use_layer() as layer:
        first = await record("NODE_UNHEALTHY", "gpu-a")
        second = await record("NODE_HEALTHY", "gpu-a")
        third = await record("MODEL_LOADED", "gpu-a")
        # EventSource reconnects to the same URL: the header it adds wins over the query's after.
        headers = [viewer_cookie, (b"last-event-id", str(first.pk).encode())]
        async with SseClient(*headers, query="after=0&node=gpu-a") as client:
            backlog = [(await client.event())["id"] for _ in range(2)]
            await layer.group_send(EVENTS_GROUP, await database_sync_to_async(event_message)(third))
            live = await record("MODEL_FAILED", "gpu-a")
            next_frame = await client.event()

    assert backlog == [str(second.pk), str(third.pk)]
    assert next_frame["id"] == str(live.pk)


async def test_it_ends_at_the_backlog_limit_so_the_client_resumes_from_the_last_id(
    use_layer, viewer_cookie, monkeypatch
):
    monkeypatch.setattr(events, "BACKLOG_LIMIT", 2)
    async with use_layer():
        stored = [await record("NODE_HEALTHY", "gpu-a") for _ in range(3)]
        async with SseClient(viewer_cookie, query="types=NODE_HEALTHY&after=0") as client:
            sent = [(await client.event())["id"] for _ in range(2)]
            notice = await client.event()
            rest = await client.body()

    assert sent == [str(stored[0].pk), str(stored[1].pk)]
    assert notice["event"] == "backlog_truncated"
    assert "id" not in notice  # the client resumes from the last event's id
    assert notice["data"]["after"] == stored[1].pk
    assert rest == ""
    assert client.ended


async def test_it_sends_a_heartbeat_comment_while_idle(use_layer, viewer_cookie, monkeypatch):
    monkeypatch.setattr(event_stream, "HEARTBEAT_SECONDS", 0.05)
    async with use_layer(), SseClient(viewer_cookie) as client:
        await client.frame()
        heartbeat = await client.frame()
        event = await record("NODE_HEALTHY")
        frame = await client.event()

    assert heartbeat == {"comment": "heartbeat"}
    assert frame["id"] == str(event.pk)


async def test_it_streams_telemetry_only_when_asked(use_layer, viewer_cookie):
    update = {"node": "gpu-a", "time": 1700000000.5, "seq": 4, "gpus": [{"uuid": "GPU-1"}], "instances": []}
    async with use_layer() as layer:
        async with SseClient(viewer_cookie, query="telemetry=1") as watching, SseClient(viewer_cookie) as other:
            await watching.frame()
            await other.frame()
            await layer.group_send(TELEMETRY_GROUP, {"type": "mesh.telemetry", "updates": [update]})
            await record("NODE_HEALTHY", "gpu-a")  # a marker: everything sent before it has arrived
            watched = [await watching.event() for _ in range(2)]
            unwatched = await other.event()

    assert watched[0] == {"event": "telemetry", "data": {"kind": "telemetry", **update}}
    assert watched[1]["event"] == "NODE_HEALTHY"
    assert unwatched["event"] == "NODE_HEALTHY"


async def test_it_leaves_the_groups_when_the_client_goes_away(settings, viewer_cookie):
    async with channel_layer("memory", settings) as layer:
        async with SseClient(viewer_cookie, query="telemetry=1") as client:
            await client.frame()
            assert len(layer.groups[EVENTS_GROUP]) == len(layer.groups[TELEMETRY_GROUP]) == 1

        assert not layer.groups.get(EVENTS_GROUP)
        assert not layer.groups.get(TELEMETRY_GROUP)


async def test_it_answers_other_methods_with_405(use_layer, viewer_cookie):
    async with use_layer(), SseClient(viewer_cookie, method="POST") as client:
        body = json.loads(await client.body())

    assert client.status == 405
    assert client.headers["allow"] == "GET"
    assert "POST" in body["detail"]


def test_it_is_described_in_the_openapi_schema(stranger_client):
    schema = stranger_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    operation = schema["paths"][PATH]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {parameter["name"] for parameter in operation["parameters"]} == {
        "types",
        "node",
        "after",
        "telemetry",
        "Last-Event-ID",
    }
