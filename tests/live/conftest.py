"""Live state stores for tests: process memory, and the real Redis under a prefix of its own."""

from __future__ import annotations

import uuid

import pytest

from meshcore.live.store import MemoryLiveStore, RedisLiveStore

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_store() -> RedisLiveStore:
    return RedisLiveStore(REDIS_URL, prefix=f"infermesh-test:{uuid.uuid4().hex[:8]}:", history_points=5)


@pytest.fixture(params=["memory", "redis"])
def store(request):
    made = MemoryLiveStore(history_points=5) if request.param == "memory" else redis_store()
    yield made
    made.clear()
