"""Three replicas as separate processes: writes on any replica reach all, once, or not at all."""

from __future__ import annotations

import uuid

import httpx

from devtools.cluster import api
from devtools.waiting import wait_until

ADMIN_PASSWORD = "an-admin-password-for-tests"


def test_it_shows_a_write_made_on_a_follower_on_every_replica(cluster, token):
    follower = cluster.followers()[0]
    created = api(follower, token).post(
        "/policies/", json={"name": "lb-resnet", "kind": "load_balancing", "spec": {"model": "resnet"}}
    )
    assert created.status_code == 201, created.text
    # Read your writes: the replica that answered has it at once.
    assert api(follower, token).get("/policies/lb-resnet/").status_code == 200
    for replica in cluster.replicas:
        assert wait_until(lambda r=replica: api(r, token).get("/policies/lb-resnet/").status_code == 200), replica.name


def test_every_replica_reports_the_same_digest(cluster, token):
    api(cluster.replicas[2], token).post("/nodes/", json={"name": "gpu-digest", "address": "10.1.0.1"})

    def digests():
        return {api(r, token).get("/cluster/").json()["digest"] for r in cluster.replicas}

    assert wait_until(lambda: len(digests()) == 1)
    statuses = [api(r, token).get("/cluster/").json() for r in cluster.replicas]
    assert sum(s["role"] == "leader" for s in statuses) == 1
    assert len({s["leader"] for s in statuses}) == 1
    assert all(s["has_quorum"] and s["state_seq"] == s["projected_seq"] for s in statuses)


def test_it_refuses_a_stale_version_written_on_another_replica(cluster, token):
    one, two = cluster.replicas[0], cluster.replicas[1]
    api(one, token).post("/models/", json={"name": "bert", "platform": "onnxruntime"})
    model = api(one, token).get("/models/", params={"name": "bert"}).json()["results"][0]
    # Another replica's reads may trail this write by up to 70 ms (docs/replication.md): wait until it has it.
    assert wait_until(lambda: api(two, token).get(f"/models/{model['id']}/").status_code == 200)
    assert api(two, token).patch(f"/models/{model['id']}/", json={"description": "a", "version": 1}).status_code == 200
    stale = api(one, token).patch(f"/models/{model['id']}/", json={"description": "b", "version": 1})
    assert stale.status_code == 409
    assert "version 1" in stale.json()["detail"]
    assert wait_until(lambda: api(one, token).get(f"/models/{model['id']}/").json()["description"] == "a")


def test_it_applies_a_replayed_idempotency_key_once(cluster, token):
    key = str(uuid.uuid4())
    body = {"name": "retried", "kind": "quota", "spec": {"scope": "global", "max_concurrent": 3}}
    first = api(cluster.replicas[0], token).post("/policies/", json=body, headers={"Idempotency-Key": key})
    again = api(cluster.replicas[0], token).post("/policies/", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201
    assert again.status_code == 201  # the same outcome, not a duplicate-name conflict
    assert again.json()["version"] == first.json()["version"] == 1
    events = api(cluster.replicas[0], token).get("/events/", params={"type": "POLICY_CREATED"}).json()["results"]
    assert [e["data"]["policy"] for e in events].count("retried") == 1


def test_a_user_created_on_one_replica_logs_in_on_another(cluster, token):
    made = cluster.replicas[2].manage("shell", "-c", _CREATE_USER)
    assert made.returncode == 0, made.stderr
    for replica in cluster.replicas:
        assert wait_until(lambda r=replica: _login(r, "carol", "carol-password-123").status_code == 302), replica.name


def test_a_token_issued_on_one_replica_works_on_every_other(cluster, token):
    issued = api(cluster.replicas[0], token).post("/tokens/", json={"name": "everywhere"})
    assert issued.status_code == 201
    value = issued.json()["token"]
    for replica in cluster.replicas:
        assert wait_until(lambda r=replica: api(r, value).get("/nodes/").status_code == 200), replica.name


def test_the_cluster_page_names_the_leader_and_peers(cluster, token):
    status = api(cluster.replicas[0], token).get("/cluster/").json()
    assert status["self"] == cluster.replicas[0].raft_address
    assert {p["address"] for p in status["peers"]} == {r.raft_address for r in cluster.replicas[1:]}
    assert all(p["connected"] and p["connected_since"] for p in status["peers"])
    assert status["term"] >= 1 and status["commit_index"] >= status["state_seq"]
    assert status["leader_since"] and status["role_since"]
    leader = cluster.wait_for_leader()
    leader_view = api(leader, token).get("/cluster/").json()
    assert all(isinstance(p["behind"], int) and p["behind"] >= 0 for p in leader_view["peers"])


_CREATE_USER = (
    "from django.contrib.auth import get_user_model; "
    "get_user_model().objects.create_user('carol', password='carol-password-123', is_staff=True)"
)


def _login(replica, username, password):
    client = httpx.Client(base_url=replica.url, timeout=10)
    page = client.get("/admin/login/")
    csrf = client.cookies["csrftoken"]
    return (
        client.post(
            "/admin/login/?next=/admin/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": csrf},
            headers={"Referer": f"{replica.url}/admin/login/"},
        )
        if page.status_code == 200
        else page
    )
