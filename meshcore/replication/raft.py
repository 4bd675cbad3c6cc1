"""A control-plane replica: the desired state in a PySyncObj Raft group, projected to the database.

Threads, and what runs on each:
- PySyncObj's tick thread runs the replicated `apply_batch` on the in-memory state and
  hands committed changes to the projector. It never touches the database (a slow
  database must not stop heartbeats) and never waits on anything.
- The projector thread (`projector.py`) writes committed batches to this replica's database
  (those committed meanwhile together, in one transaction; what nobody here waits for, a few
  milliseconds late, with company), retries a write that failed and announces events.
- A writer (a request thread, a command's control-socket thread) proposes a batch and waits,
  with a timeout, for the commit; a lone batch it then writes to the database itself, on
  its own thread (read your writes without two hand-offs), else it waits for the projector.
  Batches proposed while an entry commits go in the next entry together (`proposals.py`).
"""

from __future__ import annotations

import copy
import logging
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import InvalidToken
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated

from meshcore.replication import framing
from meshcore.replication.addresses import check_raft_address
from meshcore.replication.cipher import RaftCipher
from meshcore.replication.desired import LOG_FORMAT, DesiredState
from meshcore.replication.membership import MembershipRefused, check_add, check_remove, probe_replica
from meshcore.replication.projector import NOW, SOON, WRITER, Projector
from meshcore.replication.proposals import ProposalQueue

logger = logging.getLogger(__name__)


_FOLLOWER = 0  # PySyncObj's _RAFT_STATE.FOLLOWER
_LEADER = 2  # PySyncObj's _RAFT_STATE.LEADER


