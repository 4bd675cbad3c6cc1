"""What the dashboard tests share: agent reports into a fresh live state store, telemetry and
events as the channel layer carries them, and a socket of a signed-in user."""

from __future__ import annotations

import time
from typing import Any

from channels.testing import WebsocketCommunicator

from meshcore.events import TELEMETRY_GROUP, telemetry_payload, telemetry_text
from meshcore.live.ingest import TelemetryIngest
from meshcore.live.mirror import apply_change
from meshcore.live.reports import parse_report
from meshcore.live.store import LiveStore

GIB = 1024**3
ORIGIN = (b"origin", b"http://127.0.0.1")


def gpu_sample(uuid: str, index: int = 0, *, util: int = 37, temp: int = 41, info: bool = True, **metrics: Any):
    sample: dict[str, Any] = {
        "uuid": uuid,
        "index": index,
        "metrics": {
            "utilization_gpu_pct": util,
            "memory_used_bytes": 20 * GIB,
            "memory_free_bytes": 60 * GIB,
            "temperature_gpu_c": temp,
            "power_usage_w": 312.4,
            "clocks_mhz": {"graphics": 1980, "memory": 2619, "sm": 1980},
            **metrics,
        },
    }
    if info:
        sample["info"] = {"name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 80 * GIB, "power_limit_w": 700.0}
    return sample


def runtime_sample(models: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": "triton",
        "url": "http://127.0.0.1:8100",
        "live": True,
        "ready": True,
        "models": [
            {
                "name": name,
                "version": "1",
                "state": state,
                "reason": "",
                "stats": {"queue_depth": 3, "inference_per_s": 41.5, "latency_ms": 23.0},
            }
            for name, state in (models or {}).items()
        ],
    }


def report(node: str, seq: int = 1, gpus: list | None = None, runtimes: list | None = None, kind: str = "snapshot"):
    return {
        "node": node,
        "agent": {"id": f"agent-{node}", "version": "0.1.0"},
        "seq": seq,
        "kind": kind,
        "interval_s": 1.0,
        "nvml": {"status": "ok"},
        "gpus": gpus if gpus is not None else [gpu_sample(f"GPU-{node}-0")],
        "runtimes": runtimes or [],
    }


class _Changes:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def submit(self, change: Any) -> None:
        self.items.append(change)


def ingest(store: LiveStore, body: dict[str, Any]) -> None:
    """A report into the store, and its slow changes into the database (GPU rows, instances, events) at once."""
    changes = _Changes()
    outcome = TelemetryIngest(store, changes=changes).ingest(parse_report(body))
    assert outcome.verdict == "accepted", outcome
    for change in changes.items:
        apply_change(change)


def telemetry_message(node: str, gpus: list[dict[str, Any]], instances: list | None = None, seq: int = 2) -> dict:
    """A `mesh.telemetry` message as the publisher sends it, for one node."""
    update = {"node": node, "time": time.time(), "seq": seq, "gpus": gpus, "instances": instances or []}
    return {"type": "mesh.telemetry", "updates": [{"node": node, "json": telemetry_text(telemetry_payload(update))}]}


async def publish_telemetry(layer: Any, node: str, gpus: list[dict[str, Any]], **kwargs: Any) -> None:
    await layer.group_send(TELEMETRY_GROUP, telemetry_message(node, gpus, **kwargs))


async def open_socket(query: str, *headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    from infermesh_site.asgi import application

    communicator = WebsocketCommunicator(application, f"/ws/dashboard/?{query}", headers=[ORIGIN, *headers])
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    return communicator


async def frames_within(communicator: WebsocketCommunicator, seconds: float) -> list[dict[str, Any]]:
    """Every JSON frame the socket sends within `seconds`."""
    frames = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if await communicator.receive_nothing(timeout=min(remaining, 0.05), interval=0.01):
            continue
        frames.append(await communicator.receive_json_from(timeout=1))
    return frames
