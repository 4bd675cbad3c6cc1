"""Slow changes reach the database and the event stream; fast ones do not touch the database."""

from __future__ import annotations

import pytest

from meshcore import registry
from meshcore.live.ingest import TelemetryIngest
from meshcore.live.mirror import apply_change
from meshcore.live.reports import parse_report
from meshcore.live.store import MemoryLiveStore
from meshcore.models import Event, Gpu, Health, ModelInstance, Node, Runtime
from tests.live.support import gpu, report, runtime


class Changes:
    def __init__(self):
        self.items = []

    def submit(self, change):
        self.items.append(change)


class Clock:
    def __init__(self):
        self.now = 1_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def node(db):
    created, _ = registry.create_node(actor="system", name="gpu-01", address="10.0.0.1", roles=["gpu"])
    return created


@pytest.fixture
def changes():
    return Changes()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ingest(changes, clock):
    return TelemetryIngest(MemoryLiveStore(), changes=changes, clock=clock)


def send(ingest, changes, body):
    """Ingest a report and mirror what it handed over, in this thread (inside the test's transaction)."""
    before = len(changes.items)
    assert ingest.ingest(parse_report(body)).verdict == "accepted"
    for change in changes.items[before:]:
        apply_change(change)
    return changes.items[before:]


def events(event_type):
    return list(Event.objects.filter(type=event_type).order_by("id"))


def test_the_first_report_mirrors_the_gpus_and_marks_the_node_healthy(ingest, changes, node):
    send(
        ingest,
        changes,
        report(gpus=[gpu("GPU-1"), gpu("GPU-2", 1, name="NVIDIA A100")]),
    )
    assert list(Gpu.objects.values_list("uuid", "index", "name")) == [
        ("GPU-1", 0, "NVIDIA H100 80GB HBM3"),
        ("GPU-2", 1, "NVIDIA A100"),
    ]
    node.refresh_from_db()
    assert node.health == Health.HEALTHY
    assert node.last_seen is not None
    assert node.agent_version == "0.1.0"
    assert [event.node_name for event in events("NODE_HEALTHY")] == ["gpu-01"]


def test_a_heartbeat_touches_no_table(ingest, changes, node, django_assert_num_queries):
    send(ingest, changes, report(seq=1))
    with django_assert_num_queries(0):
        handed_over = send(ingest, changes, report(seq=2, kind="delta"))
    assert handed_over == []


def test_last_seen_is_mirrored_again_after_a_while(ingest, changes, clock, node):
    send(ingest, changes, report(seq=1))
    clock.now += 31
    handed_over = send(ingest, changes, report(seq=2, kind="delta"))
    assert len(handed_over) == 1
    node.refresh_from_db()
    assert node.last_seen.timestamp() == pytest.approx(clock.now)


def test_a_changed_and_a_removed_gpu_reach_the_inventory(ingest, changes, node):
    send(ingest, changes, report(seq=1, gpus=[gpu("GPU-1"), gpu("GPU-2", 1)]))
    send(ingest, changes, report(seq=2, kind="delta", gpus=[gpu("GPU-1", name="Renamed")], removed_gpus=["GPU-2"]))
    assert list(Gpu.objects.values_list("uuid", "name")) == [("GPU-1", "Renamed")]
    send(ingest, changes, report(seq=3, gpus=[gpu("GPU-3", 0)]))  # a snapshot lists all there is
    assert list(Gpu.objects.values_list("uuid", flat=True)) == ["GPU-3"]


def test_model_states_follow_triton_with_their_events(ingest, changes, node):
    send(ingest, changes, report(seq=1, runtimes=[runtime({"resnet": ("LOADING", "")})]))
    assert list(ModelInstance.objects.values_list("model_name", "state")) == [("resnet", "loading")]
    assert events("MODEL_LOADED") == []

    send(ingest, changes, report(seq=2, kind="delta", runtimes=[runtime({"resnet": ("READY", "")})]))
    assert list(ModelInstance.objects.values_list("model_name", "state")) == [("resnet", "ready")]
    assert [event.data["model"] for event in events("MODEL_LOADED")] == ["resnet"]

    send(ingest, changes, report(seq=3, kind="delta", runtimes=[runtime({"resnet": ("UNAVAILABLE", "unloaded")})]))
    assert ModelInstance.objects.count() == 0
    assert [event.data["reason"] for event in events("MODEL_UNLOADED")] == ["unloaded"]

    send(ingest, changes, report(seq=4, kind="delta", runtimes=[runtime({"resnet": ("UNAVAILABLE", "out of memory")})]))
    assert list(ModelInstance.objects.values_list("state", "reason")) == [("failed", "out of memory")]
    assert [event.data["reason"] for event in events("MODEL_FAILED")] == ["out of memory"]
    # The same failure reported again is not a new event.
    send(
        ingest,
        changes,
        report(
            seq=5,
            kind="delta",
            runtimes=[runtime({"resnet": ("UNAVAILABLE", "out of memory")}, live=True) | {"ready": False}],
        ),
    )
    assert len(events("MODEL_FAILED")) == 1


