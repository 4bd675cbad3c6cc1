"""Triton sequences (stateful models) stay on the target that holds their state.

A request with `sequence_id` in its parameters goes where that sequence started; the entry
is dropped at `sequence_end` or after `idle_s` without a request (Triton's own sequence
idle timeout is of the same order, after which the server forgets the sequence too).
"""

from __future__ import annotations

import time
from collections import OrderedDict

SequenceKey = tuple[str, str | int]  # (model, sequence_id)


class SequenceTable:
    def __init__(self, idle_s: float = 600.0, max_entries: int = 1_000_000) -> None:
        self.idle_s = idle_s
        self.max_entries = max_entries
        self._targets: OrderedDict[SequenceKey, tuple[str, float]] = OrderedDict()

    def target_of(self, key: SequenceKey, now: float | None = None) -> str | None:
        now = time.monotonic() if now is None else now
        entry = self._targets.get(key)
        if entry is None:
            return None
        target, last_used = entry
        if now - last_used > self.idle_s:
            del self._targets[key]
            return None
        return target

    def remember(self, key: SequenceKey, target: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._targets[key] = (target, now)
        self._targets.move_to_end(key)
        self._expire(now)

    def forget(self, key: SequenceKey) -> None:
        self._targets.pop(key, None)

    def _expire(self, now: float) -> None:
        # Entries are in last-use order: drop idle ones from the front, and the oldest beyond the bound.
        while self._targets:
            key, (_, last_used) = next(iter(self._targets.items()))
            if now - last_used <= self.idle_s and len(self._targets) <= self.max_entries:
                return
            del self._targets[key]

    def __len__(self) -> int:
        return len(self._targets)
