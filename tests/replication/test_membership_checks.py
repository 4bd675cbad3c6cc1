"""A membership change must leave a quorum the cluster can reach: addresses, the newcomer probe, the take-back.

Real PySyncObj replicas in this process (on loopback); the whole-process version is test_membership.py.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devtools.ports import free_port
from meshcore.replication import raft
from meshcore.replication.addresses import raft_address_problem
from meshcore.replication.membership import (
    MembershipRefused,
    ProbedReplica,
    ProbeFailed,
    check_add,
    check_remove,
    probe_replica,
)
from meshcore.replication.projection import DatabaseProjection
from meshcore.replication.raft import RaftSettings, Replica

PASSWORD = "a-long-shared-raft-password-for-tests"
BATCH = {"key": "k-1", "actor": "test", "ops": [], "events": []}


@contextmanager
def replica(
    peers: tuple[str, ...] = (), password: str = PASSWORD, data_dir: Path | None = None, address: str | None = None
) -> Iterator[Replica]:
    running = Replica(
        RaftSettings(
            address=address or f"127.0.0.1:{free_port()}",
            peers=peers,
            password=password,
            data_dir=data_dir,
            write_timeout=2,
        ),
        DatabaseProjection(),
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize(
    "address",
    [
        "0:0",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:04321",
        "127.0.0.1:",
        ":4321",
        "127.0.0.1",
        "not an address",
        " 127.0.0.1:4321",
        "0.0.0.0:4321",
        "::0:4321",
        "[::1]:4321",
        "10.1:4321",
        "256.0.0.1:4321",
        "host/name:4321",
        "-host:4321",
        "127.0.0.1:4321x",
        "127.0.0.1:٤٣٢١",
        "",
    ],
)
def test_it_refuses_what_is_not_a_replicas_host_and_port(address):
    assert raft_address_problem(address)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1:4321", "10.0.0.5:1", "replica-a:65535", "replica_b.mesh.internal:7001", "::1:4321", "localhost:7001"],
)
def test_it_accepts_host_and_port(address):
    assert raft_address_problem(address) is None


def test_it_counts_a_newcomer_only_when_the_new_configuration_keeps_a_reachable_quorum():
    one = {"a:1"}
    newcomer = ProbedReplica(address="d:1", peers=frozenset({"a:1"}))
    check_add("d:1", one, one, lambda: newcomer)

    def nothing_there() -> ProbedReplica:
        raise ProbeFailed("nothing listens on d:1 (connection refused)")

    with pytest.raises(MembershipRefused, match=r"nothing listens on d:1.*MESH_RAFT_ADDRESS=d:1"):
        check_add("d:1", one, one, nothing_there)
    with pytest.raises(MembershipRefused, match="calls itself e:1"):
        check_add("d:1", one, one, lambda: ProbedReplica(address="e:1", peers=frozenset({"a:1"})))
    with pytest.raises(MembershipRefused, match="does not count b:1"):
        check_add("d:1", {"a:1", "b:1", "c:1"}, {"a:1", "b:1", "c:1"}, lambda: newcomer)
    # Four members need three: with one of the three down, the newcomer makes that quorum.
    full = ProbedReplica(address="d:1", peers=frozenset({"a:1", "b:1", "c:1"}))
    check_add("d:1", {"a:1", "b:1", "c:1"}, {"a:1", "b:1"}, lambda: full)
    # Five need three: with three of the four down, the newcomer makes only two.
    five = ProbedReplica(address="d:1", peers=frozenset({"a:1", "b:1", "c:1", "e:1"}))
    with pytest.raises(MembershipRefused, match="needs 3 for a quorum, but only 2"):
        check_add("d:1", {"a:1", "b:1", "c:1", "e:1"}, {"a:1"}, lambda: five)


def test_it_refuses_a_removal_that_leaves_no_reachable_quorum_or_removes_the_leader():
    members = {"a:1", "b:1", "c:1"}
    check_remove("c:1", members, {"a:1", "b:1"}, leader="a:1")  # c is down: a and b remain, both reachable
    with pytest.raises(MembershipRefused, match="need 2 for a quorum, but only 1 of them are reachable"):
        check_remove("c:1", members, {"a:1", "c:1"}, leader="a:1")  # b is down: a alone would remain
    with pytest.raises(MembershipRefused, match="need 2 for a quorum, but only 1"):
        check_remove("c:1", {"a:1", "b:1", "c:1", "d:1"}, {"a:1", "c:1"}, leader="a:1")
    with pytest.raises(MembershipRefused, match="leads the cluster"):
        check_remove("a:1", members, members, leader="a:1")


@pytest.mark.django_db(transaction=True)
def test_the_probe_proves_a_live_replica_with_the_clusters_password():
    me = f"127.0.0.1:{free_port()}"
    with replica(peers=(me,)) as newcomer:
        probed = probe_replica(newcomer.settings.address, PASSWORD)
        assert probed == ProbedReplica(address=newcomer.settings.address, peers=frozenset({me}))
        # Fernet, as a replica with MESH_RAFT_CIPHER=fernet sends: every replica reads both.
        assert probe_replica(newcomer.settings.address, PASSWORD, "fernet").address == newcomer.settings.address

        with pytest.raises(ProbeFailed, match="another MESH_RAFT_PASSWORD"):
            probe_replica(newcomer.settings.address, "another-password-of-16-chars")


def test_the_probe_tells_nothing_listening_from_something_that_is_not_a_replica():
    port = free_port()
    with pytest.raises(ProbeFailed, match="nothing listens"):
        probe_replica(f"127.0.0.1:{port}", PASSWORD)

    with socket.create_server(("127.0.0.1", port)) as server:
        # Something that accepts and says nothing (a stopped process, another service).
        probed = threading.Event()

        def silent() -> None:
            connection, _ = server.accept()
            with connection:
                probed.wait(5)

        threading.Thread(target=silent, daemon=True).start()
        with pytest.raises(ProbeFailed, match="did not answer within 1 s"):
            probe_replica(f"127.0.0.1:{port}", PASSWORD, timeout=1)
        probed.set()

        # Something that answers with garbage: the answer does not open with the password.
        def garbage() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(1 << 16)
                connection.sendall(b"\x10\x00\x00\x00" + b"HTTP/1.1 400 Bad")

        threading.Thread(target=garbage, daemon=True).start()
        with pytest.raises(ProbeFailed, match="do not open with this password"):
            probe_replica(f"127.0.0.1:{port}", PASSWORD, timeout=2)


@pytest.mark.django_db(transaction=True)
def test_a_lone_replica_refuses_an_address_where_nothing_runs_and_stays_writable():
    with replica() as lone:
        lone.wait_for_leader(10)
        absent = f"127.0.0.1:{free_port()}"

        with pytest.raises(MembershipRefused, match=f"Refused to add {absent}: nothing listens"):
            lone.change_membership("add", absent)

        assert lone.status()["peers"] == []
        assert lone.propose({**BATCH, "key": "after"}, timeout=5)["status"] == "ok"


@pytest.mark.django_db(transaction=True)
def test_a_lone_replica_takes_back_an_addition_that_never_commits(monkeypatch, tmp_path):
    # The newcomer answers the probe, then is gone before it acknowledges its admission.
    vanished = f"127.0.0.1:{free_port()}"
    monkeypatch.setattr(
        raft.Replica, "_probe", lambda self, address, members: ProbedReplica(address, frozenset(members))
    )
    address = f"127.0.0.1:{free_port()}"
    with replica(data_dir=tmp_path, address=address) as lone:
        lone.wait_for_leader(10)
        term = lone.status()["term"]

        with pytest.raises(MembershipRefused, match="taken back before it committed"):
            lone.change_membership("add", vanished, timeout=2)

        status = lone.status()
        assert (status["role"], status["peers"], status["has_quorum"]) == ("leader", [], True)
        assert status["term"] > term  # a new term: a newcomer that got the entry replaces it if ever admitted
        assert lone.propose({**BATCH, "key": "after"}, timeout=5)["status"] == "ok"

    # The journal no longer holds the addition: a restart stays alone and writable.
    with replica(data_dir=tmp_path, address=address) as restarted:
        restarted.wait_for_leader(10)
        assert restarted.status()["peers"] == []
        assert restarted.propose({**BATCH, "key": "after-restart"}, timeout=5)["status"] == "ok"
