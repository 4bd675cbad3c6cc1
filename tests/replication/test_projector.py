"""The projector writes committed batches in commit order; those that queued up meanwhile go in one transaction."""

import threading
import time

import pytest

from devtools.waiting import wait_until
from meshcore import registry
from meshcore.models import Event, Policy, ProjectionState
from meshcore.replication import projector as projector_module
from meshcore.replication.desired import DesiredState
from meshcore.replication.projection import DatabaseProjection, item_from_row
from meshcore.replication.projector import MAX_GROUP, NOW, WRITER, Projector
from meshcore.replication.raft import RaftSettings, Replica


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []

    def apply(self, group):
        self.calls.append(("apply", [result["seq"] for _, result in group]))

    def rebuild(self, state):
        self.calls.append(("rebuild", [state.seq]))


def run_until_stopped(projector: Projector, started: bool = False) -> None:
    projector.stop()
    if not started:
        projector.start()
    projector.join(timeout=10)
    assert not projector.is_alive()


def committed(projector: Projector, seq: int) -> None:
    projector.committed({"key": f"k{seq}"}, {"status": "ok", "seq": seq, "changes": []})


def test_batches_queued_together_are_applied_together_in_order():
    recorder = Recorder()
    projector = Projector(recorder.apply, recorder.rebuild)
    for seq in range(1, 6):
        committed(projector, seq)
    snapshot = DesiredState()
    snapshot.seq = 9
    projector.restored(snapshot)
    for seq in (10, 11):
        committed(projector, seq)
    run_until_stopped(projector)
    assert recorder.calls == [("apply", [1, 2, 3, 4, 5]), ("rebuild", [9]), ("apply", [10, 11])]


def test_a_group_is_bounded():
    recorder = Recorder()
    projector = Projector(recorder.apply, recorder.rebuild)
    for seq in range(1, MAX_GROUP + 3):
        committed(projector, seq)
    run_until_stopped(projector)
    assert [len(seqs) for _, seqs in recorder.calls] == [MAX_GROUP, 2]
    assert [seq for _, seqs in recorder.calls for seq in seqs] == list(range(1, MAX_GROUP + 3))


def test_a_failed_group_is_retried_whole(monkeypatch):
    monkeypatch.setattr(Projector, "retry_delay_s", 0.01)
    attempts = []

    def flaky(group):
        attempts.append([result["seq"] for _, result in group])
        if len(attempts) == 1:
            raise RuntimeError("database is locked")

    projector = Projector(flaky, lambda state: None)
    committed(projector, 1)
    committed(projector, 2)
    projector.start()
    assert wait_until(lambda: len(attempts) >= 2)
    committed(projector, 3)
    run_until_stopped(projector, started=True)
    assert attempts == [[1, 2], [1, 2], [3]]


def priority_updates(policy: Policy, applied: int, priorities: tuple[int, ...]) -> list[tuple[dict, dict]]:
    """Committed batches setting the policy's priority in turn, numbered on from `applied`."""
    state_item = item_from_row("policy", policy)
    group = []
    for offset, priority in enumerate(priorities, start=1):
        state_item = {**state_item, "priority": priority, "version": state_item["version"] + 1}
        batch = {"key": f"priority-{priority}", "actor": "test", "events": [{"type": "POLICY_UPDATED", "data": {}}]}
        change = {"op": "update", "kind": "policy", "item": state_item, "changed": ["priority"]}
        group.append((batch, {"status": "ok", "seq": applied + offset, "changes": [change]}))
    return group


@pytest.fixture
def projected_policy(transactional_db, operator):
    """A policy in the database, the sequence number projected so far, and a prepared projection."""
    policy = registry.create_policy(
        actor=operator, name="group-commit", kind="quota", spec={"scope": "global", "max_concurrent": 1}
    )
    projection = DatabaseProjection()
    projection.prepare()
    return policy, ProjectionState.objects.get(pk=1).applied_seq, projection


def test_the_database_projection_applies_a_group_once_each(projected_policy):
    policy, applied, projection = projected_policy
    group = priority_updates(policy, applied, (5, 6, 7))
    events_before = Event.objects.count()

    projection.apply_committed_group([group[0], *group])  # the first one twice: applied once
    assert Policy.objects.get(pk=policy.pk).priority == 7
    assert ProjectionState.objects.get(pk=1).applied_seq == applied + 3 == projection.applied.value
    assert Event.objects.count() == events_before + 3

    projection.apply_committed_group(group)  # all of it again, as a journal replay would
    assert Event.objects.count() == events_before + 3


