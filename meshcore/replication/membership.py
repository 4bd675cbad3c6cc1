"""Checks before a membership change: it must leave the cluster a quorum it can reach.

Raft (and PySyncObj) count a new member's vote from the moment the change enters the
leader's log, before it commits. Admit an address where nothing runs into a one-replica
cluster and the change itself needs that address's vote to commit: it never does, the
leader steps down, and every write after it answers 503 until someone repairs the cluster
by hand. So, as etcd's strict reconfiguration check does, a change is proposed only when
the new configuration has a quorum of replicas reachable right now, counting a newcomer only
once it has proven that it is a live replica of this cluster:

`probe_replica` opens a connection to the newcomer's Raft port and does what a peer does:
PySyncObj's encrypted handshake (each side sends a random key, sealed with the key derived
from MESH_RAFT_PASSWORD; every later message carries the other side's key, so an answer
cannot be replayed), then PySyncObj's `status` utility request. An answer that opens with
this cluster's password and echoes this probe's key comes from a running replica that holds
the password; its status says the address it calls itself and the peers it counts, which
must include every current member (or their connections to it would be refused).
"""

from __future__ import annotations

import io
import os
import pickle
import socket
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import InvalidToken

from meshcore.replication import framing
from meshcore.replication.cipher import RaftCipher

# A status answer is a few hundred bytes; a peer that sends more is not answering a probe.
_MAX_MESSAGE = 1 << 20
_LENGTH = struct.Struct("i")  # PySyncObj's frame header: the sealed message's length, native byte order
# What PySyncObj's answers may contain besides plain values: the replica's own and its leader's node, and
# bytes (the handshake's key), which pickle protocol 2 (PySyncObj's) writes as a call of `_codecs.encode`.
_ALLOWED_GLOBALS = {("pysyncobj.node", "TCPNode"), ("pysyncobj.node", "Node"), ("_codecs", "encode")}


class MembershipRefused(ValueError):
    """The change would leave the cluster without a quorum it can reach; the message says what to do (409)."""


class ProbeFailed(Exception):
    """The address did not prove to be a live replica of this cluster; the message says what was seen."""


@dataclass(frozen=True)
class ProbedReplica:
    address: str  # what the replica calls itself (its MESH_RAFT_ADDRESS)
    peers: frozenset[str]  # the replicas it counts as the other members


def probe_replica(address: str, password: str, cipher: str = "aes-gcm-siv", timeout: float = 3.0) -> ProbedReplica:
    """Prove that a replica with `password` runs at `address` (see the module docstring); ProbeFailed if not."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    sealer = RaftCipher(password, cipher)
    try:
        connection = socket.create_connection((host, int(port)), timeout=timeout)
    except TimeoutError:
        raise ProbeFailed(f"nothing answered at {address} within {timeout:.0f} s") from None
    except ConnectionRefusedError:
        raise ProbeFailed(f"nothing listens on {address} (connection refused)") from None
    except OSError as error:
        raise ProbeFailed(f"{address} cannot be reached ({error.strerror or error})") from None
    with connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mine = os.urandom(32)
        try:
            _send(connection, sealer, mine)
            theirs = _receive(connection, sealer, mine, deadline)
            if not isinstance(theirs, bytes) or len(theirs) != 32:
                raise ProbeFailed(f"{address} answered the handshake with something that is not a Raft key")
            _send(connection, sealer, (theirs, ["status"]))
            status = _receive(connection, sealer, mine, deadline)
        except TimeoutError:
            raise ProbeFailed(f"{address} accepted a connection but did not answer within {timeout:.0f} s") from None
        except ConnectionError:
            raise ProbeFailed(
                f"{address} closed the connection during the encrypted handshake: it runs with another "
                "MESH_RAFT_PASSWORD, or it is not an infermesh replica"
            ) from None
        except InvalidToken:
            raise ProbeFailed(f"{address} answers with messages that do not open with this password") from None
        except OSError as error:
            raise ProbeFailed(f"the connection to {address} failed ({error.strerror or error})") from None
    if not isinstance(status, dict) or "self" not in status:
        raise ProbeFailed(f"{address} answered the status request with something that is not a replica's status")
    prefix = "partner_node_status_server_"
    peers = frozenset(key[len(prefix) :] for key in status if isinstance(key, str) and key.startswith(prefix))
    return ProbedReplica(address=str(status["self"]), peers=peers)


def _send(connection: socket.socket, sealer: RaftCipher, message: Any) -> None:
    # As PySyncObj's TcpConnection.send: pickle, zlib, seal with a timestamp, length-prefix.
    sealed = sealer.encrypt_at_time(framing.stored_zlib(pickle.dumps(message, 2)), int(time.monotonic()))
    connection.sendall(_LENGTH.pack(len(sealed)) + sealed)


def _receive(connection: socket.socket, sealer: RaftCipher, mine: bytes, deadline: float) -> Any:
    (length,) = _LENGTH.unpack(_read(connection, _LENGTH.size, deadline))
    if not 0 < length <= _MAX_MESSAGE:
        raise ConnectionError("a message of impossible length")
    token = _read(connection, length, deadline)
    sealer.extract_timestamp(token)  # authenticates the token (InvalidToken otherwise)
    message = _StatusUnpickler(io.BytesIO(zlib.decompress(sealer.decrypt(token)))).load()
    # Every message after the first carries the key this side sent: an answer to this probe, not a replay.
    if not (isinstance(message, tuple) and len(message) == 2 and message[0] == mine):
        raise ConnectionError("an answer that does not carry this probe's key")
    return message[1]


def _read(connection: socket.socket, size: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        connection.settimeout(remaining)
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return bytes(data)


class _StatusUnpickler(pickle.Unpickler):
    """Plain values and PySyncObj's node objects only: an authenticated peer still gets no other class."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a replica's status")


