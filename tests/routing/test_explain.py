"""Explain, from the API and the command: candidates ranked with their signals, and every excluded
target with its reason (not loaded, unhealthy, stale, draining, ejected, pinned out, acl, quota)."""

import json
import time
from io import StringIO

import pytest
from django.core.management import call_command

from meshcore import registry
from meshcore.live import parts
from meshcore.live.reports import parse_report
from meshcore.live.store import MemoryLiveStore, use_store
from meshcore.proxy.app import proxy_app
from meshcore.routing.table import empty_table
from meshcore.routing.view import routing_view
from tests.live.support import report, runtime

NODES = ("gpu-ok", "gpu-drain", "gpu-sick", "gpu-stale", "gpu-down", "gpu-loading", "gpu-pinned", "gpu-ejected")


@pytest.fixture
def fleet(operator):
    store = MemoryLiveStore()
    use_store(store)
    parts.reset()
    for name in NODES:
        registry.create_node(
            actor=operator,
            name=name,
            address="10.0.0.1",
            roles=["gpu"],
            labels={"rack": "r2" if name == "gpu-pinned" else "r1"},
        )
        registry.create_runtime(actor=operator, node_name=name, http_url=f"http://{name}.example:8000")
        state = "LOADING" if name == "gpu-loading" else "READY"
        runtimes = [runtime({"echo": (state, "")}, live=name != "gpu-down")]
        parts.telemetry_ingest().ingest(parse_report(report(node=name, runtimes=runtimes)))
    registry.set_node_draining(actor=operator, name="gpu-drain", draining=True)
    store._nodes["gpu-sick"]["health"] = "unhealthy"
    store._nodes["gpu-stale"]["received_at"] = str(time.time() - 60)
    registry.create_policy(
        actor=operator, name="echo-in-r1", kind="pin", spec={"model": "echo", "selector": {"rack": "r1"}}
    )
    for _ in range(5):
        proxy_app.balancer.record_failure("gpu-ejected/triton")
    routing_view.table = empty_table()
    routing_view.table.built_at = 0  # explain rebuilds it from this test's database and store
    yield store
    proxy_app.balancer.states.clear()
    parts.reset()
    use_store(None)


def test_the_api_ranks_the_candidates_and_gives_every_reason(fleet, operator_client):
    response = operator_client.get("/api/v1/routing/explain/?model=echo")
    assert response.status_code == 200, response.content
    explained = response.json()
    assert [c["target"] for c in explained["candidates"]] == ["gpu-ok/triton"]
    reasons = {e["target"]: e["reason"] for e in explained["excluded"]}
    assert reasons == {
        "gpu-drain/triton": "node draining",
        "gpu-sick/triton": "node unhealthy",
        "gpu-stale/triton": "report stale",
        "gpu-down/triton": "runtime not ready",
        "gpu-loading/triton": "model not ready",
        "gpu-pinned/triton": "pinned out",
        "gpu-ejected/triton": "ejected",
    }
    signals = explained["candidates"][0]["signals"]
    assert set(signals) == {
        "expected_wait",
        "recent_performance",
        "gpu_utilization",
        "gpu_memory",
        "queue_depth",
        "network_latency",
    }
    assert signals["queue_depth"]["raw"] == 2.0 and signals["queue_depth"]["stale"] is False
    assert sum(s["share"] for s in signals.values()) == pytest.approx(1.0, abs=0.01)


def test_it_names_a_version_that_is_loaded_nowhere(fleet, operator_client):
    explained = operator_client.get("/api/v1/routing/explain/?model=echo&version=9").json()
    assert explained["candidates"] == []
    assert "version '9'" in explained["unroutable"]
    assert {"target": "gpu-ok/triton", "reason": "version not loaded", "detail": "version '9'"} in explained["excluded"]


def test_it_shows_the_acl_and_quota_that_apply(fleet, operator, operator_client):
    registry.create_policy(
        actor=operator,
        name="tenant-cap",
        kind="quota",
        spec={"scope": "tenant", "target": "team-a", "max_requests_per_second": 5},
    )
    explained = operator_client.get("/api/v1/routing/explain/?model=echo&tenant=team-a").json()
    assert explained["quotas"] == [
        {"policy": "tenant-cap", "max_requests_per_second": 5.0, "max_concurrent": None, "enforcement": "block"}
    ]


def test_it_needs_a_model_and_a_signed_in_user(fleet, operator_client, stranger_client):
    assert operator_client.get("/api/v1/routing/explain/").status_code == 400
    assert stranger_client.get("/api/v1/routing/explain/?model=echo").status_code in (401, 403)


def test_the_command_prints_the_ranking_and_the_reasons(fleet):
    out = StringIO()
    call_command("route", "explain", "echo", stdout=out)
    text = out.getvalue()
    assert "#1 gpu-ok/triton" in text
    assert "excluded  gpu-pinned/triton: pinned out (policy echo-in-r1)" in text
    as_json = StringIO()
    call_command("route", "explain", "echo", "--json", stdout=as_json)
    assert json.loads(as_json.getvalue())["candidates"][0]["target"] == "gpu-ok/triton"
