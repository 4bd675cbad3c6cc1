"""The live state store's contract, on process memory and on the real Redis."""

from __future__ import annotations

import asyncio
import json

import pytest

from meshcore.live.store import ACCEPTED, SNAPSHOT_REQUIRED, STALE, NodeWrite, RedisLiveStore
from tests.live.conftest import REDIS_URL


def write(seq, kind="snapshot", agent="a1", now=100.0, fields=None, removed=(), watch=(), history=(), **more):
    return NodeWrite(
        node=more.get("node", "gpu-01"),
        agent_id=agent,
        seq=seq,
        kind=kind,
        now=now,
        interval_s=more.get("interval", 1.0),
        meta=json.dumps({"agent": {"id": agent}}),
        fields=dict(fields or {}),
        removed=list(removed),
        watch=list(watch),
        history=list(history),
    )


def test_it_accepts_a_snapshot_and_reads_it_back(store):
    result = store.apply(write(1, fields={"gpu:G1": '{"m":1}', "info:G1": '{"name":"A"}'}))
    assert result.verdict == ACCEPTED
    assert result.previous_health is None
    record = store.read(["gpu-01"])["gpu-01"]
    assert record["gpu:G1"] == '{"m":1}'
    assert record["health"] == "healthy"
    assert record["seq"] == "1"
    assert store.read() == {"gpu-01": record}


def test_it_ignores_a_duplicate_or_older_sequence_number(store):
    store.apply(write(5, fields={"gpu:G1": "new"}))
    assert store.apply(write(5, fields={"gpu:G1": "dup"})).verdict == STALE
    assert store.apply(write(4, kind="delta", fields={"gpu:G1": "old"})).verdict == STALE
    assert store.read(["gpu-01"])["gpu-01"]["gpu:G1"] == "new"


def test_it_asks_for_a_snapshot_when_a_delta_comes_from_an_unknown_agent(store):
    assert store.apply(write(1, kind="delta", fields={"gpu:G1": "x"})).verdict == SNAPSHOT_REQUIRED
    assert store.read(["gpu-01"]) == {}
    store.apply(write(7, agent="old-agent"))
    # A restarted agent starts its sequence again: its first report must be a snapshot.
    assert store.apply(write(1, kind="delta", agent="new-agent")).verdict == SNAPSHOT_REQUIRED
    assert store.apply(write(1, agent="new-agent")).verdict == ACCEPTED


def test_it_applies_a_delta_to_the_named_fields_only(store):
    store.apply(write(1, fields={"gpu:G1": "a", "gpu:G2": "b", "info:G2": "i"}))
    store.apply(write(2, kind="delta", fields={"gpu:G1": "a2"}, removed=["gpu:G2", "info:G2"]))
    record = store.read(["gpu-01"])["gpu-01"]
    assert record["gpu:G1"] == "a2"
    assert "gpu:G2" not in record and "info:G2" not in record


def test_it_returns_watched_values_from_before_the_write(store):
    store.apply(write(1, fields={"info:G1": "before"}))
    result = store.apply(write(2, kind="delta", fields={"info:G1": "after"}, watch=["info:G1", "info:G9"]))
    assert result.previous == {"info:G1": "before", "info:G9": None}
    assert result.previous_health == "healthy"


def test_a_snapshot_replaces_everything_and_names_what_was_there(store):
    store.apply(write(1, fields={"gpu:G1": "a", "info:G1": "i1", "gpu:G2": "b"}))
    result = store.apply(write(2, fields={"gpu:G1": "a2"}))
    assert {"gpu:G1", "info:G1", "gpu:G2"} <= set(result.replaced_fields)
    record = store.read(["gpu-01"])["gpu-01"]
    assert "gpu:G2" not in record and "info:G1" not in record


def test_it_keeps_a_bounded_history_per_series(store):
    for seq in range(1, 9):
        store.apply(write(seq, now=100.0 + seq, history=[("gpu:G1", json.dumps([100.0 + seq, seq]))]))
    points = store.history("gpu-01", "gpu:G1", since=0)
    assert [point[1] for point in points] == [4, 5, 6, 7, 8]  # the store keeps 5 points here
    assert [point[1] for point in store.history("gpu-01", "gpu:G1", since=107.0)] == [7, 8]


