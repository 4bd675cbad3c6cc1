"""The dashboard's WebSocket `/ws/dashboard/`: who may connect, the snapshot first, then frames
that carry only what changed, a few a second however fast telemetry arrives, and events."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from dashboard.consumers import FRAMES_PER_S
from meshcore import registry
from meshcore.events import record_event
from tests.dashboard.support import frames_within, gpu_sample, ingest, open_socket, publish_telemetry, report

pytestmark = pytest.mark.django_db(transaction=True)


async def refusal(communicator) -> tuple[dict, int]:
    message = await communicator.receive_json_from(timeout=5)
    closed = await communicator.receive_output(timeout=5)
    assert closed["type"] == "websocket.close"
    await communicator.disconnect()
    return message, closed["code"]


async def test_it_refuses_an_anonymous_socket_with_4401(memory_layer, live):
    async with memory_layer():
        message, code = await refusal(await open_socket("page=fleet"))

    assert code == 4401
    assert message == {"kind": "error", "status": 401, "detail": "Sign in to see the dashboard."}


async def test_it_refuses_an_unknown_page_with_4400(memory_layer, live, viewer_cookie):
    async with memory_layer():
        message, code = await refusal(await open_socket("page=everything", viewer_cookie))

    assert code == 4400
    assert "Unknown page 'everything'" in message["errors"]["page"][0]


async def test_it_refuses_a_node_that_does_not_exist_with_4404(memory_layer, live, viewer_cookie):
    async with memory_layer():
        message, code = await refusal(await open_socket("page=node&node=nowhere", viewer_cookie))

    assert code == 4404
    assert message["detail"] == "There is no node 'nowhere'."


async def test_it_sends_the_fleet_then_its_sparkline_history(memory_layer, live, viewer_cookie, registered_node):
    await database_sync_to_async(ingest)(live, report("gpu-a", gpus=[gpu_sample("GPU-a0", util=37)]))
    async with memory_layer():
        socket = await open_socket("page=fleet", viewer_cookie)
        snapshot = await socket.receive_json_from(timeout=5)
        history = await socket.receive_json_from(timeout=5)
        await socket.disconnect()

    assert snapshot["kind"] == "snapshot"
    (node,) = snapshot["nodes"]
    assert node["name"] == "gpu-a" and node["zone"] == "eu-1" and node["health"] == "healthy"
    (gpu,) = node["gpus"]
    assert gpu["uuid"] == "GPU-a0"
    assert (gpu["util"], gpu["mem"], gpu["mem_total"], gpu["temp"], gpu["power"], gpu["sm"]) == (
        37,
        20480,
        81920,
        41,
        312,
        1980,
    )
    assert history["kind"] == "history"
    assert history["gpus"]["GPU-a0"]["util"] == [37]


async def test_it_sends_only_the_values_that_changed(memory_layer, live, viewer_cookie, registered_node):
    await database_sync_to_async(ingest)(live, report("gpu-a", gpus=[gpu_sample("GPU-a0", util=37)]))
    async with memory_layer() as layer:
        socket = await open_socket("page=fleet", viewer_cookie)
        await socket.receive_json_from(timeout=5)
        await socket.receive_json_from(timeout=5)  # history

        await publish_telemetry(layer, "gpu-a", [gpu_sample("GPU-a0", util=64, info=False)])
        frame = await socket.receive_json_from(timeout=5)
        await socket.disconnect()

    assert frame["kind"] == "update"
    assert frame["gpus"] == {"GPU-a0": {"util": 64}}
    assert set(frame["nodes"]["gpu-a"]) == {"seen"}


async def test_it_coalesces_fast_telemetry_into_a_few_frames_a_second(
    memory_layer, live, viewer_cookie, registered_node
):
    await database_sync_to_async(ingest)(live, report("gpu-a", gpus=[gpu_sample("GPU-a0", util=1)]))
    async with memory_layer() as layer:
        socket = await open_socket("page=fleet", viewer_cookie)
        await socket.receive_json_from(timeout=5)
        await socket.receive_json_from(timeout=5)  # history

        for util in range(2, 52):  # 50 reports as fast as they can go
            await publish_telemetry(layer, "gpu-a", [gpu_sample("GPU-a0", util=util, info=False)])
        frames = await frames_within(socket, 1.5)
        await socket.disconnect()

    assert 1 <= len(frames) <= 1.5 * FRAMES_PER_S + 1
    assert frames[-1]["gpus"]["GPU-a0"]["util"] == 51


async def test_it_sends_a_node_whole_when_it_first_reports(memory_layer, live, viewer_cookie, operator):
    async with memory_layer() as layer:
        socket = await open_socket("page=fleet", viewer_cookie)
        assert (await socket.receive_json_from(timeout=5))["nodes"] == []

        await database_sync_to_async(registry.create_node)(actor=operator, name="gpu-n", address="10.0.0.9")
        await database_sync_to_async(ingest)(live, report("gpu-n", gpus=[gpu_sample("GPU-n0")]))
        await publish_telemetry(layer, "gpu-n", [gpu_sample("GPU-n0")])
        frames = await frames_within(socket, 1.5)
        await socket.disconnect()

    refreshed = [node for frame in frames for node in frame.get("refresh", [])]
    assert refreshed and refreshed[-1]["name"] == "gpu-n"
    assert [gpu["uuid"] for gpu in refreshed[-1]["gpus"]] == ["GPU-n0"]
    assert any("GPU-n0" in frame.get("history", {}) for frame in frames)


async def test_it_turns_a_node_unhealthy_and_back_on_its_events(memory_layer, live, viewer_cookie, registered_node):
    await database_sync_to_async(ingest)(live, report("gpu-a"))
    async with memory_layer():
        socket = await open_socket("page=fleet", viewer_cookie)
        await socket.receive_json_from(timeout=5)
        await socket.receive_json_from(timeout=5)  # history

        await database_sync_to_async(record_event)("NODE_UNHEALTHY", node_name="gpu-a")
        unhealthy = await socket.receive_json_from(timeout=5)
        await database_sync_to_async(record_event)("NODE_HEALTHY", node_name="gpu-a")
        healthy = await socket.receive_json_from(timeout=5)
        await socket.disconnect()

    assert unhealthy["nodes"] == {"gpu-a": {"health": "unhealthy"}}
    assert healthy["nodes"] == {"gpu-a": {"health": "healthy"}}


async def test_it_sends_a_node_page_its_gpu_details_and_events(memory_layer, live, viewer_cookie, registered_node):
    await database_sync_to_async(ingest)(live, report("gpu-a", gpus=[gpu_sample("GPU-a0", util=5)]))
    async with memory_layer() as layer:
        socket = await open_socket("page=node&node=gpu-a", viewer_cookie)
        snapshot = await socket.receive_json_from(timeout=5)

        processes = [{"pid": 4242, "type": "compute", "used_memory_bytes": 2 * 1024**3}]
        await publish_telemetry(layer, "gpu-a", [gpu_sample("GPU-a0", util=5, info=False, processes=processes)])
        await publish_telemetry(layer, "gpu-b", [gpu_sample("GPU-b0", util=99)])  # another node's: not sent
        details = await socket.receive_json_from(timeout=5)
        await database_sync_to_async(record_event)("NODE_UNHEALTHY", node_name="gpu-a")
        event_frame = await socket.receive_json_from(timeout=5)
        await socket.disconnect()

    assert snapshot["node"]["name"] == "gpu-a"
    assert snapshot["history"]["GPU-a0"]["util"] == [5]
    assert details["gpus"] == {"GPU-a0": {"procs": [{"pid": 4242, "type": "compute", "mem": 2048}]}}
    assert [event["type"] for event in event_frame["events"]] == ["NODE_UNHEALTHY"]


async def test_it_resumes_the_event_feed_after_the_last_event_it_had(memory_layer, live, viewer_cookie):
    first = await database_sync_to_async(record_event)("NODE_UNHEALTHY", node_name="gpu-x")
    missed = await database_sync_to_async(record_event)("NODE_HEALTHY", node_name="gpu-x")
    async with memory_layer():
        socket = await open_socket(f"page=events&after={first.pk}", viewer_cookie)
        snapshot = await socket.receive_json_from(timeout=5)
        live_one = await database_sync_to_async(record_event)("MODEL_LOADED", node_name="gpu-x")
        frame = await socket.receive_json_from(timeout=5)
        await socket.disconnect()

    assert [event["id"] for event in snapshot["events"]] == [missed.pk]
    assert [event["id"] for event in frame["events"]] == [live_one.pk]


async def test_it_filters_the_event_feed_by_type(memory_layer, live, viewer_cookie):
    async with memory_layer():
        socket = await open_socket("page=events&types=MODEL_LOADED", viewer_cookie)
        await socket.receive_json_from(timeout=5)
        await database_sync_to_async(record_event)("NODE_UNHEALTHY", node_name="gpu-x")
        loaded = await database_sync_to_async(record_event)("MODEL_LOADED", node_name="gpu-x")
        frame = await socket.receive_json_from(timeout=5)
        await socket.disconnect()

    assert [event["id"] for event in frame["events"]] == [loaded.pk]
