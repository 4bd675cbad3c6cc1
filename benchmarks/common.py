"""What every benchmark here shares: printing, percentiles, and how a run ends."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path


def say(message: str) -> None:
    print(message, flush=True)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


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