class NoQuorum(Exception):
    """The write cannot be committed now; `retry_after` says when to try again."""

    def __init__(self, message: str, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RaftSettings:
    address: str
    peers: tuple[str, ...]
    password: str
    data_dir: Path | None  # None keeps the journal in memory (tests)
    write_timeout: float = 10.0
    snapshot_entries: int = 20_000
    cipher: str = "aes-gcm-siv"  # what this replica sends (MESH_RAFT_CIPHER); it reads both


# PySyncObj's timing as infermesh runs it (MESH_RAFT_PROFILE=tuned); benchmarks/raft_floor.py uses it too.
TUNED_TIMING: dict[str, Any] = {
    # Fail fast when there is no leader instead of queueing writes nobody can commit.
    "commandsWaitLeader": False,
    # Send each entry as soon as it is proposed: latency over batching on a control plane.
    "appendEntriesUseBatch": False,
    # Proposals and messages wake the tick thread at once (PySyncObj's pipe notifier, its poller); this
    # period only paces timers (heartbeats, elections): 50 idle wake-ups a second instead of 200.
    "autoTickPeriod": 0.02,
    "appendEntriesPeriod": 0.05,
    "raftMinTimeout": 0.4,
    "raftMaxTimeout": 1.2,
    "connectionRetryTime": 1.0,
    "connectionTimeout": 3.0,
    # A follower that lost its leader stops forwarding after this long.
    "leaderFallbackTimeout": 3.0,
}


class RegistryLog(SyncObjConsumer):
    """The replicated object: everything set after `super().__init__()` is the Raft state."""

    def __init__(self, on_committed: Any, on_restored: Any, on_applied: Any = None) -> None:
        # Set before super().__init__(): callbacks are process-local and never pickled.
        self._on_committed = on_committed
        self._on_restored = on_restored
        self._on_applied = on_applied  # every batch applied, whatever its outcome
        # Batches change the state in place: an export or a digest reads it between batches, never inside one.
        self._lock = threading.Lock()
        self.halted_by: str | None = None  # set when an entry is too new for this release
        super().__init__()
        self.state = DesiredState()

    @replicated
    def apply_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.halted_by:
            # Everything after an entry this release cannot read would be applied to the wrong state.
            return {"status": "unsupported", "message": self.halted_by}
        with self._lock:
            result = self.state.apply(batch)
        if result["status"] == "group":
            applied = list(zip(batch["group"], result["results"], strict=True))
        else:
            applied = [(batch, result)]
        if self._on_applied is not None:
            self._on_applied([member for member, _ in applied])
        for member, outcome in applied:
            if outcome["status"] == "unsupported" and not self.halted_by:
                self.halted_by = outcome["message"]
                logger.critical("%s; this replica stops following the cluster until it is upgraded", self.halted_by)
            if outcome["status"] == "ok" and not outcome.get("replayed"):
                self._on_committed(member, outcome, grouped=len(applied) > 1)
        return result

    def export(self) -> dict[str, Any]:
        """A consistent copy of this replica's desired state (local: needs no quorum)."""
        with self._lock:
            return self.state.to_document()

    def digest(self) -> str:
        with self._lock:
            return self.state.digest()

    def _deserialize(self, data: dict[str, Any]) -> None:
        super()._deserialize(data)
        # A copy: the tick thread goes on changing the live state while the projector rebuilds.
        self._on_restored(copy.deepcopy(self.state))


class _SyncObj(SyncObj):
    """PySyncObj's SyncObj, telling the followers of a commit at once only when one of them may be waiting for it.

    With `appendEntriesUseBatch` off, PySyncObj sends every follower an append right after the
    leader applies an entry, only to carry the new commit index: two more messages each way per
    write, handled while the leader projects and answers its writer. When the entry's writer is on
    the leader, the followers learn the commit with the next entry or heartbeat instead
    (`appendEntriesPeriod`); a follower's reads lag by that much at most. An entry a follower
    proposed (or one nobody here waits for) is still announced at once: its writer waits for it.
    """

    def __init__(self, *args: Any, followers_wait: Any = None, encryptor: Any = None, **kwargs: Any) -> None:
        self._followers_wait = followers_wait
        self._infermesh_encryptor = encryptor
        super().__init__(*args, **kwargs)

    @property
    def encryptor(self) -> Any:
        # PySyncObj's transport reads this for every connection it sets up, the first one included.
        inner = super().encryptor
        return self._infermesh_encryptor if inner is not None and self._infermesh_encryptor is not None else inner

    def _SyncObj__applyLogEntries(self) -> bool:  # PySyncObj's `__applyLogEntries`, run on every tick
        send_now = super()._SyncObj__applyLogEntries()
        if self._followers_wait is None:
            return send_now
        return self._followers_wait() and send_now  # asked on every tick: the answer covers this tick's entries

    def abandon_lone_addition(self, address: str) -> str:
        """Take back the addition of `address` if it has not committed and this replica was the only voter before it.

        Runs on the tick thread (PySyncObj's state is not shared with other threads). PySyncObj, as
        Raft, counts a new member from the moment the change enters the leader's log: a one-replica
        cluster that admitted a replica which then never answers can commit nothing again, not even
        after a restart (the entry waits in the journal and commits at once, alone). Taking the entry
        back is safe here: only a leader of its term could commit it, this replica was that leader
        (its term has not moved since), and committing needs this replica's own acknowledgement in the
        new configuration. The replica drops the entries from that one on (their writers hear
        DISCARDED) and the newcomer, then holds a new election, alone: its next entries carry a newer
        term, so a newcomer that did receive the entry replaces it if it is ever admitted.

        Returns "committed" (nothing to take back), "abandoned", or "kept" (not this replica's to take back).
        """
        others = self._SyncObj__otherNodes
        if {node.address for node in others} != {address}:
            return "kept"
        uncommitted = self._SyncObj__getEntries(self._SyncObj__raftCommitIndex + 1)
        position = next(
            (
                index
                for index, (command, _, _) in enumerate(uncommitted)
                if (request := self._SyncObj__parseChangeClusterRequest(command)) and request[:2] == ["add", address]
            ),
            None,
        )
        if position is None:
            return "committed"
        _, first_index, entry_term = uncommitted[position]
        if entry_term != self._SyncObj__raftCurrentTerm:
            return "kept"
        for command, _, _ in reversed(uncommitted[position:]):
            if request := self._SyncObj__parseChangeClusterRequest(command):
                self._SyncObj__doChangeCluster(request, reverse=True)
        self._SyncObj__deleteEntriesFrom(first_index)
        # A new term before anything else goes into the log: elected alone at the next tick.
        self._SyncObj__raftLeader = None
        self._SyncObj__setState(_FOLLOWER)
        self._SyncObj__raftElectionDeadline = 0
        return "abandoned"


class _LoggingEncryptor:
    """Wraps the Raft cipher to log what PySyncObj drops silently: a peer with another password."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._last_warning = 0.0

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        return self._inner.encrypt_at_time(data, current_time)

    def extract_timestamp(self, token: bytes) -> int:
        try:
            # The token is authenticated here first: a wrong key fails in this call.
            return self._inner.extract_timestamp(token)
        except InvalidToken:
            self._warn()
            raise

    def decrypt(self, token: bytes, ttl: int | None = None) -> bytes:
        try:
            return self._inner.decrypt(token, ttl)
        except InvalidToken:
            self._warn()
            raise

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            logger.error(
                "refused a Raft connection whose messages do not decrypt: a replica or process is using "
                "another MESH_RAFT_PASSWORD (or is not infermesh); its messages are dropped"
            )


class _Transitions:
    """When each watched value last changed (a peer's connection, the role, the leader)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        self._since: dict[str, str] = {}

    def since(self, key: str, value: Any) -> str:
        with self._lock:
            if key not in self._values or self._values[key] != value:
                self._values[key] = value
                self._since[key] = datetime.now(UTC).isoformat(timespec="seconds")
            return self._since[key]


class Replica:
    """This process's replica of the registry (see the module docstring for its threads)."""

    name = "raft replica"

    def __init__(self, raft: RaftSettings, projection: Any) -> None:
        self.settings = raft
        self.projection = projection
        self.projector = Projector(projection.project_group, projection.rebuild_from, projection.announce)
        # Until this replica has caught up with the leader, what it applies is history: project it, don't announce it.
        self._caught_up = threading.Event()
        self.log = RegistryLog(self._committed, self.projector.restored, self._applied)
        # Batches proposed while an entry commits share the next one (one round trip for many writers).
        self.proposals = ProposalQueue(lambda entry, callback: self.log.apply_batch(entry, callback=callback))
        self._sync_obj: SyncObj | None = None
        self._transitions = _Transitions()
        self._diagnosed: dict[str, list[float]] = {}  # peer -> [disconnected since, last logged]
        self._stopping = threading.Event()
        self._awaited: set[str] = set()  # keys of the batches this replica's writers wait for
        self._commit_awaited_elsewhere = False  # an entry just applied was proposed by another replica
        self._membership_lock = threading.Lock()  # one membership change at a time through this replica

    def _applied(self, batches: list[dict[str, Any]]) -> None:
        if any(batch.get("key") not in self._awaited for batch in batches):
            # Proposed by another replica (or by no writer at all): a follower's writer may wait for this commit.
            self._commit_awaited_elsewhere = True

    def _followers_wait_for_commit(self) -> bool:
        """Whether an entry applied since the last call may have a writer on a follower (resets the answer)."""
        waiting, self._commit_awaited_elsewhere = self._commit_awaited_elsewhere, False
        return waiting

    def _committed(self, batch: dict[str, Any], result: dict[str, Any], grouped: bool = False) -> None:
        # A lone batch a writer here waits for is written by that writer. The batches of a group entry have
        # many writers: the projector writes them at once, in one transaction. Nobody here waits for the rest.
        if batch.get("key") not in self._awaited:
            waiting = SOON
        else:
            waiting = NOW if grouped else WRITER
        self.projector.committed(batch, result, announce=self._caught_up.is_set(), waiting=waiting)

    def _conf(self) -> SyncObjConf:
        journal = None
        if self.settings.data_dir is not None:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            journal = str(self.settings.data_dir / "journal")
        conf = SyncObjConf(
            password=self.settings.password,
            journalFile=journal,
            fullDumpFile=str(self.settings.data_dir / "snapshot") if self.settings.data_dir else None,
            # Forking would copy the database and Redis connections into the snapshot writer.
            useFork=False,
            logCompactionMinEntries=self.settings.snapshot_entries,
            logCompactionMinTime=600,
            # Replicas join and leave a running cluster one at a time (manage.py cluster_member, the API).
            dynamicMembershipChange=True,
            onStateChanged=self._state_changed,
            onReady=self._caught_up.set,
        )
        # The baseline that benchmarks/replication.py compares against is PySyncObj's own timing.
        # The password, the journal and useFork=False stay either way: they are safety, not tuning.
        if _tuned():
            for name, value in TUNED_TIMING.items():
                setattr(conf, name, value)
        return conf

    def start(self) -> None:
        self.projection.prepare()
        self.projector.start()
        if _tuned():
            # Process-wide: PySyncObj frames every connection's messages in one module.
            framing.install()
        # The baseline sends PySyncObj's own Fernet tokens; every replica reads both (cipher.py).
        cipher = self.settings.cipher if _tuned() else "fernet"
        self._sync_obj = _SyncObj(
            self.settings.address,
            list(self.settings.peers),
            self._conf(),
            consumers=[self.log],
            # PySyncObj's own behaviour in the benchmark's baseline: every commit announced at once.
            followers_wait=self._followers_wait_for_commit if _tuned() else None,
            encryptor=_LoggingEncryptor(RaftCipher(self.settings.password, cipher)),
        )
        self._sync_obj.addOnTickCallback(self._hurry_lone_commit)
        threading.Thread(target=self._watch, name="infermesh-cluster-watch", daemon=True).start()
        logger.info(
            "raft replica %s started with %d peer(s): %s",
            self.settings.address,
            len(self.settings.peers),
            ", ".join(self.settings.peers) or "none",
        )

    def _hurry_lone_commit(self) -> None:
        """Alone in its cluster, the leader commits an entry at its next tick: bring that tick forward.

        With peers, their answers wake the tick thread at once; alone, nothing would until the tick
        period passed, and every write of a one-replica mesh would wait for it.
        """
        sync_obj = self._sync_obj
        # In flight first: it is the cheap test, and this runs on every tick of every replica.
        if sync_obj is not None and self.proposals.in_flight and not sync_obj.otherNodes:
            # PySyncObj's own wake-up (a pipe its poller watches), as when a command is proposed.
            notifier = getattr(sync_obj, "_SyncObj__pipeNotifier", None)
            if notifier is not None:
                notifier.notify()

    def stop(self) -> None:
        self._stopping.set()
        if self._sync_obj is not None:
            self._sync_obj.destroy_synchronous()
        self.projector.stop()
        self.projector.join(timeout=10)

    def wait_for_leader(self, timeout: float) -> None:
        """Block until a leader is known and this replica has caught up with the log, or raise NoQuorum."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sync_obj = self._sync_obj
            if sync_obj is not None and sync_obj._getLeader() is not None and sync_obj.hasQuorum and sync_obj.isReady():
                return
            time.sleep(0.02)
        raise NoQuorum(f"No leader was elected within {timeout:.0f} s: are a majority of the replicas running?")

    # ---- writing -------------------------------------------------------------------

    def propose(self, batch: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Commit `batch` on a quorum and wait until this replica's database has it."""
        timeout = timeout or self.settings.write_timeout
        sync_obj = self._sync_obj
        if sync_obj is None:
            raise NoQuorum("This replica is not running.")
        if self.log.halted_by:
            raise NoQuorum(f"This replica cannot follow the cluster: {self.log.halted_by}", retry_after=60)
        if not sync_obj.hasQuorum:
            raise NoQuorum(
                "No quorum: fewer than a majority of the control-plane replicas are reachable, so the change "
                "cannot be committed. Nothing was written; retry when the replicas are back."
            )
        if sync_obj._getLeader() is None:
            # A majority is reachable: a leader was lost and the election takes about a second.
            raise NoQuorum(
                "No leader yet: the replicas are electing one. Nothing was written; retry in a moment.",
                retry_after=1,
            )
        key = batch.get("key")
        written = False
        if key:
            self._awaited.add(key)
        try:
            proposal = self.proposals.propose(batch, timeout)
            if proposal.error == FAIL_REASON.SUCCESS and proposal.result["status"] == "ok":
                # Write it, and whatever committed before it, here: no hand-off to the projector and back.
                self.projector.project_pending()
                written = self.projection.applied.value >= proposal.result["seq"]
        finally:
            if key:
                self._awaited.discard(key)
                if not written:
                    # This writer did not write its batch (refused, timed out, failed): the projector will.
                    self.projector.wake()
        if proposal.error is None:
            raise NoQuorum(
                f"The change was not committed within {timeout:.0f} s (the cluster may be electing a leader). "
                "It may still apply: retry with the same idempotency key to be safe.",
                retry_after=1,
            )
        error = proposal.error
        if error in (FAIL_REASON.QUEUE_FULL, FAIL_REASON.MISSING_LEADER, FAIL_REASON.REQUEST_DENIED):
            raise NoQuorum(f"The change was not committed ({_fail_reason(error)}); nothing was written.")
        if error != FAIL_REASON.SUCCESS:
            # The entry reached the log of a leader that lost its place: a successor may still commit it.
            raise NoQuorum(
                f"The change may not have been committed ({_fail_reason(error)}). "
                "Retry with the same Idempotency-Key: it applies once either way.",
                retry_after=1,
            )
        result = proposal.result
        if result["status"] == "ok" and not self.projection.applied.wait_for(result["seq"], timeout):
            raise NoQuorum(
                "The change is committed but this replica's database has not applied it yet; read it again shortly.",
                retry_after=1,
            )
        return result

    def change_membership(self, action: str, address: str, timeout: float | None = None) -> None:
        """Add or remove one replica through the log; raises NoQuorum (503) or ValueError (409) when refused.

        A change goes into the log only when the new configuration keeps a quorum this replica can
        reach, a newcomer counting once it has proven to be a live replica of this cluster
        (`membership.py`). One change at a time through this replica.
        """
        timeout = timeout or self.settings.write_timeout
        check_raft_address(address)
        if action not in ("add", "remove"):
            raise ValueError(f"Unknown membership change {action!r}; add or remove.")
        sync_obj = self._sync_obj
        if sync_obj is None or not sync_obj.hasQuorum:
            raise NoQuorum("No quorum: the membership of the cluster cannot change now.")
        if not self._membership_lock.acquire(blocking=False):
            raise NoQuorum("Another membership change is in progress on this replica: one at a time.", retry_after=2)
        try:
            members, reachable, leader = self._membership_view()
            if action == "add" and address in members:
                raise ValueError(f"{address} is already a member of the cluster.")
            if action == "remove" and address not in members:
                raise ValueError(f"{address} is not a member of the cluster.")
            if action == "add":
                check_add(address, members, reachable, lambda: self._probe(address, members))
            else:
                check_remove(address, members, reachable, leader)
            self._commit_membership(sync_obj, action, address, timeout, lone=members == {self.settings.address})
        finally:
            self._membership_lock.release()
        logger.info("cluster membership: %s %s", "added" if action == "add" else "removed", address)

    def _membership_view(self) -> tuple[set[str], set[str], str | None]:
        """The members, those of them this replica reaches (itself included), and the leader it knows."""
        sync_obj = self._sync_obj
        others = sync_obj.otherNodes
        members = {node.address for node in others} | {self.settings.address}
        reachable = {node.address for node in others if sync_obj.isNodeConnected(node)} | {self.settings.address}
        leader = sync_obj._getLeader()
        return members, reachable, leader.address if leader is not None else None

    def _probe(self, address: str, members: set[str]) -> Any:
        # The cipher this replica sends: the newcomer reads it as it would this replica's own messages.
        cipher = self.settings.cipher if _tuned() else "fernet"
        probed = probe_replica(address, self.settings.password, cipher, timeout=min(3.0, self.settings.write_timeout))
        logger.info("cluster membership: %s answered as a replica counting %s", address, sorted(probed.peers))
        return probed

    def _commit_membership(self, sync_obj: SyncObj, action: str, address: str, timeout: float, lone: bool) -> None:
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def on_result(result: Any, error: int) -> None:
            outcome["error"] = error
            done.set()

        change = sync_obj.addNodeToCluster if action == "add" else sync_obj.removeNodeFromCluster
        change(address, callback=on_result)
        if not done.wait(timeout):
            taken_back = self._abandon_addition(address) if action == "add" and lone else "kept"
            if taken_back == "committed":
                return  # in the time it took to look
            if taken_back == "abandoned":
                raise MembershipRefused(
                    f"{address} answered the probe but did not acknowledge its admission within {timeout:.0f} s. "
                    "The change was taken back before it committed: the cluster is as it was and takes writes. "
                    f"Check that {address} runs and can reach this replica, then retry."
                )
            raise NoQuorum(
                f"The membership change was not committed within {timeout:.0f} s: it commits once a quorum of the "
                f"new configuration answers{f', {address} included' if action == 'add' else ''}. "
                f"Check that {address if action == 'add' else 'the remaining replicas'} run; see cluster_status.",
                retry_after=1,
            )
        if outcome["error"] != FAIL_REASON.SUCCESS:
            raise NoQuorum(
                f"The membership change was refused ({_fail_reason(outcome['error'])}); another change may still be "
                "in progress: change one replica at a time.",
                retry_after=2,
            )

    def _abandon_addition(self, address: str) -> str:
        """Take back an uncommitted addition on the tick thread; what `_SyncObj.abandon_lone_addition` answered."""
        sync_obj = self._sync_obj
        finished = threading.Event()
        answer: list[str] = []

        def once() -> None:
            if not finished.is_set():
                answer.append(sync_obj.abandon_lone_addition(address))
                finished.set()

        sync_obj.addOnTickCallback(once)
        try:
            finished.wait(5)
        finally:
            sync_obj.removeOnTickCallback(once)
        if answer != ["abandoned"]:
            return answer[0] if answer else "kept"
        logger.warning("cluster membership: took back the uncommitted addition of %s (it never acknowledged)", address)
        try:
            self.wait_for_leader(5)  # alone again, this replica elects itself at its next tick
        except NoQuorum:
            logger.error("cluster membership: no leader again after taking back the addition of %s", address)
        return "abandoned"

    # ---- observing -----------------------------------------------------------------

    @property
    def state(self) -> DesiredState:
        """The live state: its items change in place as batches apply (`digest` and `export` read them safely)."""
        return self.log.state

    def digest(self) -> str:
        return self.log.digest()

    def export(self) -> dict[str, Any]:
        return self.log.export()

    def status(self) -> dict[str, Any]:
        """What an operator needs: who leads since when, who is connected, who is behind by how much."""
        view = self._observe()
        return {**view, "digest": self.log.digest()}

    def _observe(self) -> dict[str, Any]:
        sync_obj = self._sync_obj
        raw = sync_obj.getStatus() if sync_obj else {}
        leader = raw.get("leader")
        if leader is not None and leader.address != self.settings.address and not sync_obj.isNodeConnected(leader):
            # PySyncObj keeps the last leader it heard of while it can reach nobody: that is not who leads now.
            leader = None
        commit_index = raw.get("commit_idx")
        role = {0: "follower", 1: "candidate", _LEADER: "leader"}.get(raw.get("state"), "stopped")
        peers = []
        for node in sorted(sync_obj.otherNodes, key=lambda n: n.address) if sync_obj else []:
            connected = sync_obj.isNodeConnected(node)
            match_index = raw.get(f"match_idx_server_{node.id}")
            peers.append(
                {
                    "address": node.address,
                    "connected": connected,
                    "connected_since" if connected else "disconnected_since": self._transitions.since(
                        f"peer:{node.address}", connected
                    ),
                    "match_index": match_index,
                    # Known on the leader only: log entries the peer has yet to receive.
                    "behind": max(0, commit_index - match_index) if role == "leader" and match_index else None,
                }
            )
        leader_address = leader.address if leader is not None else None
        return {
            "self": self.settings.address,
            "role": role,
            "role_since": self._transitions.since("role", role),
            "leader": leader_address,
            "leader_since": self._transitions.since("leader", leader_address),
            "term": raw.get("raft_term"),
            "commit_index": commit_index,
            "last_applied": raw.get("last_applied"),
            "has_quorum": bool(raw.get("has_quorum")),
            "peers": peers,
            "state_seq": self.state.seq,
            "projected_seq": self.projection.applied.value,
        }

    def _watch(self) -> None:
        """Notice transitions as they happen (so `*_since` is right), and diagnose silent peers."""
        while not self._stopping.wait(0.5):
            try:
                for peer in self._observe()["peers"]:
                    self._diagnose(peer)
            except Exception:  # never let the watcher die; status() still works without it
                logger.debug("cluster watch failed", exc_info=True)

    def _diagnose(self, peer: dict[str, Any]) -> None:
        """A peer that accepts TCP but never completes the handshake is almost always a password mismatch."""
        address = peer["address"]
        if peer["connected"]:
            self._diagnosed.pop(address, None)
            return
        now = time.monotonic()
        first_seen, last_told = self._diagnosed.setdefault(address, [now, 0.0])
        if now - first_seen < 5 or now - last_told < 60:
            return
        self._diagnosed[address][1] = now
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            logger.warning("raft peer %s is unreachable (is it running?)", address)
            return
        logger.error(
            "raft peer %s accepts connections but never completes the encrypted handshake: the two replicas have "
            "different MESH_RAFT_PASSWORD values, or %s does not count this replica as a member (see "
            "cluster_member add), or it is not an infermesh replica",
            address,
            address,
        )

    def _state_changed(self, old_state: int, new_state: int) -> None:
        """A new leader announces itself through the log, so every replica records the same event."""
        if new_state != _LEADER:
            return
        term = self._sync_obj.raftCurrentTerm if self._sync_obj else None
        announcement = {
            "format": LOG_FORMAT,
            "key": f"leader:{self.settings.address}:{term}",
            "actor": "raft",
            "leader": self.settings.address,
            "ops": [],
            "events": [{"type": "LEADER_CHANGED", "data": {"leader": self.settings.address, "term": term}}],
        }
        # Runs on the tick thread: propose without waiting (a synchronous call here would deadlock).
        self.log.apply_batch(announcement, callback=lambda result, error: None)


def _tuned() -> bool:
    """Whether this process runs PySyncObj as infermesh tunes it (not the benchmark's baseline)."""
    from django.conf import settings

    return getattr(settings, "MESH_RAFT_PROFILE", "tuned") != "pysyncobj-defaults"


def _fail_reason(code: int) -> str:
    names = {
        FAIL_REASON.QUEUE_FULL: "the write queue is full",
        FAIL_REASON.MISSING_LEADER: "no leader",
        FAIL_REASON.DISCARDED: "the entry was discarded by a new leader",
        FAIL_REASON.NOT_LEADER: "this replica lost leadership",
        FAIL_REASON.LEADER_CHANGED: "the leader changed",
        FAIL_REASON.REQUEST_DENIED: "the request was denied",
    }
    return names.get(code, f"raft failure {code}")
