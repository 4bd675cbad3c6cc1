"""Management commands reach the running replica over its control socket, one kept connection per thread."""

import socket
import threading

import pytest
from django.test import override_settings

from devtools.waiting import wait_until
from meshcore.replication import control as control_module
from meshcore.replication.control import ControlServer, ask_control, close_control_connection, control_socket_path
from meshcore.replication.log import CommandLineLog, install_replica, installed_replica
from meshcore.replication.raft import NoQuorum


class RecordingReplica:
    """Stands in for the running replica behind the socket (the socket protocol is what is tested here)."""

    def __init__(self) -> None:
        self.proposed: list[tuple[str, int]] = []  # (batch key, id of the thread that served it)

    def wait_for_leader(self, timeout: float) -> None:
        pass

    def propose(self, batch: dict) -> dict:
        self.proposed.append((batch["key"], threading.get_ident()))
        if batch.get("refuse"):
            raise NoQuorum("no quorum here", retry_after=3)

        return {"status": "ok", "seq": len(self.proposed)}

    def status(self) -> dict:
        return {"self": "recording", "role": "leader"}


@pytest.fixture
def control(tmp_path):
    with override_settings(MESH_RAFT_DIR=str(tmp_path)):
        replica = RecordingReplica()
        install_replica(replica)
        server = ControlServer(control_socket_path(), installed_replica)
        server.start()
        try:
            yield replica, server
        finally:
            server.stop()
            install_replica(None)
            close_control_connection()


def test_a_thread_keeps_one_connection_for_its_requests(control):
    replica, _ = control
    log = CommandLineLog()
    results = [log.propose({"key": f"k{n}"}, timeout=5) for n in range(5)]
    assert [result["seq"] for result in results] == [1, 2, 3, 4, 5]
    assert [key for key, _ in replica.proposed] == ["k0", "k1", "k2", "k3", "k4"]
    assert len({server_thread for _, server_thread in replica.proposed}) == 1
    assert log.status()["self"] == "recording"


def test_a_restarted_replica_gets_the_request_once_on_a_new_connection(control):
    replica, server = control
    log = CommandLineLog()
    log.propose({"key": "before"}, timeout=5)
    server.stop()
    restarted = ControlServer(control_socket_path(), installed_replica)
    restarted.start()
    try:
        assert log.propose({"key": "after"}, timeout=5)["status"] == "ok"
    finally:
        restarted.stop()
    assert [key for key, _ in replica.proposed] == ["before", "after"]


def test_a_refusal_and_a_garbled_line_are_answered_and_the_connection_goes_on(control):
    replica, _ = control
    with pytest.raises(NoQuorum, match="no quorum here") as refused:
        CommandLineLog().propose({"key": "refused", "refuse": True}, timeout=5)
    assert refused.value.retry_after == 3

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(5)
        connection.connect(str(control_socket_path()))
        reader = connection.makefile("rb")
        connection.sendall(b"{not json\n")
        assert b'"error": "invalid"' in reader.readline()
        connection.sendall(b'{"action": "propose", "batch": {"key": "next"}}\n')
        assert b'"status": "ok"' in reader.readline()
    assert [key for key, _ in replica.proposed] == ["refused", "next"]


def test_a_closed_command_connection_gives_back_the_database_connections_its_writes_used(control, monkeypatch):
    # The real replica projects a write on the serving thread's database connection (Replica.propose).
    replica, _ = control
    closed_by: list[int] = []
    monkeypatch.setattr(control_module.connections, "close_all", lambda: closed_by.append(threading.get_ident()))
    log = CommandLineLog()
    log.propose({"key": "first"}, timeout=5)
    log.propose({"key": "second"}, timeout=5)
    (serving_thread,) = {thread for _, thread in replica.proposed}
    assert closed_by == []  # kept while the command goes on writing

    close_control_connection()  # the command is done

    assert wait_until(lambda: closed_by == [serving_thread], timeout=5), closed_by


def test_no_replica_listening_means_none_is_running(tmp_path):
    with override_settings(MESH_RAFT_DIR=str(tmp_path)):
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(control_socket_path()))  # left behind: bound, never listening
        try:
            assert ask_control({"action": "status"}, timeout=2) is None
        finally:
            stale.close()
            close_control_connection()
