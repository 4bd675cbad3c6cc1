"""A write while the replicas elect a leader is refused as exactly that, not as a lost quorum."""

from __future__ import annotations

import time

import pytest

from meshcore.replication import raft
from meshcore.replication.raft import NoQuorum, RaftSettings, Replica
from meshcore.replication.service import DatabaseProjection
from tests.site.helpers import free_port


@pytest.mark.django_db
def test_a_write_during_an_election_says_no_leader_and_when_to_retry(monkeypatch):
    # Two real replicas that connect at once but hold their first election for a minute.
    monkeypatch.setitem(raft.TUNED_TIMING, "raftMinTimeout", 60.0)
    monkeypatch.setitem(raft.TUNED_TIMING, "raftMaxTimeout", 61.0)
    monkeypatch.setitem(raft.TUNED_TIMING, "connectionTimeout", 61.0)
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    replicas = [
        Replica(
            RaftSettings(
                address=address, peers=tuple(a for a in addresses if a != address), password="p" * 16, data_dir=None
            ),
            DatabaseProjection(),
        )
        for address in addresses
    ]
    for replica in replicas:
        replica.start()
    try:
        deadline = time.monotonic() + 10
        while not replicas[0]._sync_obj.hasQuorum and time.monotonic() < deadline:
            time.sleep(0.05)
        assert replicas[0]._sync_obj.hasQuorum

        with pytest.raises(NoQuorum) as refused:
            replicas[0].propose({"key": "k-1", "actor": "test", "ops": [], "events": []}, timeout=1)

        assert str(refused.value).startswith("No leader yet: the replicas are electing one.")
        assert refused.value.retry_after == 1
    finally:
        for replica in replicas:
            replica.stop()
