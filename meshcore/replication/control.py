"""The control socket: management commands in other processes reach the running replica.

An owner-only Unix socket in the Raft data folder; one JSON request per line, as many as a
command sends on its kept connection. The server is given the replica to ask (it imports
nothing of `log`, which uses the client side).
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections

from meshcore.replication.raft import NoQuorum, Replica

ReplicaGetter = Callable[[], Replica | None]
# Other parts of the process answer their own actions here (e.g. `route_explain`), registered by `serve`.
ControlAction = Callable[[dict[str, Any]], dict[str, Any]]


def control_socket_path() -> Path:
    return Path(settings.MESH_RAFT_DIR) / "control.sock"


class _ControlHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        # One request per line, as many as the client sends: a command that writes often keeps its connection.
        try:
            for line in self.rfile:
                answer = _control_answer(self.server.replica(), line, self.server.actions)
                self.wfile.write(json.dumps(answer, default=str).encode() + b"\n")
        finally:
            # A write projects its batch on this thread's connection (Replica.propose): hand it back.
            connections.close_all()


def _control_answer(replica: Replica | None, line: bytes, actions: dict[str, ControlAction]) -> dict[str, Any]:
    try:
        request = json.loads(line)
        if request.get("action") in actions:
            return actions[request["action"]](request)
        if request.get("action") == "status":
            return {"status": replica.status() if replica else None}
        if replica is None:
            raise NoQuorum("This replica is stopping.", retry_after=1)
        if request.get("action") == "export":
            return {"document": replica.export()}
        if request.get("action") == "membership":
            replica.change_membership(request["change"], request["address"])
            return {"status": replica.status()}
        # A command may wait for a quorum (a cluster still starting); an API write never does.
        replica.wait_for_leader(settings.MESH_RAFT_WRITE_TIMEOUT)
        return {"result": replica.propose(request["batch"])}
    except NoQuorum as error:
        return {"error": "no_quorum", "message": str(error), "retry_after": error.retry_after}
    except ValueError as error:  # JSON that does not parse included
        return {"error": "invalid", "message": str(error), "retry_after": 0}


class _ControlSocketServer(socketserver.ThreadingUnixStreamServer):
    # The default backlog of 5 refuses a burst of concurrent commands with EAGAIN.
    request_queue_size = 128
    daemon_threads = True

    def __init__(self, path: str, replica: ReplicaGetter, actions: dict[str, ControlAction]) -> None:
        super().__init__(path, _ControlHandler)
        self.replica = replica
        self.actions = actions
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

    def __init__(self, path: Path, replica: ReplicaGetter, actions: dict[str, ControlAction] | None = None) -> None:
        self.path = path
        self.replica = replica
        self.actions = actions or {}
        self._server: socketserver.ThreadingUnixStreamServer | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = _ControlSocketServer(str(self.path), self.replica, self.actions)
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


def ask_control(request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """Send one request to the replica on this host; None when no replica runs on this data folder."""
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


def close_control_connection() -> None:
    """Close this thread's kept connection to the replica (a command that is done)."""
    _control_connection.close()
