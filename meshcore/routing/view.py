"""Keeps this process's routing table current, off the request path.

A background part of `serve`: it re-reads desired state when the projection says it changed
(and every `desired_every_s` as a safety net), reads the live store every `poll_s` (so a
telemetry report reaches routing within that), and swaps in a new immutable table. A request
reads `routing_view.table` and nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connections

from meshcore.background import BackgroundLoop
from meshcore.live.store import LiveStore, live_store
from meshcore.routing.desired import DesiredSnapshot, read_desired
from meshcore.routing.table import RoutingTable, build_table, empty_table

logger = logging.getLogger(__name__)


class RoutingView(BackgroundLoop):
    name = "routing view"
    thread_name = "routing-view"

    def __init__(
        self,
        store: Callable[[], LiveStore] = live_store,
        poll_s: float = 0.5,
        desired_every_s: float = 5.0,
    ) -> None:
        super().__init__(poll_s)
        self.store = store
        self.desired_every_s = desired_every_s
        self.table: RoutingTable = empty_table()
        self.desired: DesiredSnapshot | None = None
        self._desired_read_at = 0.0
        self._desired_dirty = threading.Event()

    # ---- hooks ----

    def desired_changed(self, batches: list[tuple[dict[str, Any], dict[str, Any]]] | None = None) -> None:
        """A projection hook: this replica's database has new desired state."""
        self._desired_dirty.set()
        self.wake()

    # ---- refreshing ----

    def refresh(self, read_desired_state: bool | None = None) -> RoutingTable:
        """Build a new table now (the background thread calls this; tests may too)."""
        now = time.time()
        due = now - self._desired_read_at >= self.desired_every_s
        if read_desired_state or (read_desired_state is None and (self.desired is None or due)):
            self._desired_dirty.set()
        if self._desired_dirty.is_set():
            self._desired_dirty.clear()
            self.desired = read_desired()
            self._desired_read_at = now
        table = build_table(
            self.desired or DesiredSnapshot(), self.store().read(), now, settings.MESH_ROUTING_STALE_MS / 1000
        )
        self.table = table
        return table

    def step(self) -> None:
        try:
            self.refresh()
        finally:
            connections.close_all()  # a pooled connection goes back between refreshes


routing_view = RoutingView()
