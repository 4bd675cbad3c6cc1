"""Replicas as processes under failure: lost quorum, restarts, a wrong password; events once each."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from channels_redis.core import RedisChannelLayer

from devtools.cluster import REDIS_URL, Cluster, Writer, api, assert_converged, lose_database
from devtools.ports import free_port
from devtools.waiting import wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    with Cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        cluster.ensure_admin()
        yield cluster


class EventListener:
    """A subscriber on the shared Redis channel layer, as the dashboard will be."""

    def __init__(self) -> None:
        self.layer = RedisChannelLayer(hosts=[REDIS_URL], prefix="infermesh")
        self.loop = asyncio.new_event_loop()
        self.channel = self.loop.run_until_complete(self.layer.new_channel())
        self.loop.run_until_complete(self.layer.group_add("mesh.events", self.channel))

    def collect(self, seconds: float) -> list[dict]:
        async def gather() -> list[dict]:
            messages = []
            deadline = time.monotonic() + seconds
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    messages.append(await asyncio.wait_for(self.layer.receive(self.channel), remaining))
                except TimeoutError:
                    break
            return messages

        return self.loop.run_until_complete(gather())


def test_each_change_reaches_a_subscriber_once_from_three_replicas(cluster, token):
    listener = EventListener()
    created = api(cluster.replicas[1], token).post("/nodes/", json={"name": "gpu-once", "address": "10.2.0.1"})
    assert created.status_code == 201
    messages = [m for m in listener.collect(3) if m["event_type"] == "NODE_JOINED"]
    assert [m["node"] for m in messages] == ["gpu-once"]
    assert messages[0]["actor"] == "admin"
    # Every replica recorded it in its own database, once.
    for replica in cluster.replicas:
        events = api(replica, token).get("/events/", params={"type": "NODE_JOINED", "node": "gpu-once"})
        assert wait_until(
            lambda r=replica: api(r, token).get("/events/", params={"node": "gpu-once"}).json()["count"] == 1
        )
        assert events.status_code == 200


def test_a_restarted_replica_replays_its_journal_without_repeating_events(cluster, token):
    follower = cluster.followers()[0]
    before = api(follower, token).get("/events/").json()["count"]
    listener = EventListener()
    follower.stop()
    follower.start()
    follower.wait_http()
    messages = [m for m in listener.collect(3) if m["event_type"] != "LEADER_CHANGED"]
    assert messages == []
    after = api(follower, token).get("/events/").json()
    assert after["count"] - before == sum(
        e["type"] == "LEADER_CHANGED" for e in after["results"][: after["count"] - before]
    )
    assert wait_until(lambda: len({api(r, token).get("/cluster/").json()["digest"] for r in cluster.replicas}) == 1)


def test_without_quorum_writes_get_503_and_nothing_is_written(cluster, token):
    leader = cluster.wait_for_leader()
    # A follower survives: it must stop naming the leader it can no longer reach.
    survivor = next(r for r in cluster.replicas if r is not leader)
    lost = [r for r in cluster.replicas if r is not survivor]
    writer = Writer(cluster, token, "quorum")
    writer.start()
    assert wait_until(lambda: len(writer.acknowledged) >= 5, timeout=20)
    for replica in lost:
        replica.kill()
    assert wait_until(lambda: not api(survivor, token).get("/cluster/").json()["has_quorum"], timeout=15)
    assert wait_until(lambda: api(survivor, token).get("/cluster/").json()["leader"] is None, timeout=10)
    refused = api(survivor, token).post(
        "/policies/", json={"name": "no-quorum", "kind": "quota", "spec": {"scope": "global", "max_concurrent": 1}}
    )
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert "quorum" in refused.json()["detail"]
    # Reads are still served, and nothing was half-written.
    assert api(survivor, token).get("/policies/no-quorum/").status_code == 404
    for replica in lost:
        replica.start()
    for replica in lost:
        replica.wait_http()
    cluster.wait_for_leader()
    assert wait_until(lambda: api(survivor, token).get("/cluster/").json()["has_quorum"], timeout=15)
    # A fresh name each run: a rerun of this test meets what the first run wrote.
    after = {
        "name": f"after-quorum-{uuid.uuid4().hex[:6]}",
        "kind": "quota",
        "spec": {"scope": "global", "max_concurrent": 1},
    }

    def resumed() -> bool:
        # A replica just back may answer 503 with Retry-After until it has caught up; a client tries again.
        # 409: an earlier try that timed out did commit (the name is this run's own).
        answer = api(lost[0], token).post("/policies/", json=after)
        assert answer.status_code in (201, 409, 503), answer.text
        return answer.status_code != 503

    assert wait_until(resumed, timeout=20), "the replica back from the outage never took a write"
    count = len(writer.acknowledged)
    assert wait_until(lambda: len(writer.acknowledged) > count + 3, timeout=20), "writes did not resume"
    writer.stop()
    assert writer.refused > 0  # the writer met the lost quorum too
    assert_converged(cluster, token, writer.acknowledged)
    for replica in cluster.replicas:
        assert api(replica, token).get("/policies/no-quorum/").status_code == 404


def test_a_replica_with_the_wrong_password_is_refused_and_logged(cluster, tmp_path, token):
    intruder = Cluster(tmp_path, size=1, redis_url=None).replicas[0]
    # PySyncObj connects only towards addresses that sort below its own: make the intruder the caller.
    while intruder.raft_address <= max(r.raft_address for r in cluster.replicas):
        intruder.raft_address = f"127.0.0.1:{free_port()}"
    intruder.env.update(
        MESH_RAFT_ADDRESS=intruder.raft_address,
        MESH_RAFT_PEERS=",".join(r.raft_address for r in cluster.replicas),
        MESH_RAFT_PASSWORD="not-the-cluster-password-at-all",
    )
    assert intruder.manage("migrate", "--noinput").returncode == 0
    writer = Writer(cluster, token, "intruded")
    writer.start()
    intruder.start()
    try:
        intruder.wait_http()
        assert wait_until(lambda: any("do not decrypt" in r.log() for r in cluster.replicas), timeout=15), (
            "no replica logged the refused connection"
        )
        status = api(cluster.replicas[0], token).get("/cluster/").json()
        assert intruder.raft_address not in {p["address"] for p in status["peers"]}
        # The intruder, whose handshakes are dropped, says why too.
        assert wait_until(lambda: "never completes the encrypted handshake" in intruder.log(), timeout=30)
    finally:
        intruder.kill()
        writer.stop()
    # The cluster went on committing throughout, and nothing of the intruder got in.
    assert len(writer.acknowledged) > 5
    assert_converged(cluster, token, writer.acknowledged)
    assert (
        api(cluster.replicas[0], token).post("/nodes/", json={"name": "gpu-after-intruder", "address": "x"}).status_code
        == 201
    )


def test_a_pending_write_does_not_stop_the_replica_serving_others(cluster, token):
    import signal
    import threading

    leader = cluster.wait_for_leader()
    followers = [r for r in cluster.replicas if r is not leader]
    outcome = {}

    def write() -> None:
        body = {"name": "pending", "kind": "quota", "spec": {"scope": "global", "max_concurrent": 1}}
        outcome["status"] = api(leader, token).post("/policies/", json=body).status_code

    for follower in followers:
        follower.process.send_signal(signal.SIGSTOP)  # alive to TCP, silent to Raft
    try:
        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.5)
        started = time.monotonic()
        read = api(leader, token).get("/nodes/")
        read_seconds = time.monotonic() - started
        assert writer.is_alive(), "the write should still be waiting for a quorum"
    finally:
        for follower in followers:
            follower.process.send_signal(signal.SIGCONT)
    writer.join(timeout=30)
    assert read.status_code == 200
    assert read_seconds < 2, f"a read waited {read_seconds:.1f}s behind a pending write"
    assert outcome["status"] in (201, 503)


def test_a_replica_rebuilds_a_lost_database_from_its_journal(cluster, token):
    follower = cluster.followers()[0]
    listener = EventListener()
    api(follower, token).post("/models/", json={"name": f"rebuilt-{time.monotonic_ns()}", "platform": "python"})
    # Its event goes out within the projectors' coalescing window: heard here before the replica stops.
    assert [m["event_type"] for m in listener.collect(1) if m["event_type"] != "LEADER_CHANGED"] == ["MODEL_CREATED"]
    follower.stop()
    lose_database(follower)
    follower.start()
    follower.wait_http()
    # Serving starts before the rebuilt projection has the API token: wait until it answers.
    assert wait_until(lambda: api(follower, token).get("/nodes/").status_code == 200, timeout=60)

    def listing(replica, path):
        return sorted(
            item.get("name") for item in api(replica, token).get(path, params={"page_size": 1000}).json()["results"]
        )

    # Compared afresh each time: the other replica may itself still be applying a late commit.
    reference = next(replica for replica in cluster.replicas if replica is not follower)
    for path in ("/models/", "/policies/", "/nodes/"):
        agreed = wait_until(lambda p=path: listing(follower, p) == listing(reference, p), timeout=30)
        assert agreed, (
            path,
            {r.name: listing(r, path) for r in cluster.replicas},
            {r.name: api(r, token).get("/cluster/").json() for r in cluster.replicas},
        )
    # Rebuilding is history: nothing is announced again.
    assert [m for m in listener.collect(2) if m["event_type"] != "LEADER_CHANGED"] == []
