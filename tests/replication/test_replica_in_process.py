"""Real replicas in this process (PySyncObj on loopback, journals in memory) for what the timing decides."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connections

from devtools.ports import free_port
from devtools.waiting import wait_until
from meshcore.replication import raft
from meshcore.replication.cipher import VERSION, RaftCipher
from meshcore.replication.projection import DatabaseProjection
from meshcore.replication.raft import NoQuorum, RaftSettings, Replica

EMPTY_BATCH = {"key": "k-1", "actor": "test", "ops": [], "events": []}


@contextmanager
def running_replicas(
    count: int, monkeypatch: Any, ciphers: tuple[str, ...] = (), **timing: float
) -> Iterator[list[Replica]]:
    """`count` replicas of one cluster, with `timing` replacing parts of the tuned Raft timing."""
    for name, value in timing.items():
        monkeypatch.setitem(raft.TUNED_TIMING, name, value)
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(count)]
    ciphers = ciphers or ("aes-gcm-siv",) * count
    replicas = [
        Replica(
            RaftSettings(
                address=address,
                peers=tuple(a for a in addresses if a != address),
                password="p" * 16,
                data_dir=None,
                cipher=cipher,
            ),
            DatabaseProjection(),
        )
        for address, cipher in zip(addresses, ciphers, strict=True)
    ]
    for replica in replicas:
        replica.start()
    try:
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()


@pytest.mark.django_db
def test_a_write_during_an_election_says_no_leader_and_when_to_retry(monkeypatch):
    # Two replicas that connect at once but hold their first election for a minute.
    with running_replicas(2, monkeypatch, raftMinTimeout=60.0, raftMaxTimeout=61.0, connectionTimeout=61.0) as replicas:
        deadline = time.monotonic() + 10
        while not replicas[0]._sync_obj.hasQuorum and time.monotonic() < deadline:
            time.sleep(0.05)
        assert replicas[0]._sync_obj.hasQuorum

        with pytest.raises(NoQuorum) as refused:
            replicas[0].propose(EMPTY_BATCH, timeout=1)

    assert str(refused.value).startswith("No leader yet: the replicas are electing one.")
    assert refused.value.retry_after == 1


@pytest.mark.django_db(transaction=True)
def test_a_lone_replica_commits_without_waiting_for_its_tick_period(monkeypatch):
    # Nothing answers a lone leader, so nothing but this replica's own wake-up ends its tick early.
    with running_replicas(1, monkeypatch, autoTickPeriod=2.0) as (replica,):
        replica.wait_for_leader(timeout=30)
        replica.propose({**EMPTY_BATCH, "key": "warm-up"}, timeout=10)

        started = time.monotonic()
        results = [replica.propose({**EMPTY_BATCH, "key": f"k-{index}"}, timeout=10) for index in range(3)]
        took = time.monotonic() - started

    assert [result["status"] for result in results] == ["ok", "ok", "ok"]
    # Three commits, each of which would otherwise wait up to a tick period of 2 s.
    assert took < 1.0, f"three commits took {took:.2f} s"


@pytest.mark.django_db(transaction=True)
def test_a_writer_writes_its_own_committed_batch_and_the_projector_the_rest(monkeypatch):
    with running_replicas(1, monkeypatch) as (replica,):
        replica.wait_for_leader(timeout=30)
        writers: dict[str, str] = {}  # batch key -> the thread that wrote it to the database
        write_group = replica.projector._apply

        def recording(group):
            for batch, _ in group:
                writers[batch["key"]] = threading.current_thread().name
            return write_group(group)

        replica.projector._apply = recording
        replica.log.apply_batch({**EMPTY_BATCH, "key": "nobody-waits"}, callback=lambda result, error: None)
        deadline = time.monotonic() + 5
        # Written and announced: the projector holds its lock while it announces, and a writer that finds it
        # held leaves its batch to the projector.
        while ("nobody-waits" not in writers or replica.projector._pending or replica.projector._writing.locked()) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.02)

        def write() -> None:
            try:
                replica.propose({**EMPTY_BATCH, "key": "awaited"}, timeout=10)
            finally:
                connections.close_all()  # as Django does at the end of a request

        writer = threading.Thread(target=write)
        writer.name = "api-writer"
        writer.start()
        writer.join(15)

    assert (writers["nobody-waits"], writers["awaited"]) == ("infermesh-projector", "api-writer")


@pytest.mark.django_db(transaction=True)
def test_followers_hear_of_a_leaders_own_commit_with_the_next_heartbeat_and_of_theirs_at_once(monkeypatch):
    with running_replicas(3, monkeypatch) as replicas:
        replicas[0].wait_for_leader(timeout=30)
        leader = next(replica for replica in replicas if replica.status()["role"] == "leader")
        follower, other = (replica for replica in replicas if replica is not leader)
        for replica in replicas:
            # Heartbeats every 2 s from now on (elections far later), so what the followers learn between is
            # what the leader sent them for the commit itself.
            conf = replica._sync_obj._SyncObj__conf
            conf.appendEntriesPeriod, conf.raftMinTimeout, conf.raftMaxTimeout = 2.0, 60.0, 61.0
        time.sleep(0.2)  # the last heartbeat on the old period goes out
        wait_until(lambda: {r.state.seq for r in replicas} == {leader.state.seq}, 5, "the followers did not catch up")

        started = time.monotonic()
        leader.propose({**EMPTY_BATCH, "key": "leaders-own"}, timeout=10)
        time.sleep(0.3)
        # Its writer is on the leader: the followers learn of the commit later, with the next heartbeat.
        assert follower.state.seq < leader.state.seq and other.state.seq < leader.state.seq
        wait_until(
            lambda: follower.state.seq == leader.state.seq, 5, "the follower did not learn of the commit", interval=0.01
        )
        assert time.monotonic() - started > 0.3

        started = time.monotonic()
        follower.propose({**EMPTY_BATCH, "key": "followers-own"}, timeout=10)
        # A follower's writer waits for the commit: the leader told it at once, not with a heartbeat.
        assert time.monotonic() - started < 1.0
        assert follower.state.seq == leader.state.seq


@pytest.mark.django_db(transaction=True)
def test_replicas_sending_either_cipher_form_one_cluster_from_their_first_connection(monkeypatch):
    sealed: dict[int, set[bytes]] = {}  # id of a replica's cipher -> the first byte of every token it sealed
    real_seal = RaftCipher.encrypt_at_time

    def recording_seal(cipher: RaftCipher, data: bytes, current_time: int) -> bytes:
        token = real_seal(cipher, data, current_time)
        sealed.setdefault(id(cipher), set()).add(token[:1])
        return token

    monkeypatch.setattr(RaftCipher, "encrypt_at_time", recording_seal)
    # The third still sends PySyncObj's Fernet (MESH_RAFT_CIPHER=fernet), as in a rolling upgrade from a release
    # before infermesh's cipher.
    with running_replicas(3, monkeypatch, ciphers=("aes-gcm-siv", "aes-gcm-siv", "fernet")) as replicas:
        replicas[0].wait_for_leader(timeout=30)
        for index, replica in enumerate(replicas):
            replica.propose({**EMPTY_BATCH, "key": f"from-{index}"}, timeout=10)
        wait_until(lambda: len({replica.digest() for replica in replicas}) == 1, 5, "the replicas did not converge")
        by_replica = [sealed.get(id(replica._sync_obj.encryptor._inner)) for replica in replicas]

    assert by_replica == [{VERSION}, {VERSION}, {b"g"}]  # b"g": how a Fernet token starts
