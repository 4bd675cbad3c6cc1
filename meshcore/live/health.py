"""The health sweeper: a node that misses 3 of its report intervals turns unhealthy.

Every control-plane process runs one; a lock in the live state store lets one of them
sweep at a time, and the store flips each node atomically, so each change is announced
once. A node turns healthy again when it next reports (that is ingest's to notice).
"""

from __future__ import annotations

import logging
import time
import uuid

from meshcore.background import BackgroundLoop
from meshcore.live.mirror import FleetMirror, NodeSilent
from meshcore.live.store import LiveStore

logger = logging.getLogger(__name__)

MISSED_INTERVALS = 3
LOCK_NAME = "health-sweeper"


class HealthSweeper(BackgroundLoop):
    name = "health sweeper"
    thread_name = "health-sweeper"

    def __init__(self, store: LiveStore, mirror: FleetMirror, period_s: float = 0.5) -> None:
        super().__init__(period_s)
        self.store = store
        self.mirror = mirror
        self.owner = uuid.uuid4().hex

    def step(self) -> None:
        self.sweep_once()  # a failure (Redis away for a moment) is logged and tried again next period

    def sweep_once(self) -> list[str]:
        """Mark silent nodes unhealthy if this process holds the sweeper lock; returns them."""
        if not self.store.try_lock(LOCK_NAME, self.owner, ttl_s=max(5.0, self.period_s * 4)):
            return []
        now = time.time()
        turned = self.store.sweep(now, MISSED_INTERVALS)
        if turned:
            records = self.store.read(turned)
            for node in turned:
                received = records.get(node, {}).get("received_at")
                self.mirror.submit(NodeSilent(node, float(received) if received else None))
        return turned
