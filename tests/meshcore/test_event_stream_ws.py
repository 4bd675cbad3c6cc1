"""The WebSocket event stream `/ws/events/`: who may subscribe, what the filters let through,
resuming with no gap and no duplicate, and telemetry on request; on the in-memory channel
layer and on real Redis."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from infermesh_site.asgi import application
from meshcore import events, registry
from meshcore.events import EVENTS_GROUP, TELEMETRY_GROUP, event_message, record_event
from meshcore.models import Event
from tests.meshcore.event_stream_support import ORIGIN, record, record_unhealthy, unhealthy_message

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def revoked_token(operator, viewer):
    token, value = registry.issue_api_token(actor=operator, user=viewer, name="old")
    registry.revoke_api_token(actor=operator, token_id=token.pk)
    return value


async def subscribe(*headers: tuple[bytes, bytes], query: str = "") -> WebsocketCommunicator:
    path = f"/ws/events/?{query}" if query else "/ws/events/"
    communicator = WebsocketCommunicator(application, path, headers=[ORIGIN, *headers])
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def refusal(communicator: WebsocketCommunicator) -> tuple[dict[str, Any], int]:
    message = await communicator.receive_json_from(timeout=5)
    closed = await communicator.receive_output(timeout=5)
    assert closed["type"] == "websocket.close"
    await communicator.disconnect()
    return message, closed["code"]


async def received(communicator: WebsocketCommunicator, count: int) -> list[tuple[str, str | None]]:
    messages = [await communicator.receive_json_from(timeout=5) for _ in range(count)]
    return [(message["type"], message["node"]) for message in messages]


async def test_it_refuses_an_anonymous_subscriber_with_4401(use_layer):
    async with use_layer():
        message, code = await refusal(await subscribe())

    assert code == 4401
    assert message["kind"] == "error"
    assert message["status"] == 401
    assert "Bearer" in message["detail"]


async def test_it_streams_events_to_a_signed_in_viewer(use_layer, viewer_cookie):
    async with use_layer():
        communicator = await subscribe(viewer_cookie)

        event = await record_unhealthy()

        message = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
    assert message == unhealthy_message(event)


async def test_it_streams_events_to_an_api_token_holder(use_layer, viewer_token):
    async with use_layer():
        communicator = await subscribe(viewer_token)

        await record("MODEL_LOADED", model="resnet50")

        assert (await communicator.receive_json_from(timeout=5))["type"] == "MODEL_LOADED"
        await communicator.disconnect()


async def test_it_refuses_a_node_token_with_4401(use_layer, registered_node):
    node_token = (b"authorization", f"Bearer {registered_node.issued_token}".encode())

    async with use_layer():
        message, code = await refusal(await subscribe(node_token))

    assert code == 4401
    assert "node token" in message["detail"]


async def test_it_refuses_a_revoked_api_token_even_with_a_session(use_layer, viewer_cookie, revoked_token):
    async with use_layer():
        message, code = await refusal(
            await subscribe(viewer_cookie, (b"authorization", f"Bearer {revoked_token}".encode()))
        )

    assert code == 4401
    assert "revoked" in message["detail"]


async def test_it_sends_only_the_types_and_nodes_asked_for(use_layer, viewer_cookie):
    async with use_layer():
        communicator = await subscribe(viewer_cookie, query="types=NODE_UNHEALTHY,NODE_HEALTHY&node=gpu-a&node=gpu-c")

        await record("NODE_UNHEALTHY", "gpu-a")
        await record("NODE_UNHEALTHY", "gpu-b")  # another node
        await record("MODEL_LOADED", "gpu-a")  # another type
        await record("NODE_HEALTHY", "gpu-c")

        assert await received(communicator, 2) == [("NODE_UNHEALTHY", "gpu-a"), ("NODE_HEALTHY", "gpu-c")]
        assert await communicator.receive_nothing(timeout=0.2)
        await communicator.disconnect()


async def test_it_refuses_an_unknown_type_with_4400_and_says_which(use_layer, viewer_cookie):
    async with use_layer():
        message, code = await refusal(await subscribe(viewer_cookie, query="types=NODE_HEALTHY,NODE_EXPLODED"))

    assert code == 4400
    assert message["status"] == 400
    assert "NODE_EXPLODED" in message["errors"]["types"][0]
    assert "NODE_UNHEALTHY" in message["errors"]["types"][0]  # lists what is allowed


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("after=abc", "after"),
        ("after=-1", "after"),
        ("after=99999999999999999999", "after"),
        (f"after={'9' * 5000}", "after"),
        ("after=1&after=2", "after"),
        ("node=gpu%00a", "node"),
        ("node=" + "x" * 64, "node"),
        ("telemetry=maybe", "telemetry"),
        ("type=NODE_HEALTHY", "type"),
    ],
)
async def test_it_refuses_bad_parameters_with_4400(use_layer, viewer_cookie, query, field):
    async with use_layer():
        message, code = await refusal(await subscribe(viewer_cookie, query=query))

    assert code == 4400
    assert list(message["errors"]) == [field]


async def test_it_resumes_after_an_id_with_the_backlog_then_live_events_and_no_duplicate(use_layer, viewer_cookie):
    async with use_layer() as layer:
        first = await record("NODE_UNHEALTHY", "gpu-a")
        second = await record("NODE_HEALTHY", "gpu-a")
        await record("NODE_UNHEALTHY", "gpu-b")  # filtered out of the backlog too
        third = await record("MODEL_LOADED", "gpu-a")

        communicator = await subscribe(viewer_cookie, query=f"after={first.pk}&node=gpu-a")
        backlog = [(await communicator.receive_json_from(timeout=5))["id"] for _ in range(2)]
        # A live copy of an event already sent from the backlog (it committed while the backlog was read).
        await layer.group_send(EVENTS_GROUP, await database_sync_to_async(event_message)(third))
        live = await record("MODEL_FAILED", "gpu-a")

        assert backlog == [second.pk, third.pk]
        assert (await communicator.receive_json_from(timeout=5))["id"] == live.pk
        assert await communicator.receive_nothing(timeout=0.2)
        await communicator.disconnect()


async def test_it_stops_at_the_backlog_limit_and_says_where_to_resume(use_layer, viewer_cookie, monkeypatch):
    monkeypatch.setattr(events, "BACKLOG_LIMIT", 2)
    async with use_layer():
        stored = [await record("NODE_HEALTHY", "gpu-a") for _ in range(3)]

        communicator = await subscribe(viewer_cookie, query="types=NODE_HEALTHY&after=0")
        sent = [(await communicator.receive_json_from(timeout=5))["id"] for _ in range(2)]
        notice = await communicator.receive_json_from(timeout=5)
        closed = await communicator.receive_output(timeout=5)
        await communicator.disconnect()
        resumed = await subscribe(viewer_cookie, query=f"after={notice['after']}")
        rest = await resumed.receive_json_from(timeout=5)
        await resumed.disconnect()

    assert sent == [stored[0].pk, stored[1].pk]
    assert notice["kind"] == "backlog_truncated"
    assert notice["after"] == stored[1].pk
    assert closed == {"type": "websocket.close", "code": 4000}
    assert rest["id"] == stored[2].pk


async def test_it_forwards_telemetry_only_to_subscribers_who_asked(use_layer, viewer_cookie):
    gpus = [{"uuid": "GPU-1", "util": 40}]
    async with use_layer() as layer:
        watching = await subscribe(viewer_cookie, query="telemetry=1&node=gpu-a")
        not_watching = await subscribe(viewer_cookie)

        await layer.group_send(
            TELEMETRY_GROUP,
            {
                "type": "mesh.telemetry",
                "updates": [
                    {"node": "gpu-a", "time": 1700000000.5, "seq": 7, "gpus": gpus, "instances": []},
                    {"node": "gpu-b", "time": 1700000000.5, "seq": 3, "gpus": [], "instances": []},
                ],
            },
        )
        await record("NODE_HEALTHY", "gpu-a")  # a marker: everything sent before it has arrived

        watched = [await watching.receive_json_from(timeout=5) for _ in range(2)]
        unwatched = await not_watching.receive_json_from(timeout=5)
        await watching.disconnect()
        await not_watching.disconnect()

    expected = {"kind": "telemetry", "node": "gpu-a", "time": 1700000000.5, "seq": 7, "gpus": gpus, "instances": []}
    assert watched[0] == expected
    assert watched[1]["kind"] == "event"
    assert unwatched["kind"] == "event"


async def test_it_streams_changes_committed_through_the_registry(use_layer, operator, viewer_cookie):
    async with use_layer():
        communicator = await subscribe(viewer_cookie, query="types=NODE_JOINED")

        await database_sync_to_async(registry.create_node)(actor=operator, name="gpu-z", address="10.0.0.99")

        message = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
    assert (message["type"], message["node"], message["actor"]) == ("NODE_JOINED", "gpu-z", "olivia")


async def test_it_ignores_what_a_client_sends(use_layer, viewer_cookie):
    async with use_layer():
        communicator = await subscribe(viewer_cookie)

        await communicator.send_to(text_data="not json {")
        await communicator.send_to(bytes_data=b"\x00\xff")
        await record("NODE_HEALTHY")

        assert (await communicator.receive_json_from(timeout=5))["type"] == "NODE_HEALTHY"
        await communicator.disconnect()


def test_it_links_an_observed_event_to_its_node_when_it_exists(registered_node):
    known = record_event("NODE_HEALTHY", node_name="gpu-a", data={"recovered": True})
    unknown = record_event("MODEL_FAILED", node_name="gpu-gone")

    assert (known.node, known.node_name, known.actor) == (registered_node, "gpu-a", "system")
    assert known.data == {"recovered": True}
    assert (unknown.node, unknown.node_name, unknown.data) == (None, "gpu-gone", {})


def test_it_refuses_to_record_desired_state_events_outside_the_registry(db):
    with pytest.raises(ValueError, match="registry"):
        record_event("NODE_JOINED", node_name="gpu-a")

    assert not Event.objects.exists()
