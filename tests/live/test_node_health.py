"""A node that misses 3 report intervals turns unhealthy, once; its next report makes it healthy."""

from __future__ import annotations

import pytest

from meshcore import registry
from meshcore.live.health import HealthSweeper
from meshcore.live.ingest import TelemetryIngest
from meshcore.live.mirror import NodeSilent, apply_change, apply_silence
from meshcore.live.reports import parse_report
from meshcore.live.store import MemoryLiveStore, NodeWrite
from meshcore.models import Event, Health, Node
from tests.live.conftest import redis_store
from tests.live.support import report


class Handed:
    def __init__(self):
        self.items = []

    def submit(self, item):
        self.items.append(item)

    def apply_all(self):
        for item in self.items:
            apply_silence(item) if isinstance(item, NodeSilent) else apply_change(item)
        self.items.clear()


def silent_report(store, now, interval=1.0):
    store.apply(NodeWrite("gpu-01", "agent", 1, "snapshot", now, interval, "{}"))


@pytest.fixture
def node(db):
    created, _ = registry.create_node(actor="system", name="gpu-01", address="10.0.0.1", roles=["gpu"])
    return created


def test_a_silent_node_turns_unhealthy_with_one_event_and_recovers(node):
    import time

    store = MemoryLiveStore()
    handed = Handed()
    ingest = TelemetryIngest(store, changes=handed)
    ingest.ingest(parse_report(report(seq=1, interval_s=0.2)))
    handed.apply_all()
    sweeper = HealthSweeper(store, handed)
    assert sweeper.sweep_once() == []
    time.sleep(0.7)  # more than 3 intervals of 0.2 s
    assert sweeper.sweep_once() == ["gpu-01"]
    assert sweeper.sweep_once() == []
    handed.apply_all()
    node.refresh_from_db()
    assert node.health == Health.UNHEALTHY
    assert Event.objects.filter(type="NODE_UNHEALTHY", node_name="gpu-01").count() == 1

    ingest.ingest(parse_report(report(seq=2, kind="delta", interval_s=0.2)))
    handed.apply_all()
    node.refresh_from_db()
    assert node.health == Health.HEALTHY
    recovered = Event.objects.filter(type="NODE_HEALTHY").order_by("-id").first()
    assert recovered.data["recovered"] is True


def test_only_the_lock_holder_sweeps():
    store = redis_store()
    try:
        first, second = Handed(), Handed()
        sweeper_a, sweeper_b = HealthSweeper(store, first), HealthSweeper(store, second)
        assert sweeper_a.sweep_once() == []  # takes the lock
        silent_report(store, now=0.0)
        assert sweeper_b.sweep_once() == []
        assert sweeper_a.sweep_once() == ["gpu-01"]
        assert len(first.items) == 1 and second.items == []
    finally:
        store.clear()


def test_two_processes_racing_announce_a_node_once():
    """Even without the lock, the store flips each node atomically: one of them wins."""
    store = redis_store()
    try:
        silent_report(store, now=0.0)
        import time

        now = time.time()
        assert store.sweep(now, 3) + store.sweep(now, 3) == ["gpu-01"]
    finally:
        store.clear()


def test_a_node_deleted_after_it_went_silent_is_announced_without_failing(db):
    apply_silence(NodeSilent("gone", None))
    assert Event.objects.filter(type="NODE_UNHEALTHY", node_name="gone").exists()
    assert not Node.objects.exists()
