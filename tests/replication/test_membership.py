"""Replicas join and leave a running cluster one at a time; a newcomer catches up from a snapshot."""

from __future__ import annotations

import itertools
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.cluster import Cluster, Writer, api, assert_converged, node_names
from devtools.ports import free_port
from devtools.waiting import wait_until
from meshcore.replication.addresses import raft_address_problem


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


def test_a_single_replica_refuses_members_that_cannot_join_and_stays_writable(tmp_path):
    # The quick start's one replica: a member that cannot vote would leave it without a quorum for good.
    with Cluster(tmp_path, size=1, redis_url=None) as cluster:
        cluster.ensure_admin()
        replica = cluster.replicas[0]
        token = cluster.issue_token()
        staff = api(replica, token)
        for address in ("0:0", "not an address", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:", "0.0.0.0:4321"):
            bad = staff.post("/cluster/members/", json={"address": address})
            assert bad.status_code == 400 and "address" in bad.json(), (address, bad.text)
        assert staff.delete("/cluster/members/127.0.0.1:0/").status_code == 400
        anonymous = httpx.post(f"{replica.url}/api/v1/cluster/members/", json={"address": "127.0.0.1:1"})
        assert anonymous.status_code == 401
        command = replica.manage("cluster_member", "add", "0:0")
        assert command.returncode == 1 and command.stderr.strip().splitlines()[-1].startswith("Error: The port in")

        nowhere = f"127.0.0.1:{free_port()}"
        refused = staff.post("/cluster/members/", json={"address": nowhere})
        assert refused.status_code == 409, refused.text
        assert f"nothing listens on {nowhere}" in refused.json()["detail"]
        assert f"MESH_RAFT_ADDRESS={nowhere}" in refused.json()["detail"]
        command = replica.manage("cluster_member", "add", nowhere)
        assert command.returncode == 1 and command.stderr.strip().splitlines()[-1].startswith("Error: Refused to add")
        assert staff.post("/nodes/", json={"name": "after-nowhere", "address": "10.0.0.1"}).status_code == 201

        # A running replica with another password is not one of this cluster's.
        stranger = cluster._replica(1, f"127.0.0.1:{free_port()}", [replica.raft_address])
        stranger.env["MESH_RAFT_PASSWORD"] = "another-long-raft-password-for-tests"
        assert stranger.manage("migrate", "--noinput").returncode == 0
        cluster.replicas.append(stranger)  # stopped with the cluster
        stranger.start()
        stranger.wait_http()
        refused = staff.post("/cluster/members/", json={"address": stranger.raft_address})
        assert refused.status_code == 409, refused.text
        assert "another MESH_RAFT_PASSWORD" in refused.json()["detail"]
        assert staff.post("/nodes/", json={"name": "after-stranger", "address": "10.0.0.1"}).status_code == 201
        assert members(replica, token) == {replica.raft_address}


def test_a_single_replica_takes_writes_after_any_sequence_of_membership_calls(tmp_path):
    with Cluster(tmp_path, size=1, redis_url=None) as cluster:
        cluster.ensure_admin()
        replica = cluster.replicas[0]
        token = cluster.issue_token()
        staff = api(replica, token)
        # Loopback addresses only, or ones the API refuses before it connects anywhere: the probe connects to
        # whatever valid address it is given, and tests send traffic to this machine only.
        addresses = st.one_of(
            st.sampled_from(
                [replica.raft_address, f"127.0.0.1:{free_port()}", f"localhost:{free_port()}", "0:0", "127.0.0.1:0"]
            ),
            st.text(max_size=30).filter(lambda text: raft_address_problem(text) is not None),
        )
        names = st.sampled_from(["gpu-a", "gpu-b"])
        calls = st.one_of(
            st.builds(lambda address: ("POST", "/cluster/members/", {"address": address}), addresses),
            st.builds(lambda address: ("DELETE", f"/cluster/members/{quote(address, safe=':')}/", None), addresses),
            st.builds(lambda name: ("POST", "/nodes/", {"name": name, "address": "10.0.0.1"}), names),
            st.builds(lambda name: ("DELETE", f"/nodes/{name}/", None), names),
            st.just(("GET", "/cluster/", None)),
        )
        written = itertools.count()

        @settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(st.lists(calls, min_size=1, max_size=6))
        def still_writable_after(steps: list[tuple[str, str, dict | None]]) -> None:
            for method, path, body in steps:
                answer = staff.request(method, path, json=body)
                assert answer.status_code < 500, (method, path, body, answer.status_code, answer.text)
            answer = staff.post("/nodes/", json={"name": f"after-{next(written)}", "address": "10.0.0.2"})
            assert answer.status_code == 201, (steps, answer.text)

        still_writable_after()
        assert members(replica, token) == {replica.raft_address}
