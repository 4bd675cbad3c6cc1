"""Explain: the decision this process's router would make now for a model (the API, the command, a header)."""

from __future__ import annotations

import time
from typing import Any

from meshcore.proxy.app import proxy_app
from meshcore.routing import decide

# A table older than this is rebuilt before explaining (a process whose routing view is not running).
FRESH_S = 2.0


def explain_now(model: str, version: str = "", tenant: str | None = None) -> dict[str, Any]:
    view = proxy_app.view
    table = view.table
    if time.time() - table.built_at > FRESH_S:
        table = view.refresh()
    return decide.explain(table, proxy_app.balancer, model, version, tenant=tenant)


def control_action(request: dict[str, Any]) -> dict[str, Any]:
    """The control socket's `route_explain` action (`manage.py route explain` in another process)."""
    return {"explain": explain_now(str(request["model"]), str(request.get("version") or ""), request.get("tenant"))}
