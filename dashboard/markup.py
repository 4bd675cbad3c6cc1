"""The fleet page's node cards and GPU tiles as HTML, written here rather than in a template.

The fleet page paints up to a thousand tiles; as templates (an include per tile, a `{% url %}`
each) that took seconds of the page's first paint, as string formatting here a few tens of ms.
The same functions write the blank card and tile the page clones for nodes that appear later,
so there is one markup. Every value is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from dashboard.formats import DASH, gpu_texts

METRICS = (("util", "util"), ("mem", "mem"), ("temp", "temp"), ("power", "power"), ("sm", "SM"))
# The five sparklines, one band each; the page's script sets their points.
# x: 5 s buckets (60 in the window), y: 100 units per metric's band (see fleet.js).
SPARK = (
    '<svg class="spark" viewBox="0 0 59 500" preserveAspectRatio="none" aria-hidden="true" focusable="false"><g>'
    + "".join(f'<polyline class="s-{key}" data-s="{key}" points=""/>' for key, _ in METRICS)
    + "</g></svg>"
)


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def node_url(name: str) -> str:
    return reverse("dashboard:node", args=[name])


def gpu_tile(url: str, gpu: dict[str, Any]) -> str:
    """One tile: index, name and state word, five values (a colour each) and the sparklines (SVG)."""
    index = gpu.get("index")
    index = "" if index is None else index
    values = "".join(
        f'<span class="k k-{key}">{label}</span><span class="v" data-f="{key}">{_e(gpu["texts"][key])}</span>'
        for key, label in METRICS
    )
    return (
        f'<a class="gpu" href="{_e(url)}#gpu-{_e(index)}" data-gpu="{_e(gpu["uuid"])}" data-state="{_e(gpu["state"])}">'
        f'<span class="gh"><span class="gi" data-f="index">GPU {_e(index)}</span>'
        f'<span class="gn" data-f="name">{_e(gpu.get("name"))}</span>'
        f'<span class="gw" data-f="word">{_e(gpu["word"])}</span></span>'
        f"{values}{SPARK}</a>"
    )


def node_card(node: dict[str, Any], staff: bool) -> str:
    """One node's card: name, health, drain, simulated, zone, roles, labels, report age, admin link, tiles."""
    name = _e(node["name"])
    url = node.get("url") or node_url(node["name"])
    admin = f'<a class="admin" data-f="admin" href="{_e(node["admin"])}">admin</a>' if staff else ""
    tiles = "".join(gpu_tile(url, gpu) for gpu in node["gpus"])
    return (
        f'<article class="node" id="node-{name}" data-node="{name}" data-zone="{_e(node["zone"])}" '
        f'data-labels="{_e(node["labels_text"])}" data-health="{_e(node["health"])}" '
        f'data-stale="{"1" if node["stale"] else "0"}" data-draining="{"1" if node["draining"] else "0"}" '
        f'aria-labelledby="nh-{name}"><header class="nh">'
        f'<h2 id="nh-{name}"><a data-f="link" href="{_e(url)}">{name}</a></h2>'
        f'<span class="badge health" data-f="health">{_e(node["health"])}</span>'
        f'<span class="badge drain" data-f="drain"{"" if node["draining"] else " hidden"}>draining</span>'
        f'<span class="badge sim" data-f="sim"{"" if node["sim"] else " hidden"} '
        f'title="No NVML on this host: the agent reports simulated GPUs">simulated</span>'
        f'<span class="meta">zone <b data-f="zone">{_e(node["zone"] or DASH)}</b></span>'
        f'<span class="meta" data-f="roles">{_e(", ".join(node["roles"]))}</span>'
        f'<span class="meta" data-f="labels">{_e(node["labels_text"])}</span>'
        f'<span class="meta">report <span data-f="age">{_e(node["age_text"])}</span></span>{admin}'
        f'</header><div class="gpus">{tiles}</div></article>'
    )


def fleet_cards(nodes: list[dict[str, Any]], staff: bool) -> SafeString:
    return mark_safe("\n".join(node_card(node, staff) for node in nodes))  # noqa: S308 (every value escaped above)


def blank_card(staff: bool) -> SafeString:
    """What the page clones for a node that appears while it is open (its script fills it in)."""
    blank = {
        "name": "__node__",
        "url": "",
        "zone": "",
        "roles": [],
        "labels_text": "",
        "health": "unknown",
        "stale": True,
        "draining": False,
        "sim": False,
        "age_text": "never",
        "admin": "",
        "gpus": [],
    }
    return mark_safe(node_card(blank, staff))  # noqa: S308


def blank_tile() -> SafeString:
    return mark_safe(gpu_tile("", {"uuid": "", "index": "", "texts": gpu_texts({}), "state": "stale", "word": "stale"}))  # noqa: S308
