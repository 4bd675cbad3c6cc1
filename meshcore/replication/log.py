"""Which log this process writes to: its Raft replica, a local log, or the replica on this host.

- `serve` runs a Raft `Replica` (one per control-plane process) and installs it here.
- Management commands in another process send their batches to the running replica over
  its control socket (`control`); with no replica running they start one for the command.
- The test suite uses `LocalLog` (MESH_REPLICATION=local): the same state machine, the
  same projection and events, applied synchronously in the caller's transaction.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.db import transaction

from meshcore.models import ProjectionState
from meshcore.replication.control import ask_control
from meshcore.replication.desired import DesiredState
from meshcore.replication.projection import DatabaseProjection, state_from_database
from meshcore.replication.raft import NoQuorum, RaftSettings, Replica


class Log(Protocol):
    def propose(self, batch: dict[str, Any], timeout: float | None = None) -> dict[str, Any]: ...


class LocalLog:
    """No Raft: the state machine and projection applied at once, in the caller's transaction."""

    def __init__(self) -> None:
        self._state: DesiredState | None = None
        self._lock = threading.Lock()
        self.projection = DatabaseProjection()

    def reset(self) -> None:
        """Forget the cached state (the test suite rolls the database back between tests)."""
        with self._lock:
            self._state = None
            self.projection = DatabaseProjection()

    @property
    def state(self) -> DesiredState:
        if self._state is None:
            self._state = state_from_database()
            row = ProjectionState.objects.filter(pk=1).first()
            self._state.seq = row.applied_seq if row else 0
            self.projection.prepare()
        return self._state

    def propose(self, batch: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        with self._lock, transaction.atomic():
            state = self.state
            before = state.checkpoint()
            key = batch.get("key")
            new_key = bool(key) and key not in state.results
            result = state.apply(batch)
            try:
                if result["status"] == "ok" and not result.get("replayed"):
                    self.projection.apply_committed(batch, result)
            except Exception:
                # The database refused it: so does the state.
                state.roll_back(before)
                if new_key:
                    state.results.pop(key, None)
                raise
        return result

    def export(self) -> dict[str, Any]:
        with self._lock:
            return self.state.to_document()

    def status(self) -> dict[str, Any]:
        with self._lock:  # another thread's write changes the items in place
            state = self.state
            digest = state.digest()
        return {
            "self": "local",
            "role": "leader",
            "leader": "local",
            "term": None,
            "commit_index": state.seq,
            "last_applied": state.seq,
            "has_quorum": True,
            "peers": [],
            "state_seq": state.seq,
            "projected_seq": self.projection.applied.value,
            "digest": digest,
        }


_replica: Replica | None = None
_local_log = LocalLog()


def raft_settings() -> RaftSettings:
    return RaftSettings(
        address=settings.MESH_RAFT_ADDRESS,
        peers=tuple(settings.MESH_RAFT_PEERS),
        password=settings.MESH_RAFT_PASSWORD,
        data_dir=None if settings.MESH_RAFT_STORAGE == "memory" else Path(settings.MESH_RAFT_DIR),
        write_timeout=settings.MESH_RAFT_WRITE_TIMEOUT,
        snapshot_entries=settings.MESH_RAFT_SNAPSHOT_ENTRIES,
        cipher=settings.MESH_RAFT_CIPHER,
    )


def install_replica(replica: Replica | None) -> None:
    global _replica
    _replica = replica


class ReplicaPart:
    """The Raft replica as a background part of `serve`."""

    name = "raft replica"

    def __init__(self) -> None:
        self.replica: Replica | None = None

    def start(self) -> None:
        self.replica = Replica(raft_settings(), DatabaseProjection())
        self.replica.start()
        install_replica(self.replica)

    def stop(self) -> None:
        install_replica(None)
        if self.replica is not None:
            self.replica.stop()


def local_log() -> LocalLog:
    return _local_log


def current_log() -> Log:
    if _replica is not None:
        return _replica
    if settings.MESH_REPLICATION == "local":
        return _local_log
    return CommandLineLog()


def change_membership(change: str, address: str) -> dict[str, Any]:
    """Add or remove a replica through this process's replica (or the one on this host)."""
    log = current_log()
    if isinstance(log, LocalLog):
        raise ValueError("This process replicates nothing (MESH_REPLICATION=local): there is no cluster to change.")
    if isinstance(log, Replica):
        log.change_membership(change, address)
        return log.status()
    return log.change_membership(change, address)


def current_status() -> dict[str, Any]:
    """This replica's view of the cluster (the running replica's, when asked from a command)."""
    return current_log().status()


def installed_replica() -> Replica | None:
    return _replica


class CommandLineLog:
    """A management command's log: the running replica's control socket, or a replica of its own."""

    def propose(self, batch: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        timeout = timeout or settings.MESH_RAFT_WRITE_TIMEOUT
        answer = ask_control({"action": "propose", "batch": batch}, 2 * timeout + 5)  # quorum wait, then commit
        if answer is None:
            return self._propose_with_own_replica(batch, timeout)
        if "error" in answer:
            raise NoQuorum(answer["message"], answer["retry_after"])
        return answer["result"]

    def export(self) -> dict[str, Any]:
        answer = ask_control({"action": "export"}, 30)
        if answer is None:
            raise NoQuorum("No replica is running on this data folder; start `serve` to export its state.")
        return answer["document"]

    def change_membership(self, change: str, address: str) -> dict[str, Any]:
        answer = ask_control({"action": "membership", "change": change, "address": address}, 60)
        if answer is None:
            raise NoQuorum("No replica is running on this data folder; start `serve` first.")
        if answer.get("error") == "invalid":
            raise ValueError(answer["message"])
        if "error" in answer:
            raise NoQuorum(answer["message"], answer["retry_after"])
        return answer["status"]

    def status(self) -> dict[str, Any]:
        answer = ask_control({"action": "status"}, 5)
        return (answer or {}).get("status") or {"self": settings.MESH_RAFT_ADDRESS, "role": "stopped"}

    def _propose_with_own_replica(self, batch: dict[str, Any], timeout: float) -> dict[str, Any]:
        replica = Replica(raft_settings(), DatabaseProjection())
        replica.start()
        try:
            replica.wait_for_leader(timeout)
            return replica.propose(batch, timeout)
        finally:
            replica.stop()
