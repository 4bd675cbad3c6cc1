"""Acknowledged writes survive a killed leader and repeated whole-cluster crashes.

A writer runs throughout each scenario; at the end every acknowledged write must be in every
replica's state and all digests must be equal.
"""

from __future__ import annotations

import itertools
import threading
import time

import httpx
import pytest

from tests.replication.cluster import Cluster
from tests.replication.test_cluster_writes import api, wait_until


class Writer(threading.Thread):
    """Creates nodes round-robin on the running replicas; remembers which were acknowledged."""

    def __init__(self, cluster: Cluster, token: str, prefix: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.token, self.prefix = cluster, token, prefix
        self.acknowledged: list[str] = []
        self.refused = 0
        self._halt = threading.Event()

    def run(self) -> None:
        for number in itertools.count():
            if self._halt.is_set():
                return
            running = self.cluster.running()
            if not running:
                time.sleep(0.05)
                continue
            name = f"{self.prefix}-{number}"
            try:
                answer = api(running[number % len(running)], self.token).post(
                    "/nodes/", json={"name": name, "address": "10.9.0.1"}, headers={"Idempotency-Key": f"key-{name}"}
                )
            except httpx.HTTPError:
                self.refused += 1
                continue
            if answer.status_code == 201:
                self.acknowledged.append(name)
            else:
                self.refused += 1
                time.sleep(0.05)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


def node_names(replica, token) -> set[str]:
    answer = api(replica, token).get("/nodes/", params={"page_size": 1000})
    return {node["name"] for node in answer.json()["results"]}


def assert_converged(cluster: Cluster, token: str, acknowledged: list[str]) -> None:
    def converged() -> bool:
        try:
            views = [api(r, token).get("/cluster/").json() for r in cluster.replicas]
        except (httpx.HTTPError, ValueError):
            return False
        # The same state everywhere, and every database has applied all of it.
        return len({v["digest"] for v in views}) == 1 and all(v["projected_seq"] == v["state_seq"] for v in views)

    assert wait_until(converged, timeout=30), "replicas did not reach the same state"
    for replica in cluster.replicas:
        missing = set(acknowledged) - node_names(replica, token)
        assert not missing, f"{replica.name} lost acknowledged writes: {sorted(missing)[:5]}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("failover"), redis_url=None)
    cluster.start()
    assert cluster.replicas[0].manage("ensure_admin").returncode == 0
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def token(cluster):
    return cluster.replicas[0].manage("apitoken", "issue", "admin", "t").stdout.strip().splitlines()[-1]


def test_a_killed_leader_is_replaced_and_loses_no_acknowledged_write(cluster, token):
    writer = Writer(cluster, token, "failover")
    writer.start()
    assert wait_until(lambda: len(writer.acknowledged) >= 10, timeout=20)
    old_leader = cluster.wait_for_leader()
    old_leader.kill()
    # How fast is for benchmarks/replication.py; here only that a new leader takes over.
    new_leader = cluster.wait_for_leader(timeout=30)
    assert new_leader is not old_leader
    count = len(writer.acknowledged)
    assert wait_until(lambda: len(writer.acknowledged) > count + 5, timeout=15), "writes did not resume"
    old_leader.start()
    old_leader.wait_http()
    writer.stop()
    assert_converged(cluster, token, writer.acknowledged)


def test_whole_cluster_crashes_lose_no_acknowledged_write(cluster, token):
    acknowledged: list[str] = []
    for round_number in range(3):
        writer = Writer(cluster, token, f"crash{round_number}")
        writer.start()
        assert wait_until(lambda w=writer: len(w.acknowledged) >= 5, timeout=20)
        for replica in cluster.replicas:  # all at once, mid-write
            replica.process.kill()
        for replica in cluster.replicas:
            replica.process.wait()
        writer.stop()
        acknowledged += writer.acknowledged
        for replica in cluster.replicas:
            replica.start()
        for replica in cluster.replicas:
            replica.wait_http()
        cluster.wait_for_leader(timeout=20)
        assert_converged(cluster, token, acknowledged)
