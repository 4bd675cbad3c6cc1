"""Sends from plain threads to the server's event loop (meshcore.channel_bridge)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from meshcore import channel_bridge


@pytest.fixture
def server_loop():
    """A running loop in its own thread, recorded as the server's, as the ASGI entry point does."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(_remember(), loop).result(5)
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    channel_bridge._server_loop = None
    loop.close()


async def _remember():
    channel_bridge.remember_server_loop()


def test_sends_from_a_thread_run_on_the_server_loop_in_order_without_waiting(server_loop):
    ran: list[tuple[int, asyncio.AbstractEventLoop]] = []
    release = threading.Event()

    def send(number: int):
        async def slow_send():
            if number == 0:
                await asyncio.to_thread(release.wait, 5)  # the first send is slow; the others queue behind it
            ran.append((number, asyncio.get_running_loop()))

        return slow_send

    started = time.monotonic()
    for number in range(5):
        channel_bridge.send_from_thread(send(number))
    assert time.monotonic() - started < 0.5, "send_from_thread waited for the loop"
    assert ran == []
    release.set()
    deadline = time.monotonic() + 5
    while len(ran) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [number for number, _ in ran] == [0, 1, 2, 3, 4]
    assert {loop for _, loop in ran} == {server_loop}


def test_a_failed_send_is_logged_and_the_next_ones_still_run(server_loop, caplog):
    ran = []

    async def fail():
        raise RuntimeError("the channel layer is away")

    async def succeed():
        ran.append("after")

    channel_bridge.send_from_thread(fail)
    channel_bridge.send_from_thread(succeed)
    deadline = time.monotonic() + 5
    while not ran and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ran == ["after"]
    assert "channel-layer send from a thread failed" in caplog.text


def test_without_a_server_loop_the_send_runs_before_returning():
    channel_bridge._server_loop = None
    ran = []

    async def record():
        ran.append(threading.current_thread().name)

    channel_bridge.send_from_thread(record)
    assert ran == [threading.current_thread().name]
