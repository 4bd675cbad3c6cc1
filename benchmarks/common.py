"""What every benchmark here shares: printing, percentiles, and how a run ends."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

# A registry write's shape, for the yardstick below.
_YARDSTICK_BATCH = {
    "key": "yardstick",
    "actor": "benchmark",
    "ops": [{"op": "update", "kind": "policy", "id": 7, "changes": {"priority": 0}, "expected_version": None}],
    "events": [{"type": "POLICY_UPDATED", "data": {"name": "yardstick", "kind": "quota", "changed": ["priority"]}}],
}


def say(message: str) -> None:
    print(message, flush=True)


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]], markdown: bool = False) -> None:
    """Rows under their header, as aligned columns or as a Markdown table."""
    if markdown:
        say("| " + " | ".join(header) + " |")
        say("|" + " --- |" * len(header))
        for row in rows:
            say("| " + " | ".join(row) + " |")
        return
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]
    for line in (header, *rows):
        say("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def yardstick_ms(rounds: int = 5, loops: int = 5_000) -> float:
    """Best time of a fixed piece of plain Python work (dicts, strings, JSON) like a registry write's.

    Not a figure of infermesh: a measure of the machine, printed with the figures so that runs on
    different machines (or one machine at different hours) can be compared. Lower is faster.
    """
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        for index in range(loops):
            batch = json.loads(json.dumps(_YARDSTICK_BATCH))
            batch["ops"][0]["changes"]["priority"] = index
            batch["key"] = f"{batch['actor']}:{index}"
            sorted({**batch["events"][0]["data"], "seq": index}.items())
        best = min(best, time.perf_counter() - began)
    return best * 1000


def conclude(root: Path, keep: bool, failures: list[str], started: float) -> int:
    """Keep the run's folder when asked or when something failed, print the time and failures; the exit status."""
    if keep or failures:
        say(f"kept the data folders and logs in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    say(f"took {time.monotonic() - started:.0f} s; load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    for failure in failures:
        say(f"FAILED: {failure}")
    return 1 if failures else 0