# ---- the quorum arithmetic --------------------------------------------------------------


def quorum(voters: int) -> int:
    return voters // 2 + 1


def check_add(address: str, members: set[str], reachable: set[str], probe: Any) -> None:
    """Refuse (MembershipRefused) an add unless the newcomer is live and the new configuration has a reachable quorum.

    `reachable`: the current members this replica is connected to, itself included. `probe`: a
    callable returning the newcomer's `ProbedReplica`, or raising ProbeFailed.
    """
    advice = (
        f"Start the new replica first, with MESH_RAFT_ADDRESS={address}, the cluster's MESH_RAFT_PASSWORD and "
        f"MESH_RAFT_PEERS={','.join(sorted(members))} (every current member), then retry."
    )
    try:
        probed = probe()
    except ProbeFailed as failure:
        raise MembershipRefused(
            f"Refused to add {address}: {failure}. A member that does not answer would count towards the quorum "
            f"from the moment it is added, and the cluster could stop accepting writes. {advice}"
        ) from None
    if probed.address != address:
        raise MembershipRefused(
            f"Refused to add {address}: the replica there calls itself {probed.address} (its MESH_RAFT_ADDRESS). "
            f"Add it as {probed.address}, or restart it with MESH_RAFT_ADDRESS={address}."
        )
    missing = members - probed.peers
    if missing:
        raise MembershipRefused(
            f"Refused to add {address}: it does not count {', '.join(sorted(missing))} among its peers, so it would "
            f"refuse their connections. Restart it with MESH_RAFT_PEERS={','.join(sorted(members))}, then retry."
        )
    voters = len(members) + 1
    if len(reachable) + 1 < quorum(voters):
        raise MembershipRefused(
            f"Refused to add {address}: with it the cluster has {voters} members and needs {quorum(voters)} for a "
            f"quorum, but only {len(reachable) + 1} of them are reachable from here. Bring the stopped replicas "
            "back first."
        )


def check_remove(address: str, members: set[str], reachable: set[str], leader: str | None) -> None:
    """Refuse (MembershipRefused) a removal that leaves fewer reachable members than a quorum of the rest."""
    if address == leader:
        raise MembershipRefused(
            f"Refused to remove {address}: it leads the cluster, and Raft's leader cannot remove itself. Stop its "
            "process so that the others elect a new leader, then remove it through one of them."
        )
    remaining = members - {address}
    reachable_remaining = reachable - {address}
    if len(reachable_remaining) < quorum(len(remaining)):
        raise MembershipRefused(
            f"Refused to remove {address}: the {len(remaining)} remaining members need {quorum(len(remaining))} for "
            f"a quorum, but only {len(reachable_remaining)} of them are reachable from here "
            f"({', '.join(sorted(reachable_remaining)) or 'none'}). Bring the stopped replicas back first."
        )
