"""Telemetry to the channel layer: the latest values per node, batched every few hundred ms.

A message per report would cost more than the report itself at fleet rates; subscribers
need the newest values, not every one, so reports in the same window are coalesced per
node and sent as one `mesh.telemetry` message.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from channels.layers import get_channel_layer

from meshcore.background import BackgroundLoop
from meshcore.channel_bridge import run_from_thread
from meshcore.events import TELEMETRY_GROUP, telemetry_text

logger = logging.getLogger(__name__)


class TelemetryPublisher(BackgroundLoop):
    name = "telemetry publisher"
    thread_name = "telemetry-publisher"

    def __init__(self, period_s: float = 0.2) -> None:
        super().__init__(period_s)
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def submit(
        self, node: str, seen_at: float, gpus: list[dict[str, Any]], instances: list[dict[str, Any]], seq: int = 0
    ) -> None:
        update = {"node": node, "time": seen_at, "seq": seq, "gpus": gpus, "instances": instances}
        with self._lock:
            self._pending[node] = update
        if not self.running:
            self.start()
        self.wake()

    def flush(self) -> int:
        with self._lock:
            updates, self._pending = list(self._pending.values()), {}
        if not updates:
            return 0
        # Encoded here, once: subscribers forward the text, and a message of strings packs fast.
        updates = [{"node": update["node"], "json": telemetry_text(update)} for update in updates]

        layer = get_channel_layer()
        if layer is None:
            return 0
        message = {"type": "mesh.telemetry", "updates": updates}
        run_from_thread(lambda: layer.group_send(TELEMETRY_GROUP, message))
        return len(updates)

    def step(self) -> None:
        self.flush()  # waits for the send: while the loop is busy, reports coalesce here

    def _run(self) -> None:
        # Unlike other parts, it sleeps until a report arrives, then coalesces for the rest of the window.
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            started = time.monotonic()
            try:
                self.step()
            except Exception:
                logger.warning("could not publish telemetry", exc_info=True)
            self._stop.wait(max(0.0, self.period_s - (time.monotonic() - started)))
