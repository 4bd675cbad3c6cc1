"""A background part of a mesh process: a named thread that runs one step per period until stopped.

`serve` starts and stops the parts (meshcore/process.py); a part's `step` does its work once,
and an error in a step is logged and tried again next period rather than ending the thread.
`wake()` runs the next step at once.
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger(__name__)


class BackgroundLoop:
    name = "background loop"
    thread_name = "infermesh-background"

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def step(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
                self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        self._thread = None

    def wake(self) -> None:
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.step()
            except Exception:
                logger.warning("%s: a step failed; trying again in %.1f s", self.name, self.period_s, exc_info=True)
            self._wake.wait(max(0.0, self.period_s - (time.monotonic() - began)))
            self._wake.clear()