def test_the_sweep_marks_a_node_silent_for_three_intervals_unhealthy_once(store):
    store.apply(write(1, now=100.0, interval=2.0))
    assert store.sweep(now=105.9, missed_intervals=3) == []
    assert store.sweep(now=106.5, missed_intervals=3) == ["gpu-01"]
    assert store.sweep(now=107.0, missed_intervals=3) == []
    assert store.read(["gpu-01"])["gpu-01"]["health"] == "unhealthy"
    result = store.apply(write(2, kind="delta", now=108.0, interval=2.0))
    assert result.previous_health == "unhealthy"
    assert store.read(["gpu-01"])["gpu-01"]["health"] == "healthy"
    # Healthy again, it is watched again: silent once more, it turns unhealthy once more.
    assert store.sweep(now=113.0, missed_intervals=3) == []
    assert store.sweep(now=114.5, missed_intervals=3) == ["gpu-01"]


def test_the_sweep_finds_the_silent_node_among_reporting_ones(store):
    for number in range(20):
        store.apply(write(1, now=100.0, node=f"gpu-{number:02d}"))
    for number in range(1, 20):
        store.apply(write(2, kind="delta", now=103.0, node=f"gpu-{number:02d}"))
    assert store.sweep(now=103.5, missed_intervals=3) == ["gpu-00"]
    assert store.sweep(now=104.0, missed_intervals=3) == []


def test_writes_from_an_event_loop_get_their_own_verdicts(store):
    """Concurrent writes from one loop (batched into one round trip on Redis) each get their own answer."""

    async def send_all():
        return await asyncio.gather(
            store.apply_async(write(1, node="a", fields={"gpu:G1": "a1"}, watch=["gpu:G1"])),
            store.apply_async(write(1, node="b", fields={"gpu:G1": "b1"})),
            store.apply_async(write(1, node="c", kind="delta")),
            store.apply_async(write(2, node="a", kind="delta", fields={"gpu:G1": "a2"}, watch=["gpu:G1"])),
            store.apply_async(write(2, node="a", kind="delta", fields={"gpu:G1": "dup"})),
        )

    results = asyncio.run(send_all())
    assert [r.verdict for r in results] == [ACCEPTED, ACCEPTED, SNAPSHOT_REQUIRED, ACCEPTED, STALE]
    assert results[0].previous == {"gpu:G1": None}
    assert results[3].previous == {"gpu:G1": "a1"}  # in order: the second write of a saw the first
    records = store.read(["a", "b", "c"])
    assert records["a"]["gpu:G1"] == "a2" and records["b"]["gpu:G1"] == "b1" and "c" not in records


def test_async_writes_load_the_script_again_after_redis_forgot_it():
    store = RedisLiveStore(REDIS_URL, prefix="infermesh-test:script-flush:")
    try:

        async def scenario():
            first = await store.apply_async(write(1, node="n1"))
            await asyncio.to_thread(store._redis.script_flush)
            second = await store.apply_async(write(2, node="n1", kind="delta"))
            return first, second

        first, second = asyncio.run(scenario())
        assert (first.verdict, second.verdict) == (ACCEPTED, ACCEPTED)
        assert store.read(["n1"])["n1"]["seq"] == "2"
    finally:
        store.clear()


def test_async_writes_raise_when_redis_is_away():
    store = RedisLiveStore("redis://127.0.0.1:1/0", prefix="infermesh-test:away:")
    with pytest.raises(Exception, match=r"(?i)connect"):
        asyncio.run(store.apply_async(write(1)))


def test_one_owner_at_a_time_holds_a_lock(store):
    assert store.try_lock("sweeper", "p1", ttl_s=5)
    assert not store.try_lock("sweeper", "p2", ttl_s=5)
    assert store.try_lock("sweeper", "p1", ttl_s=5)  # renewal by its holder
