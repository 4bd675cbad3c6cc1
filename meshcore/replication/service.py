"""Which log this process writes to, and the database projection every log feeds.

- `serve` runs a Raft `Replica` (one per control-plane process) and installs it here.
- Management commands in another process send their batches to the running replica over
  its control socket (a Unix socket in the data folder, owner-only); with no replica
  running they start one for the duration of the command.
- The test suite uses `LocalLog` (MESH_REPLICATION=local): the same state machine, the
  same projection and events, applied synchronously in the caller's transaction.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.core.cache import cache
from django.db import connections, transaction
from django.utils import timezone

from meshcore.replication import rows
from meshcore.replication.projection import AppliedIndex, apply_changes, rebuild, state_from_database
from meshcore.replication.raft import NoQuorum, RaftSettings, Replica
from meshcore.replication.state import DesiredState

logger = logging.getLogger(__name__)


class Log(Protocol):
    def propose(self, batch: dict[str, Any], timeout: float | None = None) -> dict[str, Any]: ...


# A projected batch, its result and the events its projection recorded, for `announce`.
Projected = tuple[dict[str, Any], dict[str, Any], list[Any]]

TOKEN_CHANGES = {"NODE_TOKEN_ROTATED", "NODE_TOKEN_REVOKED", "NODE_LEFT"}


class DatabaseProjection:
    """Applies committed batches to this replica's database, once each, with their events."""

    def __init__(self) -> None:
        self.applied = AppliedIndex()

    def prepare(self) -> None:
        from meshcore.models import ProjectionState

        row = ProjectionState.objects.filter(pk=1).first()
        self.applied.advance(row.applied_seq if row else 0)

    def apply_committed(self, batch: dict[str, Any], result: dict[str, Any]) -> None:
        self.apply_committed_group([(batch, result)])

    def apply_committed_group(self, committed: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        """Project batches in their commit order, then announce their events."""
        self.announce(self.project_group(committed))

    def project_group(self, committed: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[Projected]:
        """Write batches in their commit order, in one transaction (under load, one commit for many).

        Returns what `announce` publishes: the caller may leave that to another thread.
        """
        from meshcore.events import record_batch_events
        from meshcore.models import ProjectionState

        projected = []
        applied = self.applied.value
        # Batches replayed from the journal at start are already in this database.
        fresh = [(batch, result) for batch, result in committed if result["seq"] > applied]
        with transaction.atomic():
            # Claim the sequence numbers first: a batch this database already has changes nothing.
            # One claim for the whole group when none of it is here yet; else one per batch.
            claimed = bool(fresh) and rows.update_where(
                ProjectionState,
                {"applied_seq": fresh[-1][1]["seq"], "updated_at": timezone.now()},
                {"id": 1},
                below={"applied_seq": fresh[0][1]["seq"]},
            )
            for batch, result in fresh:
                seq = result["seq"]
                if seq <= applied:
                    continue  # the same batch twice in a group, or one another process projected
                claim = {"applied_seq": seq, "updated_at": timezone.now()}
                if not claimed and not rows.update_where(ProjectionState, claim, {"id": 1}, below={"applied_seq": seq}):
                    row, created = ProjectionState.objects.get_or_create(pk=1, defaults={"applied_seq": seq})
                    if not created:
                        applied = max(applied, row.applied_seq)
                        continue
                apply_changes(result["changes"])
                projected.append((batch, result, record_batch_events(batch, result)))
                applied = seq
        self.applied.advance(applied)
        if any(spec.get("type") in TOKEN_CHANGES for batch, _, _ in projected for spec in batch.get("events", [])):
            # A rotated or revoked node token stops working here at once, not when the cache expires.
            from meshcore.state.node_auth import node_tokens

            node_tokens.forget_all()
        return projected

    def announce(self, projected: list[Projected]) -> None:
        """Publish the events of projected batches to this process's channel layer (best effort)."""
        from meshcore.events import publish_events

        announced = []
        for batch, result, events in projected:
            # Several replicas may share one channel layer: the first to project a change announces it.
            if (
                events
                and result.get("announce", True)
                and cache.add(f"infermesh:event-published:{batch.get('key')}:{result['seq']}", 1, timeout=3600)
            ):
                announced.extend(events)
        publish_events(announced)  # one hop to the server's loop for them all

    def rebuild_from(self, state: DesiredState) -> None:
        from meshcore.models import ProjectionState

        if state.seq <= self.applied.value:
            return
        with transaction.atomic():
            rebuild(state)
            ProjectionState.objects.update_or_create(
                pk=1, defaults={"applied_seq": state.seq, "updated_at": timezone.now()}
            )
        self.applied.advance(state.seq)
        logger.info("rebuilt the database projection from a snapshot at seq %d", state.seq)


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
            from meshcore.models import ProjectionState

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


# ---- the process's log ---------------------------------------------------------------

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


# ---- the control socket: commands in other processes write through the running replica ----


def control_socket_path() -> Path:
    return Path(settings.MESH_RAFT_DIR) / "control.sock"


class _ControlHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        # One request per line, as many as the client sends: a command that writes often keeps its connection.
        try:
            for line in self.rfile:
                self.wfile.write(json.dumps(_control_answer(line), default=str).encode() + b"\n")
        finally:
            # A write projects its batch on this thread's connection (Replica.propose): hand it back.
            connections.close_all()


def _control_answer(line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
        if request.get("action") == "status":
            return {"status": _replica.status() if _replica else None}
        if _replica is None:
            raise NoQuorum("This replica is stopping.", retry_after=1)
        if request.get("action") == "export":
            return {"document": _replica.export()}
        if request.get("action") == "membership":
            _replica.change_membership(request["change"], request["address"])
            return {"status": _replica.status()}
        # A command may wait for a quorum (a cluster still starting); an API write never does.
        _replica.wait_for_leader(settings.MESH_RAFT_WRITE_TIMEOUT)
        return {"result": _replica.propose(request["batch"])}
    except NoQuorum as error:
        return {"error": "no_quorum", "message": str(error), "retry_after": error.retry_after}
    except ValueError as error:  # JSON that does not parse included
        return {"error": "invalid", "message": str(error), "retry_after": 0}


class _ControlSocketServer(socketserver.ThreadingUnixStreamServer):
    # The default backlog of 5 refuses a burst of concurrent commands with EAGAIN.
    request_queue_size = 128
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open_lock = threading.Lock()
        self._open: set[socket.socket] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Commands keep their connections: a stopping replica ends them, as its process's exit would."""
        with self._open_lock:
            for connection in self._open:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class ControlServer:
    """Owner-only Unix socket through which this host's management commands reach the replica."""

    name = "control socket"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._server: socketserver.ThreadingUnixStreamServer | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = _ControlSocketServer(str(self.path), _ControlHandler)
        finally:
            os.umask(old_umask)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="infermesh-control", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
        if self.path.exists():
            self.path.unlink()


class _ControlConnection(threading.local):
    """This thread's connection to the replica's control socket, kept for the next request."""

    path: Path | None = None
    connection: socket.socket | None = None
    reader: Any = None

    def connected_to(self, path: Path) -> bool:
        return self.connection is not None and self.path == path

    def exchange(self, path: Path, line: bytes, timeout: float) -> bytes:
        """Send one request line, return the answer line; raises OSError when the replica cannot be reached."""
        reused = self.connected_to(path)
        if not reused:
            self._open(path, timeout)
        try:
            self.connection.settimeout(timeout)
            self.connection.sendall(line)
            reply = self.reader.readline()
        except TimeoutError:
            self.close()  # an answer may still come: it must not be read as the next request's
            raise
        except OSError:
            self.close()
            if not reused:
                raise
            reply = b""
        if reply:
            return reply
        self.close()
        if not reused:
            raise ConnectionRefusedError("the replica closed the connection without answering")
        # The replica closed the kept connection (most likely it restarted before reading the request): send it
        # once more on a new one. A batch carries its idempotency key, so it applies once either way.
        return self.exchange(path, line, timeout)

    def _open(self, path: Path, timeout: float) -> None:
        self.close()
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.settimeout(timeout)
            connection.connect(str(path))
        except OSError:
            connection.close()
            raise
        self.path, self.connection, self.reader = path, connection, connection.makefile("rb")

    def close(self) -> None:
        if self.connection is not None:
            self.reader.close()
            self.connection.close()
        self.path = self.connection = self.reader = None


_control_connection = _ControlConnection()


class CommandLineLog:
    """A management command's log: the running replica's control socket, or a replica of its own."""

    def _ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        path = control_socket_path()
        # A kept connection to it says enough: no look at the folder before every request.
        if not _control_connection.connected_to(path) and not path.exists():
            return None
        try:
            reply = _control_connection.exchange(path, json.dumps(request).encode() + b"\n", timeout)
        except (ConnectionRefusedError, FileNotFoundError):
            return None  # a socket left behind by a replica that is gone
        except (BlockingIOError, TimeoutError) as error:
            raise NoQuorum(f"The replica on this host did not take the request ({error}); retry.", 1) from None
        return json.loads(reply)

    def propose(self, batch: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        timeout = timeout or settings.MESH_RAFT_WRITE_TIMEOUT
        answer = self._ask({"action": "propose", "batch": batch}, 2 * timeout + 5)  # quorum wait, then commit
        if answer is None:
            return self._propose_with_own_replica(batch, timeout)
        if "error" in answer:
            raise NoQuorum(answer["message"], answer["retry_after"])
        return answer["result"]

    def export(self) -> dict[str, Any]:
        answer = self._ask({"action": "export"}, 30)
        if answer is None:
            raise NoQuorum("No replica is running on this data folder; start `serve` to export its state.")
        return answer["document"]

    def change_membership(self, change: str, address: str) -> dict[str, Any]:
        answer = self._ask({"action": "membership", "change": change, "address": address}, 60)
        if answer is None:
            raise NoQuorum("No replica is running on this data folder; start `serve` first.")
        if answer.get("error") == "invalid":
            raise ValueError(answer["message"])
        if "error" in answer:
            raise NoQuorum(answer["message"], answer["retry_after"])
        return answer["status"]

    def status(self) -> dict[str, Any]:
        answer = self._ask({"action": "status"}, 5)
        return (answer or {}).get("status") or {"self": settings.MESH_RAFT_ADDRESS, "role": "stopped"}

    def _propose_with_own_replica(self, batch: dict[str, Any], timeout: float) -> dict[str, Any]:
        replica = Replica(raft_settings(), DatabaseProjection())
        replica.start()
        try:
            replica.wait_for_leader(timeout)
            return replica.propose(batch, timeout)
        finally:
            replica.stop()
