"""Acknowledged writes survive a killed leader and repeated whole-cluster crashes.

A writer runs throughout each scenario; at the end every acknowledged write must be in every
replica's state and all digests must be equal.
"""

from __future__ import annotations

from devtools.cluster import Writer, assert_converged
from devtools.waiting import wait_until


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
