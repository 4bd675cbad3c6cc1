"""Sending to the channel layer from plain threads (projection, mirror, publisher).

The in-memory channel layer's queues belong to the server's event loop: a message put
from another thread's loop would not wake it. So once the server's loop is known (the
ASGI entry point records it), sends from threads are scheduled on it; before that, or
in a process with no server (commands, Celery), they run on a loop of the calling thread.
`send_from_thread` does not wait for the server's loop (a busy loop must not hold up the
projection or the mirror); what it schedules runs in the order it was sent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

_server_loop: asyncio.AbstractEventLoop | None = None
_thread_loops = threading.local()
# Sends scheduled on the server's loop, run one after the other by one task (touched on that loop only).
_outbox: deque[Callable[[], Awaitable[Any]]] = deque()
_draining = False


def remember_server_loop() -> None:
    """Called from the ASGI application: the loop that serves this process's connections."""
    global _server_loop
    loop = asyncio.get_running_loop()
    if _server_loop is not loop:
        _server_loop = loop


def _server_loop_elsewhere() -> asyncio.AbstractEventLoop | None:
    """The server's loop when it runs and this thread is not its own; else None."""
    loop = _server_loop
    if loop is None or not loop.is_running() or loop.is_closed():
        return None
    try:
        running_here = asyncio.get_running_loop() is loop
    except RuntimeError:
        running_here = False
    return None if running_here else loop


def run_from_thread(make: Callable[[], Awaitable[Any]], timeout_s: float = 5.0) -> Any:
    """Run the coroutine `make()` on the server's loop if there is one, else on this thread's own loop."""
    loop = _server_loop_elsewhere()
    if loop is not None:
        return asyncio.run_coroutine_threadsafe(make(), loop).result(timeout_s)
    own = getattr(_thread_loops, "loop", None)
    if own is None or own.is_closed():
        # One loop per thread, kept: the Redis layer pools its connections per loop.
        own = _thread_loops.loop = asyncio.new_event_loop()
    return own.run_until_complete(make())


def send_from_thread(make: Callable[[], Awaitable[Any]]) -> None:
    """Schedule `make()` on the server's loop and return at once; without a server loop, run it here.

    Sends keep their order. A failure is logged, not raised: the caller has moved on.
    """
    loop = _server_loop_elsewhere()
    if loop is not None:
        loop.call_soon_threadsafe(_enqueue, make)
        return
    try:
        run_from_thread(make)
    except Exception:
        logger.warning("a channel-layer send failed", exc_info=True)


def _enqueue(make: Callable[[], Awaitable[Any]]) -> None:
    global _draining
    _outbox.append(make)
    if not _draining:
        _draining = True
        asyncio.get_running_loop().create_task(_drain())


async def _drain() -> None:
    global _draining
    try:
        while _outbox:
            make = _outbox.popleft()
            try:
                await make()
            except Exception:
                logger.warning("a channel-layer send from a thread failed", exc_info=True)
    finally:
        _draining = False
