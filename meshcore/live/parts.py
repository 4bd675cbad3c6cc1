"""This process's telemetry parts, made once: store, ingest, mirror, publisher, sweeper."""

from __future__ import annotations

import threading

from meshcore.live.health import HealthSweeper
from meshcore.live.ingest import TelemetryIngest
from meshcore.live.mirror import FleetMirror
from meshcore.live.publisher import TelemetryPublisher
from meshcore.live.store import live_store

_lock = threading.Lock()
_ingest: TelemetryIngest | None = None
_mirror: FleetMirror | None = None
_publisher: TelemetryPublisher | None = None


def fleet_mirror() -> FleetMirror:
    global _mirror
    with _lock:
        if _mirror is None:
            _mirror = FleetMirror()
        return _mirror


def telemetry_publisher() -> TelemetryPublisher:
    global _publisher
    with _lock:
        if _publisher is None:
            _publisher = TelemetryPublisher()
        return _publisher


def telemetry_ingest() -> TelemetryIngest:
    global _ingest
    if _ingest is None:
        ingest = TelemetryIngest(live_store(), changes=fleet_mirror(), telemetry=telemetry_publisher())
        with _lock:
            if _ingest is None:
                _ingest = ingest
    return _ingest


def health_sweeper() -> HealthSweeper:
    return HealthSweeper(live_store(), fleet_mirror())


def reset() -> None:
    """Forget the parts (tests that switch stores or settings)."""
    global _ingest, _mirror, _publisher
    with _lock:
        for part in (_mirror, _publisher):
            if part is not None:
                part.stop()
        _ingest = _mirror = _publisher = None
