"""Batches proposed while a log entry is on its way travel together in the next one.

One entry is in flight at a time per replica. A lone writer's batch goes out at once, as a plain
entry, so sequential writes wait for nothing extra. Batches proposed while that entry commits wait
and then go out together as one group entry (`{"format": 2, "group": [...]}`): one pickling, one
encryption, one journal write and one round trip to the followers for all of them, which is most of
what a commit costs. Every batch still applies on its own and gets its own result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pysyncobj import FAIL_REASON

from meshcore.replication.desired import LOG_FORMAT

logger = logging.getLogger(__name__)
MAX_GROUP = 64  # batches in one entry at most; the rest go in the next
# An entry whose outcome has not come after this long no longer holds back the batches behind it
# (PySyncObj answers every entry eventually, but a replica cut off from its leader may wait long).
STALL_S = 1.0

Send = Callable[[dict[str, Any], Callable[[Any, int], None]], None]


class Proposal:
    """One batch waiting for its outcome: PySyncObj's result for it and the entry's FAIL_REASON."""

    __slots__ = ("_done", "batch", "error", "result")

    def __init__(self, batch: dict[str, Any]) -> None:
        self.batch = batch
        self.result: Any = None
        self.error: int | None = None
        self._done = threading.Event()

    def settle(self, result: Any, error: int) -> None:
        self.result, self.error = result, error
        self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)


class ProposalQueue:
    """Sends proposals through `send(entry, callback)`, grouping those that queue behind an entry in flight."""

    def __init__(self, send: Send, stall_s: float = STALL_S) -> None:
        self._send = send
        self._stall_s = stall_s
        self._lock = threading.Lock()
        self._waiting: list[Proposal] = []
        self._in_flight: object | None = None  # a token per entry: a late answer must not free a newer one
        self._in_flight_since = 0.0

    @property
    def in_flight(self) -> bool:
        """An entry was sent and has neither an outcome yet nor stalled."""
        return self._in_flight is not None and time.monotonic() - self._in_flight_since < self._stall_s

    def propose(self, batch: dict[str, Any], timeout: float) -> Proposal:
        """Queue `batch` and wait up to `timeout` s for its outcome (check `error` is None for a timeout)."""
        proposal = Proposal(batch)
        with self._lock:
            self._waiting.append(proposal)
        deadline = time.monotonic() + timeout
        self._send_next()
        while not proposal.wait(min(self._stall_s, max(deadline - time.monotonic(), 0))):
            if time.monotonic() >= deadline:
                break
            self._send_next()  # the entry ahead may have stalled
        return proposal

    def _send_next(self) -> None:
        with self._lock:
            busy = self._in_flight is not None and time.monotonic() - self._in_flight_since < self._stall_s
            if busy or not self._waiting:
                return
            group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
            token = self._in_flight = object()
            self._in_flight_since = time.monotonic()
        self._dispatch(group, token)

    def _dispatch(self, group: list[Proposal], token: object) -> None:
        entry = group[0].batch if len(group) == 1 else {"format": LOG_FORMAT, "group": [p.batch for p in group]}
        try:
            self._send(entry, lambda result, error: self._answered(group, token, result, error))
        except Exception:
            # Nothing reached the log: every batch of the group learns so at once.
            logger.exception("proposing a log entry failed")
            self._answered(group, token, None, FAIL_REASON.REQUEST_DENIED)

    def _answered(self, group: list[Proposal], token: object, result: Any, error: int) -> None:
        # Runs on PySyncObj's tick thread: hand out the results, then send what queued meanwhile.
        if len(group) == 1:
            group[0].settle(result, error)
        else:
            results = result["results"] if error == FAIL_REASON.SUCCESS and result["status"] == "group" else None
            for index, proposal in enumerate(group):
                proposal.settle(results[index] if results else result, error)
        with self._lock:
            if self._in_flight is token:
                self._in_flight = None
        self._send_next()
