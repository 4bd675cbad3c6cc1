"""Events are kept for MESH_EVENT_RETENTION_DAYS and at most MESH_EVENT_RETENTION_MAX rows,
pruned in bounded batches by a thread of `serve` (no Celery beat)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from meshcore import event_retention
from meshcore.event_retention import EventPruner, prune_events
from meshcore.models import Event
from meshcore.process import MeshProcess

NOW = timezone.now()


def make_events(count: int, age: timedelta = timedelta(0)) -> list[int]:
    return [Event.objects.create(type="NODE_HEALTHY", node_name="gpu-a", created_at=NOW - age).pk for _ in range(count)]


def pruner_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate()]


def test_it_prunes_events_older_than_the_retention_days(db, settings):
    settings.MESH_EVENT_RETENTION_DAYS = 7
    make_events(2, age=timedelta(days=8))
    kept = make_events(1, age=timedelta(days=6, hours=23))

    deleted = prune_events(now=NOW)

    assert deleted == 2
    assert list(Event.objects.values_list("pk", flat=True)) == kept


def test_it_keeps_only_the_newest_rows_beyond_the_maximum(db, settings):
    settings.MESH_EVENT_RETENTION_MAX = 3
    ids = make_events(5)

    deleted = prune_events(now=NOW)

    assert deleted == 2
    assert sorted(Event.objects.values_list("pk", flat=True)) == ids[2:]


def test_it_deletes_in_bounded_batches(db, settings, monkeypatch):
    monkeypatch.setattr(event_retention, "PRUNE_BATCH", 2)
    make_events(5, age=timedelta(days=30))

    with CaptureQueriesContext(connection) as queries:
        deleted = prune_events(now=NOW)

    deletes = [query["sql"] for query in queries if query["sql"].startswith("DELETE")]
    assert deleted == 5
    assert len(deletes) == 3
    assert not Event.objects.exists()


def test_it_changes_nothing_within_the_limits(db):
    make_events(3, age=timedelta(days=1))

    assert prune_events(now=NOW) == 0
    assert Event.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_it_prunes_from_a_thread_again_and_again_until_stopped(settings, monkeypatch):
    settings.MESH_EVENT_RETENTION_MAX = 2
    make_events(5)
    passes: list[int] = []

    def counted(now=None):
        passes.append(prune_events(now))
        return passes[-1]

    # Counting passes, not rows: reading the table while the thread deletes could meet SQLite's lock.
    monkeypatch.setattr(event_retention, "prune_events", counted)
    pruner = EventPruner(interval=0.05, first_run_after=0)
    pruner.start()
    deadline = time.monotonic() + 10
    while len(passes) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    started_stopping = time.monotonic()
    pruner.stop()

    assert time.monotonic() - started_stopping < 1
    assert passes[:3] == [3, 0, 0]
    assert Event.objects.count() == 2


def test_it_stops_promptly_before_its_first_pass(settings):
    pruner = EventPruner(first_run_after=60)
    pruner.start()
    assert "infermesh-event-pruner" in pruner_threads()

    started_stopping = time.monotonic()
    pruner.stop()

    assert time.monotonic() - started_stopping < 1
    assert "infermesh-event-pruner" not in pruner_threads()


@pytest.mark.parametrize("replication", ["local", "raft"])
def test_it_is_a_background_part_of_every_mesh_process(settings, replication):
    settings.MESH_REPLICATION = replication

    parts = MeshProcess.from_settings().parts

    assert [type(part) for part in parts].count(EventPruner) == 1
