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

from meshcore.channel_bridge import run_from_thread
from meshcore.events import TELEMETRY_GROUP, telemetry_text

logger = logging.getLogger(__name__)


class TelemetryPublisher:
    name = "telemetry publisher"

    def __init__(self, period_s: float = 0.2) -> None:
        self.period_s = period_s
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="telemetry-publisher", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def submit(
        self, node: str, seen_at: float, gpus: list[dict[str, Any]], instances: list[dict[str, Any]], seq: int = 0
    ) -> None:
        update = {"node": node, "time": seen_at, "seq": seq, "gpus": gpus, "instances": instances}
        with self._lock:
            self._pending[node] = update
        if self._thread is None:
            self.start()
        self._wake.set()

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

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            started = time.monotonic()
            try:
                self.flush()  # waits for the send: while the loop is busy, reports coalesce here
            except Exception:
                logger.warning("could not publish telemetry", exc_info=True)
            # Coalesce what arrives in the rest of the window into one message.
            self._stop.wait(max(0.0, self.period_s - (time.monotonic() - started)))
