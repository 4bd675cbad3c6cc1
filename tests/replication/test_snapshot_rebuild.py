"""A replica whose database is lost rebuilds it from the snapshot and the journal after it."""

from __future__ import annotations

import httpx

from devtools.cluster import Cluster, api, lose_database
from devtools.waiting import wait_until


def test_it_rebuilds_a_lost_database_from_a_snapshot(tmp_path):
    cluster = Cluster(tmp_path, size=1, redis_url=None, MESH_RAFT_SNAPSHOT_ENTRIES="10")
    replica = cluster.replicas[0]
    cluster.start()
    try:
        assert replica.manage("ensure_admin").returncode == 0
        token = replica.manage("apitoken", "issue", "admin", "t").stdout.strip().splitlines()[-1]
        for index in range(40):
            assert api(replica, token).post("/nodes/", json={"name": f"gpu-{index}", "address": "x"}).status_code == 201
        snapshot = replica.data_dir / "raft" / "snapshot"
        assert wait_until(snapshot.exists, timeout=10), "no snapshot was written"
        before = api(replica, token).get("/cluster/").json()
        replica.stop()
        lose_database(replica)
        replica.start()
        replica.wait_http()

        def rebuilt() -> bool:
            try:
                return api(replica, token).get("/nodes/", params={"page_size": 100}).json()["count"] == 40
            except (httpx.HTTPError, KeyError):
                return False  # the token itself comes back with the rebuild

        assert wait_until(rebuilt, timeout=20)
        assert "rebuilt the database projection from a snapshot" in replica.log()
        after = api(replica, token).get("/cluster/").json()
        assert after["state_seq"] >= before["state_seq"]
        assert after["projected_seq"] == after["state_seq"]
    finally:
        cluster.stop()
