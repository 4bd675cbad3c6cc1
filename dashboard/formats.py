"""Readable units and tile states, as the server's first paint shows them.

dashboard/static/dashboard/dashboard.js formats the same values the same way (`Dash.fmt`,
`Dash.tileState`) for every later update; tests/dashboard/test_dashboard_in_browser.py compares the two.
"""

from __future__ import annotations

import time
from typing import Any

DASH = "\u2013"  # an en dash: "no value"
# A GPU is "hot" at or above this temperature, its memory "full" at or above this share.
HOT_C = 80
FULL_SHARE = 0.95
# A node is stale once it has missed this many report intervals (the health sweeper's rule).
STALE_INTERVALS = 3


def pct(value: Any) -> str:
    return DASH if value is None else f"{value} %"


def gib(mib: Any) -> str:
    return DASH if mib is None else f"{mib / 1024:.1f}"


def memory(used_mib: Any, total_mib: Any) -> str:
    if used_mib is None:
        return DASH
    return f"{gib(used_mib)}/{gib(total_mib)} GiB" if total_mib else f"{gib(used_mib)} GiB"


def memory_total(used_mib: Any, total_mib: Any) -> str:
    """A fleet's memory: in TiB once the total reaches one."""
    if used_mib is None or not total_mib or total_mib < 1024 * 1024:
        return memory(used_mib, total_mib)
    return f"{used_mib / 1024**2:.1f}/{total_mib / 1024**2:.1f} TiB"


def power_total(value: Any, limit: Any) -> str:
    """A fleet's power: in kW from 10 kW on."""
    if value is None or not limit or limit < 10_000:
        return watts(value, limit)
    return f"{value / 1000:.1f}/{limit / 1000:.1f} kW"


def watts(value: Any, limit: Any = None) -> str:
    if value is None:
        return DASH
    return f"{value}/{limit} W" if limit else f"{value} W"


def celsius(value: Any) -> str:
    return DASH if value is None else f"{value} °C"


def mhz(value: Any) -> str:
    return DASH if value is None else f"{value} MHz"


def age(seconds: float | None) -> str:
    """How long ago, as the node cards say it: "3 s ago", "4 min ago", "2 h ago", "never"."""
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{round(seconds)} s ago"
    if seconds < 5400:
        return f"{round(seconds / 60)} min ago"
    return f"{round(seconds / 3600)} h ago"


def is_stale(node: dict[str, Any], now: float | None = None) -> bool:
    if node.get("health") == "unhealthy" or node.get("seen") is None:
        return True
    interval = node.get("interval")
    return bool(interval) and (now or time.time()) - node["seen"] > STALE_INTERVALS * interval


def tile_state(gpu: dict[str, Any], stale: bool) -> str:
    """stale, error, hot, full or ok: what colours a GPU tile (and the word on it)."""
    if stale or gpu.get("util") is None:
        return "stale"
    if gpu.get("ecc") or gpu.get("xid") or gpu.get("err"):
        return "error"
    if (gpu.get("temp") or 0) >= HOT_C:
        return "hot"
    total = gpu.get("mem_total")
    if total and (gpu.get("mem") or 0) >= FULL_SHARE * total:
        return "full"
    return "ok"


STATE_WORDS = {"stale": "stale", "error": "error", "hot": "hot", "full": "mem full", "ok": ""}


def state_word(gpu: dict[str, Any], state: str) -> str:
    if state == "error":
        if gpu.get("xid"):
            return f"XID {gpu['xid']}"
        return "ECC" if gpu.get("ecc") else "error"
    return STATE_WORDS[state]


def gpu_texts(gpu: dict[str, Any]) -> dict[str, str]:
    """The five values on a GPU tile, as text."""
    return {
        "util": pct(gpu.get("util")),
        "mem": memory(gpu.get("mem"), gpu.get("mem_total")),
        "temp": celsius(gpu.get("temp")),
        "power": watts(gpu.get("power"), gpu.get("power_limit")),
        "sm": mhz(gpu.get("sm")),
    }


def decorate_nodes(nodes: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Node cards for a template: each with its age, staleness, and each GPU's texts and state."""
    cards = []
    for node in nodes:
        stale = is_stale(node, now)
        gpus = []
        for gpu in node["gpus"]:
            state = tile_state(gpu, stale)
            gpus.append({**gpu, "texts": gpu_texts(gpu), "state": state, "word": state_word(gpu, state)})
        seen = node.get("seen")
        cards.append(
            {
                **node,
                "gpus": gpus,
                "stale": stale,
                "age_text": age(now - seen if seen is not None else None),
                "labels_text": " ".join(f"{key}={value}" for key, value in sorted(node["labels"].items())),
            }
        )
    return cards
