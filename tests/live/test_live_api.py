"""GPUs, instances and nodes in the API carry their live values and how old they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshcore import registry
from meshcore.live.mirror import apply_change
from meshcore.live.parts import telemetry_ingest
from meshcore.live.reports import parse_report
from tests.live.support import gpu, report, runtime


class Collected:
    def __init__(self):
        self.items = []

    def submit(self, change):
        self.items.append(change)


@pytest.fixture
def reported(db, live):
    """gpu-01 reported once (mirrored in this thread); gpu-02 is registered but silent."""
    registry.create_node(actor="system", name="gpu-01", address="10.0.0.1", roles=["gpu"])
    registry.create_node(actor="system", name="gpu-02", address="10.0.0.2", roles=["gpu"])
    ingest = telemetry_ingest()
    collected = Collected()
    ingest.changes, ingest.telemetry = collected, None
    body = report(gpus=[gpu("GPU-1", util=42)], runtimes=[runtime({"resnet": ("READY", "")})])
    assert ingest.ingest(parse_report(body)).verdict == "accepted"
    for change in collected.items:
        apply_change(change)
    return ingest


def test_gpus_show_their_latest_metrics_and_age(reported, viewer_client):
    [row] = viewer_client.get("/api/v1/gpus/").json()["results"]
    assert row["uuid"] == "GPU-1"
    assert row["live"]["metrics"]["utilization_gpu_pct"] == 42
    assert 0 <= row["live"]["age_s"] < 5
    assert row["live"]["health"] == "healthy"


def test_instances_show_tritons_statistics(reported, viewer_client):
    [row] = viewer_client.get("/api/v1/instances/").json()["results"]
    assert row["model_name"] == "resnet"
    assert row["live"]["state"] == "READY"
    assert row["live"]["stats"]["queue_depth"] == 2


def test_nodes_show_their_last_report_or_null(reported, viewer_client):
    rows = {row["name"]: row for row in viewer_client.get("/api/v1/nodes/").json()["results"]}
    assert rows["gpu-01"]["live"]["health"] == "healthy"
    assert rows["gpu-01"]["live"]["gpus"] == 1
    assert rows["gpu-01"]["live"]["interval_s"] == 1.0
    assert rows["gpu-02"]["live"] is None
    single = viewer_client.get("/api/v1/nodes/gpu-01/").json()
    assert single["live"]["seq"] == 1


def test_a_gpu_has_a_short_history_for_charts(reported, viewer_client):
    reported.ingest(parse_report(report(seq=2, kind="delta", gpus=[gpu("GPU-1", util=43, info=False)])))
    gpu_id = viewer_client.get("/api/v1/gpus/").json()["results"][0]["id"]
    body = viewer_client.get(f"/api/v1/gpus/{gpu_id}/history/?seconds=60").json()
    assert body["columns"][1] == "utilization_gpu_pct"
    assert [point[1] for point in body["points"]] == [42, 43]
    assert viewer_client.get(f"/api/v1/gpus/{gpu_id}/history/?seconds=0").status_code == 400
    assert viewer_client.get(f"/api/v1/gpus/{gpu_id}/history/?seconds=abc").status_code == 400


def test_lists_answer_without_live_values_while_the_store_is_away(reported, viewer_client):
    from meshcore.live.store import RedisLiveStore, use_store

    use_store(RedisLiveStore("redis://127.0.0.1:1/0"))
    response = viewer_client.get("/api/v1/gpus/")
    assert response.status_code == 200
    assert response.json()["results"][0]["live"] is None
    gpu_id = response.json()["results"][0]["id"]
    history = viewer_client.get(f"/api/v1/gpus/{gpu_id}/history/")
    assert history.status_code == 503
    assert history["Retry-After"] == "1"


def test_an_instance_has_a_short_history_for_charts(reported, viewer_client):
    body = report(seq=2, kind="delta", runtimes=[runtime({"resnet": ("READY", "")})])
    body["runtimes"][0]["models"][0]["stats"] = {"queue_depth": 5, "inference_per_s": 12.5, "latency_ms": 8.0}
    reported.ingest(parse_report(body))
    instance_id = viewer_client.get("/api/v1/instances/").json()["results"][0]["id"]
    history = viewer_client.get(f"/api/v1/instances/{instance_id}/history/").json()
    assert history["columns"] == ["time", "queue_depth", "inference_per_s", "latency_ms"]
    assert [point[1:] for point in history["points"]] == [[2, None, None], [5, 12.5, 8.0]]


def test_a_sample_read_from_a_real_h200_reaches_the_api_whole(db, live, viewer_client):
    # What `python -m agents.probe` read on an NVIDIA H200 under load: every field the agent sends, real values.
    probe = json.loads((Path(__file__).parents[1] / "agents" / "data" / "nvml_h200_under_load.json").read_text())
    registry.create_node(actor="system", name="gpu-h200", address="10.0.0.9", roles=["gpu"])
    ingest = telemetry_ingest()
    collected = Collected()
    ingest.changes, ingest.telemetry = collected, None
    body = report(node="gpu-h200", gpus=probe["gpus"], nvml=probe["nvml"])
    assert ingest.ingest(parse_report(body)).verdict == "accepted"
    for change in collected.items:
        apply_change(change)

    [sample] = probe["gpus"]
    [row] = viewer_client.get("/api/v1/gpus/").json()["results"]
    assert (row["uuid"], row["name"], row["simulated"]) == (sample["uuid"], "NVIDIA H200", False)
    assert row["memory_total_bytes"] == sample["info"]["memory_total_bytes"]
    assert row["live"]["metrics"] == sample["metrics"]
    assert row["live"]["health"] == "healthy"
    [node] = viewer_client.get("/api/v1/nodes/").json()["results"]
    assert node["live"]["nvml"] == probe["nvml"]