def test_a_group_part_of_which_is_in_the_database_already_applies_only_the_rest(projected_policy):
    policy, applied, projection = projected_policy
    group = priority_updates(policy, applied, (11, 12, 13))
    # Another process projecting into the same database got the first batch in already.
    ProjectionState.objects.filter(pk=1).update(applied_seq=applied + 1)
    events_before = Event.objects.count()

    projection.apply_committed_group(group)
    assert Event.objects.count() == events_before + 2
    assert ProjectionState.objects.get(pk=1).applied_seq == applied + 3 == projection.applied.value
    assert Policy.objects.get(pk=policy.pk).priority == 13


class ThreadRecorder:
    """Records which thread wrote and which announced each group; `fail_first` makes the first write fail."""

    def __init__(self, fail_first: bool = False) -> None:
        self.fail_first = fail_first
        self.writes: list[tuple[str, list[int]]] = []
        self.announced: list[tuple[str, list[int]]] = []

    def apply(self, group):
        seqs = [result["seq"] for _, result in group]
        if self.fail_first and not self.writes:
            self.writes.append(("failed", seqs))
            raise RuntimeError("database is locked")
        self.writes.append((threading.current_thread().name, seqs))
        return seqs

    def announce(self, seqs):
        self.announced.append((threading.current_thread().name, seqs))


def test_a_waiting_writer_writes_what_committed_itself_and_the_thread_announces_it_in_order():
    recorder = ThreadRecorder()
    projector = Projector(recorder.apply, lambda state: None, recorder.announce)
    projector.start()
    try:
        committed(projector, 1)  # no writer waits for it: the projector thread writes it
        assert wait_until(lambda: recorder.announced == [("infermesh-projector", [1])])
        for seq in (2, 3):
            projector.committed({"key": f"k{seq}"}, {"status": "ok", "seq": seq, "changes": []}, waiting=WRITER)

        projector.project_pending()

        assert recorder.writes == [("infermesh-projector", [1]), ("MainThread", [2, 3])]
        assert wait_until(lambda: len(recorder.announced) == 2)
        assert recorder.announced[1] == ("infermesh-projector", [2, 3])
    finally:
        run_until_stopped(projector, started=True)


def test_a_writer_leaves_a_snapshot_to_the_thread_and_writes_nothing_behind_it():
    recorder = ThreadRecorder()
    projector = Projector(recorder.apply, lambda state: recorder.writes.append(("rebuild", [state.seq])))
    snapshot = DesiredState()
    snapshot.seq = 9
    projector.restored(snapshot)
    projector.committed({"key": "k10"}, {"status": "ok", "seq": 10, "changes": []}, waiting=WRITER)

    projector.project_pending()  # the rebuild is first in line: not this writer's to do
    assert recorder.writes == []

    run_until_stopped(projector)
    assert recorder.writes == [("rebuild", [9]), ("infermesh-projector", [10])]


def test_a_batch_its_writer_gave_up_on_is_written_by_the_thread_once_woken():
    recorder = ThreadRecorder()
    projector = Projector(recorder.apply, lambda state: None)
    projector.start()
    try:
        projector.committed({"key": "k1"}, {"status": "ok", "seq": 1, "changes": []}, waiting=WRITER)
        time.sleep(0.1)
        assert recorder.writes == []  # nobody woke the thread: it waits for the writer

        projector.wake()  # what Replica.propose does when it did not write its batch

        assert wait_until(lambda: recorder.writes == [("infermesh-projector", [1])], timeout=2)
    finally:
        run_until_stopped(projector, started=True)


def test_a_writers_failed_write_is_retried_by_the_thread(monkeypatch):
    monkeypatch.setattr(Projector, "retry_delay_s", 0.01)
    recorder = ThreadRecorder(fail_first=True)
    projector = Projector(recorder.apply, lambda state: None)
    projector.start()
    try:
        projector.committed({"key": "k1"}, {"status": "ok", "seq": 1, "changes": []}, waiting=WRITER)

        projector.project_pending()  # fails here; the batch stays queued

        assert wait_until(lambda: recorder.writes == [("failed", [1]), ("infermesh-projector", [1])], timeout=5)
    finally:
        run_until_stopped(projector, started=True)


def test_a_writer_that_finds_another_writing_leaves_its_batch_to_the_thread_without_waiting():
    recorder = ThreadRecorder()
    projector = Projector(recorder.apply, lambda state: None)
    projector.start()
    try:
        projector.committed({"key": "k1"}, {"status": "ok", "seq": 1, "changes": []}, waiting=WRITER)
        with projector._writing:  # another writer is writing
            returned = threading.Event()
            writer = threading.Thread(target=lambda: (projector.project_pending(), returned.set()), name="writer")
            writer.start()
            assert returned.wait(2), "the writer waited in line for the lock"
            assert recorder.writes == []

        assert wait_until(lambda: recorder.writes == [("infermesh-projector", [1])], timeout=5)
    finally:
        run_until_stopped(projector, started=True)


