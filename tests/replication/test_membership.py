"""Replicas join and leave a running cluster one at a time; a newcomer catches up from a snapshot."""

from __future__ import annotations

import httpx

from devtools.cluster import Cluster, Writer, api, assert_converged, node_names, wait_until


def members(replica, token) -> set[str]:
    status = api(replica, token).get("/cluster/").json()
    return {status["self"], *(peer["address"] for peer in status["peers"])}


def test_a_replica_joins_catches_up_from_a_snapshot_and_another_leaves(tmp_path):
    cluster = Cluster(tmp_path, size=3, redis_url=None, MESH_RAFT_SNAPSHOT_ENTRIES="10")
    cluster.start()
    try:
        first = cluster.replicas[0]
        assert first.manage("ensure_admin").returncode == 0
        token = first.manage("apitoken", "issue", "admin", "t").stdout.strip().splitlines()[-1]
        for index in range(30):
            assert api(first, token).post("/nodes/", json={"name": f"gpu-{index}", "address": "x"}).status_code == 201

        writer = Writer(cluster, token, "membership")
        writer.start()
        newcomer = cluster.new_replica()
        added = api(first, token).post("/cluster/members/", json={"address": newcomer.raft_address})
        assert added.status_code == 200, added.text
        assert newcomer.raft_address in members(first, token)
        seeded = {f"gpu-{index}" for index in range(30)}
        assert wait_until(lambda: seeded <= node_names(newcomer, token), timeout=30)
        assert "rebuilt the database projection from a snapshot" in newcomer.log()
        again = api(first, token).post("/cluster/members/", json={"address": newcomer.raft_address})
        assert again.status_code == 409

        # PySyncObj refuses to let a leader remove itself: the replica that leaves is a follower.
        leader = api(first, token).get("/cluster/").json()["leader"]
        leaving = next(replica for replica in cluster.replicas[1:3] if replica.raft_address != leader)
        asking = next(replica for replica in cluster.replicas[1:3] if replica is not leaving)
        removed = asking.manage("cluster_member", "remove", leaving.raft_address)
        assert removed.returncode == 0, removed.stderr
        assert wait_until(lambda: leaving.raft_address not in members(first, token))
        leaving.stop()
        # Three members remain (two of them needed for a quorum): writes go on and reach the newcomer.
        assert api(newcomer, token).post("/nodes/", json={"name": "after", "address": "x"}).status_code == 201
        assert wait_until(lambda: api(first, token).get("/nodes/after/").status_code == 200)
        writer.stop()
        assert len(writer.acknowledged) > 10
        assert_converged(cluster, token, [*writer.acknowledged, "after"])
    finally:
        cluster.stop()


def test_membership_changes_need_staff_and_a_valid_address(tmp_path):
    cluster = Cluster(tmp_path, size=1, redis_url=None)
    cluster.start()
    try:
        replica = cluster.replicas[0]
        assert replica.manage("ensure_admin").returncode == 0
        staff = replica.manage("apitoken", "issue", "admin", "t").stdout.strip().splitlines()[-1]
        bad = api(replica, staff).post("/cluster/members/", json={"address": "not an address"})
        assert bad.status_code == 400 and "address" in bad.json()
        anonymous = httpx.post(f"{replica.url}/api/v1/cluster/members/", json={"address": "127.0.0.1:1"})
        assert anonymous.status_code == 401
    finally:
        cluster.stop()
