"""Polling until a condition holds, for tests and benchmarks that drive real processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], timeout: float = 10.0, message: str | None = None, *, interval: float = 0.05
) -> T | Literal[False]:
    """Call `condition` every `interval` seconds until it returns something truthy, and return that.

    After `timeout` seconds without: raise AssertionError(`message`) when a message is given, or
    return False otherwise (so `assert wait_until(...), why` reads as one check). The condition is
    always called at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
    if message is not None:
        raise AssertionError(f"{message} (waited {timeout:g} s)")
    return False
