"""Sending to the channel layer from plain threads (projection, mirror, publisher).

The in-memory channel layer's queues belong to the server's event loop: a message put
from another thread's loop would not wake it. So once the server's loop is known (the
ASGI entry point records it), sends from threads are scheduled on it; before that, or
in a process with no server (commands, Celery), they run on a loop of the calling thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

_server_loop: asyncio.AbstractEventLoop | None = None
_thread_loops = threading.local()


def remember_server_loop() -> None:
    """Called from the ASGI application: the loop that serves this process's connections."""
    global _server_loop
    loop = asyncio.get_running_loop()
    if _server_loop is not loop:
        _server_loop = loop


def run_from_thread(make: Callable[[], Awaitable[Any]], timeout_s: float = 5.0) -> Any:
    """Run the coroutine `make()` on the server's loop if there is one, else on this thread's own loop."""
    loop = _server_loop
    if loop is not None and loop.is_running() and not loop.is_closed():
        try:
            running_here = asyncio.get_running_loop() is loop
        except RuntimeError:
            running_here = False
        if not running_here:
            return asyncio.run_coroutine_threadsafe(make(), loop).result(timeout_s)
    own = getattr(_thread_loops, "loop", None)
    if own is None or own.is_closed():
        # One loop per thread, kept: the Redis layer pools its connections per loop.
        own = _thread_loops.loop = asyncio.new_event_loop()
    return own.run_until_complete(make())
