"""Reports as agents send them (docs/telemetry.md), and a client for the lean ingest path."""

from __future__ import annotations

import json
from typing import Any

import httpx
from asgiref.sync import async_to_sync

TELEMETRY_URL = "/api/v1/telemetry/"


def gpu(uuid: str = "GPU-1", index: int = 0, util: int = 10, name: str = "NVIDIA H100 80GB HBM3", info: bool = True):
    sample: dict[str, Any] = {
        "uuid": uuid,
        "index": index,
        "metrics": {"utilization_gpu_pct": util, "memory_used_bytes": 1024, "temperature_gpu_c": 40},
    }
    if info:
        sample["info"] = {"name": name, "memory_total_bytes": 85520809984}
    return sample


def runtime(models: dict[str, tuple[str, str]] | None = None, name: str = "triton", live: bool = True):
    return {
        "name": name,
        "url": "http://127.0.0.1:8100",
        "live": live,
        "ready": live,
        "models": [
            {"name": model, "version": "1", "state": state, "reason": reason, "stats": {"queue_depth": 2}}
            for model, (state, reason) in (models or {}).items()
        ],
    }


def report(node: str = "gpu-01", seq: int = 1, kind: str = "snapshot", agent: str = "agent-1", **extra: Any):
    body: dict[str, Any] = {
        "node": node,
        "agent": {"id": agent, "version": "0.1.0"},
        "seq": seq,
        "kind": kind,
        "interval_s": 1.0,
        "nvml": {"status": "ok"},
        "gpus": [gpu()] if kind == "snapshot" else [],
        "runtimes": [],
    }
    body.update(extra)
    return body


def post_lean(token: str | None, body: Any, headers: dict[str, str] | None = None, method: str = "POST"):
    """Through the ASGI application, as an agent's request arrives at `serve`."""
    from infermesh_site.asgi import application

    sent = {"Content-Type": "application/json", **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, TELEMETRY_URL, content=content, headers=sent)

    return async_to_sync(call)()