def test_a_model_the_catalog_lacks_still_shows_up(ingest, changes, node, operator_client):
    registry.create_model(actor="system", name="known", platform="python")
    send(ingest, changes, report(runtimes=[runtime({"known": ("READY", ""), "stranger": ("READY", "")})]))
    rows = {row["model_name"]: row for row in operator_client.get("/api/v1/instances/").json()["results"]}
    assert rows["known"]["in_catalog"] is True
    assert rows["stranger"]["in_catalog"] is False
    assert rows["stranger"]["state"] == "ready"


def test_a_runtime_nobody_registered_is_discovered_for_its_node(ingest, changes, node):
    send(ingest, changes, report(runtimes=[runtime({"m": ("READY", "")}, name="triton-b")]))
    created = Runtime.objects.get(node=node, name="triton-b")
    assert created.http_url == "http://127.0.0.1:8100"
    assert created.health == Health.HEALTHY
    assert Event.objects.filter(type="RUNTIME_DISCOVERED", actor="agent:gpu-01").exists()
    assert not Event.objects.filter(type="RUNTIME_CREATED").exists()


def test_it_ignores_an_unregistered_runtime_when_discovery_is_off(ingest, changes, node, settings):
    settings.MESH_RUNTIME_DISCOVERY = False
    send(ingest, changes, report(runtimes=[runtime({"m": ("READY", "")}, name="triton-b")]))
    assert not Runtime.objects.filter(node=node, name="triton-b").exists()
    assert ModelInstance.objects.count() == 0
    assert events("RUNTIME_DISCOVERED") == []


def test_an_unreachable_runtime_unloads_its_models(ingest, changes, node):
    send(ingest, changes, report(seq=1, runtimes=[runtime({"m": ("READY", "")})]))
    send(ingest, changes, report(seq=2, kind="delta", runtimes=[runtime(live=False)]))
    assert ModelInstance.objects.count() == 0
    assert Runtime.objects.get(name="triton").health == Health.UNHEALTHY
    assert len(events("MODEL_UNLOADED")) == 1


def test_a_report_for_a_node_deleted_meanwhile_is_dropped_quietly(ingest, changes, node):
    registry.delete_node(actor="system", name="gpu-01")
    send(ingest, changes, report())
    assert not Node.objects.exists()
    assert not Gpu.objects.exists()


def test_a_reconcile_brings_the_database_in_line_with_the_store(db, live, node):
    from meshcore.live.mirror import reconcile
    from meshcore.live.parts import telemetry_ingest

    ingest = telemetry_ingest()
    ingest.changes = None  # nothing mirrored as it arrives: as if another process took the report
    ingest.ingest(parse_report(report(gpus=[gpu("GPU-7")], runtimes=[runtime({"m": ("READY", "")})])))
    assert not Gpu.objects.exists()
    assert reconcile("gpu-01") is True
    assert list(Gpu.objects.values_list("uuid", flat=True)) == ["GPU-7"]
    assert list(ModelInstance.objects.values_list("model_name", "state")) == [("m", "ready")]
    node.refresh_from_db()
    assert node.health == Health.HEALTHY
    assert not Event.objects.filter(type__startswith="MODEL_").exists()  # reconciling announces nothing


def test_a_change_whose_runtime_cannot_be_registered_yet_is_tried_again(db, ingest, changes, node, monkeypatch):
    from meshcore.registry import Unavailable

    def no_quorum(**kwargs):
        raise Unavailable("No quorum")

    monkeypatch.setattr(registry, "register_discovered_runtime", no_quorum)
    ingest.ingest(parse_report(report(runtimes=[runtime({"m": ("READY", "")})])))
    assert apply_change(changes.items[-1]) is False


def test_a_model_in_the_repository_that_was_never_loaded_is_no_instance(ingest, changes, node):
    send(ingest, changes, report(runtimes=[runtime({"spare": ("UNAVAILABLE", "not loaded")})]))
    assert ModelInstance.objects.count() == 0
    assert events("MODEL_FAILED") == []


def test_mig_profiles_reach_the_inventory(ingest, changes, node):
    split = {**gpu("GPU-1"), "mig_instances": [{"profile": "3g.40gb"}, {"profile": "1g.10gb"}, {"profile": "1g.10gb"}]}
    send(ingest, changes, report(gpus=[split]))
    assert Gpu.objects.get(uuid="GPU-1").mig_profile == "1g.10gb,3g.40gb"


def test_a_periodic_reconcile_of_an_unchanged_node_writes_almost_nothing(db, live, node, django_assert_max_num_queries):
    from meshcore.live.mirror import reconcile
    from meshcore.live.parts import telemetry_ingest

    ingest = telemetry_ingest()
    ingest.changes = None
    ingest.ingest(
        parse_report(report(gpus=[gpu(f"GPU-{i}", i) for i in range(8)], runtimes=[runtime({"m": ("READY", "")})]))
    )
    reconcile("gpu-01")
    with django_assert_max_num_queries(11):  # reads, and last_seen/health: no per-GPU or per-model writes
        reconcile("gpu-01")
