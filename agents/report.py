"""Reports to the control plane: snapshots and deltas, sent without ever blocking collection.

Collection (NVML, Triton) only stores the latest samples in `LatestSamples`. A sender
thread builds a report from them every interval, relative to the last report the control
plane acknowledged: a delta names only the GPUs and runtimes that changed (a heartbeat
when nothing did), a snapshot everything, at start, every `snapshot_every_s`, and
whenever the control plane asks for one. A failed send is retried with exponential
backoff; since deltas are computed against what was acknowledged, nothing is lost.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

logger = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"


@dataclass
class LatestSamples:
    """The newest collected values; written by collectors, read by the sender."""

    nvml: dict[str, Any] = field(default_factory=lambda: {"status": "missing"})
    gpus: list[dict[str, Any]] = field(default_factory=list)
    runtimes: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_gpus(self, nvml: dict[str, Any], gpus: list[dict[str, Any]]) -> None:
        with self.lock:
            self.nvml, self.gpus = nvml, gpus

    def set_runtimes(self, runtimes: list[dict[str, Any]]) -> None:
        with self.lock:
            self.runtimes = runtimes

    def read(self) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        with self.lock:
            return self.nvml, list(self.gpus), list(self.runtimes)


class ReportBuilder:
    """Sequence numbers and deltas for one agent run (a new run has a new agent id)."""

    def __init__(self, node: str, interval_s: float, snapshot_every_s: float = 60.0, hostname: str = "") -> None:
        self.node = node
        self.interval_s = interval_s
        self.snapshot_every_s = snapshot_every_s
        self.agent = {"id": uuid.uuid4().hex, "version": AGENT_VERSION, "hostname": hostname}
        self.seq = 0
        self._acked_gpus: dict[str, dict[str, Any]] | None = None  # None: next report is a snapshot
        self._acked_runtimes: dict[str, dict[str, Any]] = {}
        self._last_snapshot_at = 0.0

    def require_snapshot(self) -> None:
        self._acked_gpus = None

    def build(self, nvml: dict[str, Any], gpus: list[dict[str, Any]], runtimes: list[dict[str, Any]]) -> dict[str, Any]:
        self.seq += 1
        now = time.monotonic()
        report: dict[str, Any] = {
            "node": self.node,
            "agent": self.agent,
            "seq": self.seq,
            "interval_s": self.interval_s,
            "sent_at": time.time(),
            "nvml": nvml,
        }
        if self._acked_gpus is None or now - self._last_snapshot_at >= self.snapshot_every_s:
            report.update(kind="snapshot", gpus=gpus, runtimes=runtimes)
            return report
        current_gpus = {gpu["uuid"]: gpu for gpu in gpus}
        changed_gpus = []
        for uuid_, gpu in current_gpus.items():
            acked = self._acked_gpus.get(uuid_)
            if acked is None or acked.get("info") != gpu.get("info"):
                changed_gpus.append(gpu)
            elif _without(acked, "info") != _without(gpu, "info"):
                changed_gpus.append(_without(gpu, "info"))
        current_runtimes = {runtime["name"]: runtime for runtime in runtimes}
        report.update(
            kind="delta",
            gpus=changed_gpus,
            removed_gpus=sorted(set(self._acked_gpus) - set(current_gpus)),
            runtimes=[rt for name, rt in current_runtimes.items() if self._acked_runtimes.get(name) != rt],
            removed_runtimes=sorted(set(self._acked_runtimes) - set(current_runtimes)),
        )
        return report

    def acknowledged(self, report: dict[str, Any], gpus: list[dict[str, Any]], runtimes: list[dict[str, Any]]) -> None:
        """The control plane now holds exactly these samples."""
        self._acked_gpus = {gpu["uuid"]: gpu for gpu in gpus}
        self._acked_runtimes = {runtime["name"]: runtime for runtime in runtimes}
        if report["kind"] == "snapshot":
            self._last_snapshot_at = time.monotonic()


def _without(sample: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in sample.items() if name != key}


class ReportSink(Protocol):
    def send(self, report: dict[str, Any]) -> dict[str, Any]:
        """Deliver one report; returns the control plane's answer or raises SendFailed."""
        ...


class SendFailed(Exception):
    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class HttpSink:
    """POST /api/v1/telemetry/ with the node token, over one kept-alive connection."""

    def __init__(self, control_plane_url: str, token: str, timeout_s: float = 5.0, verify: bool | str = True) -> None:
        import httpx

        self.url = control_plane_url.rstrip("/") + "/api/v1/telemetry/"
        self._client = httpx.Client(
            timeout=timeout_s,
            verify=verify,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )

    def send(self, report: dict[str, Any]) -> dict[str, Any]:
        import httpx

        try:
            response = self._client.post(self.url, content=json.dumps(report, separators=(",", ":")))
        except httpx.HTTPError as error:
            raise SendFailed(f"control plane unreachable at {self.url}: {error}") from error
        if response.status_code == 200:
            return response.json()
        detail = response.text[:500]
        # 401/403/400 will not fix themselves by retrying the same report; 5xx and 429 may.
        retryable = response.status_code >= 500 or response.status_code == 429
        raise SendFailed(f"control plane answered {response.status_code}: {detail}", retryable=retryable)

    def close(self) -> None:
        self._client.close()


class Backoff:
    def __init__(self, first_s: float = 0.5, max_s: float = 30.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        delay = min(self.max_s, self.first_s * 2 ** (self.failures - 1))
        return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security

    def reset(self) -> None:
        self.failures = 0


class Reporter:
    """The sender thread: a report every interval (sooner when collection says so)."""

    name = "agent reporter"

    def __init__(
        self,
        builder: ReportBuilder,
        samples: LatestSamples,
        sink: ReportSink,
        backoff: Backoff | None = None,
        on_answer: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.builder = builder
        self.samples = samples
        self.sink = sink
        self.backoff = backoff or Backoff()
        self.on_answer = on_answer
        self.sent = 0
        self.failed = 0
        self.last_error = ""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="agent-reporter", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def poke(self) -> None:
        """New samples are in: report now rather than at the end of the interval."""
        self._wake.set()

    def send_once(self) -> bool:
        nvml, gpus, runtimes = self.samples.read()
        report = self.builder.build(nvml, gpus, runtimes)
        try:
            answer = self.sink.send(report)
        except SendFailed as error:
            self.failed += 1
            if error.retryable:
                self._log_failure(error)
            else:
                logger.error("report %d refused: %s", report["seq"], error)
            return False
        self.sent += 1
        if self.backoff.failures:
            logger.info("control plane reachable again after %d failed report(s)", self.backoff.failures)
        self.backoff.reset()
        self.last_error = ""
        if answer.get("snapshot_required"):
            self.builder.require_snapshot()
        else:
            self.builder.acknowledged(report, gpus, runtimes)
        if self.on_answer is not None:
            self.on_answer(answer)
        return True

    def _log_failure(self, error: SendFailed) -> None:
        message = str(error)
        if message != self.last_error:
            logger.warning("report not delivered, retrying with backoff: %s", message)
        self.last_error = message

    def _run(self) -> None:
        while not self._stop.is_set():
            delivered = self.send_once()
            wait = self.builder.interval_s if delivered else self.backoff.next_delay()
            self._wake.clear()
            if delivered:
                self._wake.wait(wait)
            else:
                self._stop.wait(wait)
