"""ProposalQueue: one entry in flight, what queues behind it goes out together, each batch gets its own answer.

`send` here stands where PySyncObj's replicated call is: it records the entry and keeps the callback,
which the test calls the way the tick thread does once the entry has applied.
"""

from __future__ import annotations

import threading
import time

from pysyncobj import FAIL_REASON

from meshcore.replication.desired import DesiredState
from meshcore.replication.proposals import ProposalQueue


class Log:
    """Applies entries to a real DesiredState when the test says they committed."""

    def __init__(self) -> None:
        self.state = DesiredState()
        self.entries: list[dict] = []
        self.pending: list = []
        self.sent = threading.Condition()

    def send(self, entry, callback) -> None:
        with self.sent:
            self.entries.append(entry)
            self.pending.append((entry, callback))
            self.sent.notify_all()

    def commit_next(self, error: int = FAIL_REASON.SUCCESS) -> dict:
        with self.sent:
            assert self.sent.wait_for(lambda: self.pending, timeout=5), "nothing was sent"
            entry, callback = self.pending.pop(0)
        callback(self.state.apply(entry) if error == FAIL_REASON.SUCCESS else None, error)
        return entry


def node(name: str) -> dict:
    return {"format": 2, "key": name, "ops": [{"op": "create", "kind": "node", "data": {"name": name}}]}


def propose_in_thread(queue: ProposalQueue, batch: dict, outcomes: dict, timeout: float = 5) -> threading.Thread:
    def run() -> None:
        proposal = queue.propose(batch, timeout)
        outcomes[batch["key"]] = (proposal.result, proposal.error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def queued_behind_an_entry(queue: ProposalQueue, log: Log, names: list[str], outcomes: dict) -> list[threading.Thread]:
    """Propose "first", wait until it is in flight, then propose `names` behind it."""
    writers = [propose_in_thread(queue, node("first"), outcomes)]
    with log.sent:
        assert log.sent.wait_for(lambda: log.pending, timeout=5)
    writers += [propose_in_thread(queue, node(name), outcomes) for name in names]
    time.sleep(0.2)
    return writers


def test_a_lone_batch_goes_out_at_once_as_a_plain_entry():
    log = Log()
    queue = ProposalQueue(log.send)
    outcomes: dict = {}
    writer = propose_in_thread(queue, node("gpu-a"), outcomes)
    assert log.commit_next() == node("gpu-a")
    writer.join(5)
    result, error = outcomes["gpu-a"]
    assert (result["status"], result["seq"], error) == ("ok", 1, FAIL_REASON.SUCCESS)


def test_batches_proposed_while_an_entry_commits_share_the_next_entry():
    log = Log()
    queue = ProposalQueue(log.send)
    outcomes: dict = {}
    # later-0 twice, as a resent request would be: it applies once.
    writers = queued_behind_an_entry(queue, log, [f"later-{n}" for n in range(5)] + ["later-0"], outcomes)
    assert len(log.entries) == 1, "nothing more goes out while the first entry is in flight"

    log.commit_next()
    group = log.commit_next()
    for writer in writers:
        writer.join(5)
    assert sorted(member["key"] for member in group["group"]) == sorted(
        ["later-0"] * 2 + [f"later-{n}" for n in range(1, 5)]
    )
    assert group["format"] == 2
    assert {key: result["status"] for key, (result, _) in outcomes.items()} == dict.fromkeys(outcomes, "ok")
    assert sorted(result["seq"] for result, _ in outcomes.values()) == [1, 2, 3, 4, 5, 6]
    assert log.state.seq == 6


def test_every_batch_of_a_failed_entry_learns_the_failure():
    log = Log()
    queue = ProposalQueue(log.send)
    outcomes: dict = {}
    writers = queued_behind_an_entry(queue, log, [f"later-{n}" for n in range(3)], outcomes)
    log.commit_next()
    log.commit_next(error=FAIL_REASON.LEADER_CHANGED)
    for writer in writers:
        writer.join(5)
    assert [outcomes[f"later-{n}"] for n in range(3)] == [(None, FAIL_REASON.LEADER_CHANGED)] * 3
    assert log.state.seq == 1


def test_an_entry_that_never_answers_holds_the_others_back_only_for_a_while():
    log = Log()
    queue = ProposalQueue(log.send, stall_s=0.2)
    outcomes: dict = {}
    stuck = propose_in_thread(queue, node("stuck"), outcomes, timeout=0.5)
    with log.sent:
        assert log.sent.wait_for(lambda: log.pending, timeout=5)
    lost = log.pending.pop(0)  # its answer never comes
    later = propose_in_thread(queue, node("later"), outcomes)
    log.commit_next()  # sent once the stuck entry has been in flight for stall_s
    later.join(5)
    stuck.join(5)
    assert outcomes["later"][0]["status"] == "ok"
    assert outcomes["stuck"] == (None, None), "the stuck proposer timed out"
    lost[1](None, FAIL_REASON.DISCARDED)  # a late answer frees nothing and breaks nothing
    assert queue.propose(node("after"), 0.05).error is None
    assert log.commit_next() == node("after")


def test_a_send_that_raises_answers_its_batches_and_frees_the_queue():
    log = Log()
    calls = []

    def send(entry, callback):
        calls.append(entry)
        if len(calls) == 1:
            raise RuntimeError("cannot pickle")
        log.send(entry, callback)

    queue = ProposalQueue(send)
    assert queue.propose(node("a"), 5).error == FAIL_REASON.REQUEST_DENIED
    outcomes: dict = {}
    writer = propose_in_thread(queue, node("b"), outcomes)
    log.commit_next()
    writer.join(5)
    assert outcomes["b"][0]["status"] == "ok"
