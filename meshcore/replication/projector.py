"""The projector: writes committed batches to this replica's database, in commit order, off the tick thread.

Who writes a committed batch, and how soon, depends on who waits for it:

- `WRITER`: a writer in this process waits for its own lone batch. It writes it itself
  (`project_pending`), with whatever committed before it: no hand-off to this thread and back.
  Should it not (it gave up, or its write failed), it wakes this thread, which in any case
  writes the batch after `writer_grace_s`.
- `NOW`: a writer here waits for this thread to write it (one of a group entry's batches).
- `SOON`: nobody here waits (a follower's share of other replicas' writes, history at start).
  It is written within `coalesce_s`, in one transaction with whatever commits meanwhile: a
  follower then pays one transaction for many writes, not one each, and leaves the CPU to
  the writes someone waits for.

Events are announced by this thread alone, in commit order, within `coalesce_s` of their write
and many at once: nobody waits for them.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connections

logger = logging.getLogger(__name__)

WRITER = "writer"
NOW = "now"
SOON = "soon"

MAX_GROUP = 64  # committed batches projected in one transaction at most

_GAVE_UP = object()  # a projection abandoned because the replica is stopping


class _Queued:
    """One thing for the projector to do, in commit order; `due` is when it must be started at the latest."""

    __slots__ = ("action", "due", "first", "for_writer", "second")

    def __init__(self, action: str, first: Any, second: Any, due: float, for_writer: bool = False) -> None:
        self.action = action  # "apply" (first: batch, second: result), "rebuild" (first: state) or "stop"
        self.first = first
        self.second = second
        self.due = due
        self.for_writer = for_writer  # its writer writes it, unless it is due first


class Projector(threading.Thread):
    """Writes committed batches to the database in commit order and announces their events (see the module)."""

    retry_delay_s = 1.0  # after a failed write to the database
    coalesce_s = 0.02  # how long a batch nobody here waits for (and an event) may wait for company
    writer_grace_s = 1.0  # a batch left to its writer: this thread writes it after this, should the writer not

    def __init__(
        self,
        apply: Callable[[list[tuple[dict[str, Any], dict[str, Any]]]], Any],
        rebuild: Callable[[Any], None],
        announce: Callable[[list[Any]], None] | None = None,
    ) -> None:
        super().__init__(name="infermesh-projector", daemon=True)
        self._apply = apply  # writes a group of committed batches; returns a list of what `announce` takes
        self._rebuild = rebuild
        self._announce = announce
        self._pending: collections.deque[_Queued] = collections.deque()  # in commit order
        self._unannounced: list[Any] = []  # what was written and not yet announced, in commit order
        self._announce_due = math.inf
        self._arrived = threading.Condition()  # guards _pending, _unannounced and the due times
        self._sleeping_until = math.inf  # when this thread wakes next unless notified
        self._writing = threading.Lock()  # one thread writes at a time, so commit order holds
        self._stopping = False

    # ---- what the replica tells it ------------------------------------------------------

    def committed(
        self, batch: dict[str, Any], result: dict[str, Any], announce: bool = True, waiting: str = SOON
    ) -> None:
        """Queue a committed batch; `waiting` says who waits for it (`WRITER`, `NOW` or `SOON`)."""
        delay = {WRITER: self.writer_grace_s, NOW: 0.0, SOON: self.coalesce_s}[waiting]
        item = _Queued("apply", batch, {**result, "announce": announce}, time.monotonic() + delay, waiting == WRITER)
        self._put(item)

    def restored(self, state: Any) -> None:
        self._put(_Queued("rebuild", state, None, 0.0))

    def stop(self) -> None:
        self._stopping = True
        self._put(_Queued("stop", None, None, 0.0))

    def wake(self) -> None:
        """Write everything queued now (a writer did not write its batch)."""
        with self._arrived:
            for item in self._pending:
                item.due = 0.0
            self._arrived.notify()

    def _put(self, item: _Queued) -> None:
        with self._arrived:
            self._pending.append(item)
            if item.due < self._sleeping_until:
                self._arrived.notify()

    # ---- a writer writing its own batch -------------------------------------------------

    def project_pending(self) -> None:
        """Write, in the calling thread, the committed batches at the head of the queue.

        Anything else at the head (a snapshot to rebuild from), and a write that fails, is left
        to this thread, which retries; the caller then waits for the applied index as before.
        """
        if not self._writing.acquire(blocking=False):
            # Another thread is writing, most likely this batch among others: waiting in line for the lock
            # would only wake the writers one by one. The projector thread writes whatever that one leaves.
            self.wake()
            return
        try:
            with self._arrived:
                group = self._head_group(len(self._pending))
            if group:
                self._write(group, retry=False)
        finally:
            self._writing.release()

    # ---- this thread ----------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._project_until_stopped()
        finally:
            # A stopped replica gives its database connections back (a pool would otherwise lose them).
            connections.close_all()

    def _project_until_stopped(self) -> None:
        while True:
            self._wait_until_due()
            stopped = self._write_what_is_due()
            self._announce_written()
            if stopped:
                return

    def _wait_until_due(self) -> None:
        with self._arrived:
            while True:
                due = min((item.due for item in self._pending), default=math.inf)
                due = min(due, self._announce_due)
                if len(self._pending) >= MAX_GROUP:
                    due = 0.0  # a full group goes at once
                wait = due - time.monotonic()
                if wait <= 0:
                    self._sleeping_until = math.inf
                    return
                self._sleeping_until = due
                self._arrived.wait(None if due == math.inf else wait)

    def _write_what_is_due(self) -> bool:
        """Write, unit by unit, everything up to the last item that is due; True when told to stop."""
        while True:
            with self._writing:
                with self._arrived:
                    through = self._last_due_index()
                    if through < 0:
                        return False
                    head = self._pending[0]
                    group = self._head_group(through + 1) if head.action == "apply" else []
                if head.action == "stop":
                    return True
                if group:
                    if self._write(group, retry=True) is _GAVE_UP:
                        return True
                    continue
                if self._retrying(lambda state=head.first: self._rebuild(state)) is _GAVE_UP:
                    return True
                with self._arrived:
                    self._pending.popleft()  # the head: only a holder of `_writing` takes from it

    def _last_due_index(self) -> int:
        """How far to write now: -1 for nothing, else through the last item that is due.

        Everything before a due item goes first, in commit order, and what follows it goes along
        (it has committed; it would only wait for more company) up to a batch its writer writes.
        """
        pending = self._pending
        if len(pending) >= MAX_GROUP:
            return len(pending) - 1
        now = time.monotonic()
        through = next((index for index in range(len(pending) - 1, -1, -1) if pending[index].due <= now), -1)
        if through < 0:
            return -1
        while through + 1 < len(pending) and not pending[through + 1].for_writer:
            through += 1
        return through

    def _head_group(self, limit: int) -> list[_Queued]:
        """The committed batches at the head of the queue, among its first `limit` items (MAX_GROUP at most)."""
        group = []
        for item in self._pending:
            if item.action != "apply" or len(group) == min(limit, MAX_GROUP):
                break
            group.append(item)
        return group

    def _write(self, group: list[_Queued], retry: bool) -> Any:
        """Write `group` (the caller holds `_writing`) and queue its announcement; a writer does not retry."""
        batches = [(item.first, item.second) for item in group]
        if retry:
            projected = self._retrying(lambda: self._apply(batches))
            if projected is _GAVE_UP:
                return projected
        else:
            try:
                projected = self._apply(batches)
            except Exception:
                logger.warning("a writer's projection failed; the projector thread retries it", exc_info=True)
                self.wake()
                return None
        with self._arrived:
            for _ in group:
                self._pending.popleft()  # the group is the head: only a holder of `_writing` takes from it
            if projected and self._announce is not None:
                self._unannounced.extend(projected)
                if self._announce_due == math.inf:
                    self._announce_due = time.monotonic() + self.coalesce_s
                    if self._announce_due < self._sleeping_until:
                        self._arrived.notify()
        return projected

    def _announce_written(self) -> None:
        with self._arrived:
            projected, self._unannounced = self._unannounced, []
            self._announce_due = math.inf
        if not projected or self._announce is None:
            return
        try:
            self._announce(projected)
        except Exception:  # best effort: the change is in the database either way
            logger.warning("announcing committed changes failed", exc_info=True)

    def _retrying(self, project: Callable[[], Any]) -> Any:
        while True:
            try:
                # The thread keeps one connection (reopening SQLite per batch cost half its time).
                return project()
            except Exception:
                # The entries are committed; the database must take them. Retry, on a fresh connection.
                logger.exception("projecting a committed change failed; retrying in %.0f s", self.retry_delay_s)
                connections.close_all()
                if self._stopping:
                    return _GAVE_UP
                time.sleep(self.retry_delay_s)