def test_a_group_entrys_batches_wake_the_projector_and_a_lone_awaited_batch_does_not():
    replica = Replica(RaftSettings(address="127.0.0.1:1", peers=(), password="", data_dir=None), DatabaseProjection())
    recorder = ThreadRecorder()
    replica.projector._apply = recorder.apply
    replica.projector.start()
    try:
        replica._awaited.update({"lone", "grouped"})
        replica._committed({"key": "lone"}, {"status": "ok", "seq": 1, "changes": []})
        time.sleep(0.2)
        assert recorder.writes == []  # left to its writer, who is waiting for it

        replica._committed({"key": "grouped"}, {"status": "ok", "seq": 2, "changes": []}, grouped=True)

        # Woken by the group's batch, the thread writes everything queued, in order.
        assert wait_until(lambda: recorder.writes == [("infermesh-projector", [1, 2])], timeout=5)
    finally:
        run_until_stopped(replica.projector, started=True)


def test_a_stopped_projector_gives_back_its_database_connections(monkeypatch):
    closed_by: list[str] = []
    monkeypatch.setattr(
        projector_module.connections, "close_all", lambda: closed_by.append(threading.current_thread().name)
    )
    projector = Projector(lambda group: None, lambda state: None)
    projector.start()

    run_until_stopped(projector, started=True)

    assert closed_by == ["infermesh-projector"]


def test_batches_nobody_here_waits_for_are_written_together_within_the_coalescing_window(monkeypatch):
    monkeypatch.setattr(Projector, "coalesce_s", 0.4)
    recorder = ThreadRecorder()
    projector = Projector(recorder.apply, lambda state: None, recorder.announce)
    projector.start()
    try:
        committed(projector, 1)  # a follower's share of a write proposed elsewhere
        time.sleep(0.1)
        committed(projector, 2)
        committed(projector, 3)
        assert recorder.writes == []  # waiting for company

        assert wait_until(lambda: recorder.writes == [("infermesh-projector", [1, 2, 3])], timeout=5)
        assert wait_until(lambda: recorder.announced == [("infermesh-projector", [1, 2, 3])], timeout=5)
    finally:
        run_until_stopped(projector, started=True)


def test_a_batch_a_writer_here_waits_for_takes_the_waiting_ones_before_it_at_once(monkeypatch):
    monkeypatch.setattr(Projector, "coalesce_s", 30.0)
    recorder = ThreadRecorder()
    projector = Projector(recorder.apply, lambda state: None)
    projector.start()
    try:
        committed(projector, 1)
        projector.committed({"key": "k2"}, {"status": "ok", "seq": 2, "changes": []}, waiting=NOW)

        assert wait_until(lambda: recorder.writes == [("infermesh-projector", [1, 2])], timeout=5)
    finally:
        run_until_stopped(projector, started=True)


def test_a_writer_writes_the_waiting_batches_before_its_own_and_the_thread_announces_its_writes_together(
    monkeypatch,
):
    monkeypatch.setattr(Projector, "coalesce_s", 0.4)
    recorder = ThreadRecorder()
    projector = Projector(recorder.apply, lambda state: None, recorder.announce)
    projector.start()
    try:
        committed(projector, 1)  # nobody here waits for it
        projector.committed({"key": "k2"}, {"status": "ok", "seq": 2, "changes": []}, waiting=WRITER)
        projector.project_pending()
        projector.committed({"key": "k3"}, {"status": "ok", "seq": 3, "changes": []}, waiting=WRITER)
        projector.project_pending()

        assert recorder.writes == [("MainThread", [1, 2]), ("MainThread", [3])]
        assert recorder.announced == []  # events wait for company too
        assert wait_until(lambda: recorder.announced == [("infermesh-projector", [1, 2, 3])], timeout=5)
    finally:
        run_until_stopped(projector, started=True)


def test_a_replica_leaves_what_nobody_there_waits_for_to_the_coalescing_window(monkeypatch):
    monkeypatch.setattr(Projector, "coalesce_s", 0.4)
    replica = Replica(RaftSettings(address="127.0.0.1:1", peers=(), password="", data_dir=None), DatabaseProjection())
    recorder = ThreadRecorder()
    replica.projector._apply = recorder.apply
    replica.projector.start()
    try:
        started = time.monotonic()
        replica._committed({"key": "proposed-elsewhere"}, {"status": "ok", "seq": 1, "changes": []})
        replica._committed({"key": "also-elsewhere"}, {"status": "ok", "seq": 2, "changes": []}, grouped=True)

        assert wait_until(lambda: recorder.writes == [("infermesh-projector", [1, 2])], timeout=5)
        assert time.monotonic() - started >= 0.35
    finally:
        run_until_stopped(replica.projector, started=True)
