"""An acl and a quota written in the admin of one replica act on every replica's /proxy within a second.

Three replicas as processes sharing one Redis (live state and quota counters), a real Triton
and an agent process reporting to the first replica: every replica routes `echo` to it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from devtools.cluster import Cluster, ReplicaProcess, api
from devtools.fleet import AgentProcess
from devtools.triton_server import EXAMPLE_MODELS, LocalTriton
from devtools.waiting import wait_until

pytestmark = pytest.mark.timeout(300)

ADMIN_PASSWORD = "an-admin-password-for-routing-tests"
NODE = "gpu-policies"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three replicas on one Redis, with one live-state prefix: a report to one is seen by all."""
    prefix = f"policies-{uuid.uuid4().hex[:8]}:"
    root = tmp_path_factory.mktemp("cluster")
    with Cluster(root, MESH_LIVE_STATE_PREFIX=prefix, MESH_ADMIN_PASSWORD=ADMIN_PASSWORD) as cluster:
        cluster.ensure_admin()
        yield cluster


@pytest.fixture(scope="module")
def routed(cluster: Cluster, token: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    work = tmp_path_factory.mktemp("routing")
    triton = LocalTriton(EXAMPLE_MODELS, load_models=["echo"], log_path=work / "triton.log")
    agent = None
    try:
        triton.start()
        registered = cluster.replicas[0].manage("node", "register", NODE, "--address", "127.0.0.1", "--role", "gpu")
        assert registered.returncode == 0, registered.stderr
        node_token = registered.stdout.strip().splitlines()[-1]
        reporting = f"triton={triton.http_url},{triton.metrics_url}"
        agent = AgentProcess(NODE, node_token, cluster.replicas[0], work, "--triton", reporting)
        agent.start()
        for replica in cluster.replicas:
            wait_until(lambda r=replica: infer(r, token).status_code == 200, 90, f"{replica.name} never routed echo")
        yield
    finally:
        if agent is not None:
            agent.stop()
        triton.stop()


def infer(replica: ReplicaProcess, token: str) -> httpx.Response:
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    return httpx.post(
        f"{replica.url}/proxy/v2/models/echo/infer",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def admin_client(replica: ReplicaProcess) -> httpx.Client:
    client = httpx.Client(base_url=replica.url, timeout=10)
    client.get("/admin/login/")
    signed_in = client.post(
        "/admin/login/?next=/admin/",
        data={"username": "admin", "password": ADMIN_PASSWORD, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        headers={"Referer": f"{replica.url}/admin/login/"},
    )
    assert signed_in.status_code == 302, signed_in.text[:500]
    return client


def add_policy_in_admin(client: httpx.Client, name: str, kind: str, spec: str) -> float:
    """Submit the admin's add form; the time the admin answered."""
    client.get("/admin/meshcore/policy/add/")
    saved = client.post(
        "/admin/meshcore/policy/add/",
        data={
            "name": name,
            "kind": kind,
            "spec": spec,
            "enabled": "on",
            "priority": "0",
            "description": "",
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        },
        headers={"Referer": f"{client.base_url}/admin/meshcore/policy/add/"},
    )
    assert saved.status_code == 302, saved.text[-2000:]  # to the list: saved, not the form again with errors
    return time.monotonic()


def answers_within(replicas: list[ReplicaProcess], token: str, status: int, deadline: float) -> dict[str, float]:
    """Per replica, the seconds before the deadline at which its /proxy first answered `status`."""
    seen: dict[str, float] = {}
    while len(seen) < len(replicas) and time.monotonic() < deadline:
        for replica in replicas:
            if replica.name not in seen and infer(replica, token).status_code == status:
                seen[replica.name] = deadline - time.monotonic()
    return seen


def test_an_acl_and_a_quota_written_in_the_admin_act_on_every_replica_within_a_second(cluster, token, routed):
    admin = admin_client(cluster.replicas[1])
    deny = '{"subjects": {"users": ["admin"]}, "models": ["echo"], "actions": ["infer"], "effect": "deny"}'
    written = add_policy_in_admin(admin, "deny-admin-echo", "acl", deny)
    refused = answers_within(cluster.replicas, token, 403, written + 1.0)
    assert sorted(refused) == [r.name for r in cluster.replicas], f"only {sorted(refused)} refused within 1 s"
    assert "deny-admin-echo" in infer(cluster.replicas[2], token).json()["detail"]

    assert api(cluster.replicas[0], token).delete("/policies/deny-admin-echo/").status_code == 204
    for replica in cluster.replicas:
        wait_until(lambda r=replica: infer(r, token).status_code == 200, 5, f"{replica.name} still refused")

    quota = '{"scope": "model", "target": "echo", "max_requests_per_second": 1}'
    written = add_policy_in_admin(admin, "echo-one-per-second", "quota", quota)
    limited = answers_within(cluster.replicas, token, 429, written + 1.0)
    assert sorted(limited) == [r.name for r in cluster.replicas], f"only {sorted(limited)} limited within 1 s"
    assert api(cluster.replicas[0], token).delete("/policies/echo-one-per-second/").status_code == 204
