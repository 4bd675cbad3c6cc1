"""End to end: a real agent process reports to a real control plane; a WebSocket subscriber
sees its GPUs within 2 s; the agent dies and NODE_UNHEALTHY arrives; it returns, NODE_HEALTHY."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets

from devtools.fleet import AgentProcess, ControlPlane, dumps
from devtools.waiting import wait_until

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def control_plane(request, tmp_path_factory):
    plane = ControlPlane(tmp_path_factory.mktemp("e2e-control"), MESH_ASGI_SERVER=request.param)
    plane.start()
    yield plane
    plane.stop()


async def next_message(socket, accept, timeout: float) -> dict:
    """The next message `accept` likes, within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no matching message in time")
        message = json.loads(await asyncio.wait_for(socket.recv(), remaining))
        if accept(message):
            return message


def test_an_agent_reports_dies_and_returns_and_subscribers_see_it(control_plane, tmp_path):
    node = "gpu-e2e"
    token = control_plane.register_node(node)
    api_token = control_plane.api_token()
    agent = AgentProcess(node, token, control_plane, tmp_path)
    url = f"ws://127.0.0.1:{control_plane.port}/ws/events/?telemetry=1&node={node}"

    async def scenario() -> dict:
        seen: dict = {}
        async with websockets.connect(
            url,
            additional_headers={"Authorization": f"Bearer {api_token}"},
            origin=f"http://127.0.0.1:{control_plane.port}",
        ) as socket:
            agent.start()
            update = await next_message(socket, lambda m: m.get("kind") == "telemetry" and m.get("gpus"), 60)
            seen["delivery_s"] = time.time() - update["time"]
            seen["gpus"] = update["gpus"]
            agent.kill()
            killed_at = time.monotonic()
            unhealthy = await next_message(socket, lambda m: m.get("type") == "NODE_UNHEALTHY", 15)
            seen["unhealthy_after_s"] = time.monotonic() - killed_at
            seen["unhealthy"] = unhealthy
            agent.start()
            seen["healthy"] = await next_message(socket, lambda m: m.get("type") == "NODE_HEALTHY", 60)
        return seen

    try:
        seen = asyncio.run(scenario())
    except AssertionError as error:
        raise AssertionError(f"{error}\nagent log:\n{agent.log()}") from error
    finally:
        agent.stop()
    print(f"delivery {seen['delivery_s']:.3f} s, unhealthy after kill {seen['unhealthy_after_s']:.2f} s")
    assert seen["delivery_s"] < 2.0, seen
    assert {gpu["uuid"][:4] for gpu in seen["gpus"]} == {"SIM-"}
    assert seen["unhealthy"]["node"] == node
    assert seen["unhealthy_after_s"] < 10
    assert seen["healthy"]["node"] == node
    assert seen["healthy"]["data"]["recovered"] is True

    nodes = control_plane.get("/api/v1/nodes/", api_token)["results"]
    [row] = [row for row in nodes if row["name"] == node]
    assert row["health"] == "healthy", dumps(row)
    assert row["live"]["agent"]["version"] == "0.1.0"
    gpus = wait_until(
        lambda: [g for g in control_plane.get("/api/v1/gpus/", api_token)["results"] if g["node"] == node],
        10,
        "the agent's GPUs never reached the inventory",
    )
    assert len(gpus) == 2 and all(gpu["simulated"] for gpu in gpus)
    assert all(gpu["live"]["age_s"] < 5 for gpu in gpus), dumps(gpus)
