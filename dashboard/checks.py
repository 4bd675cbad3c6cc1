"""System checks: the dashboard's vendored browser assets are in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.checks import Warning, register

VENDOR = Path(__file__).resolve().parent / "static" / "dashboard" / "vendor" / "uplot"
VENDORED_FILES = ("uPlot.iife.min.js", "uPlot.min.css", "LICENSE")


def missing_vendored_files() -> list[str]:
    return [name for name in VENDORED_FILES if not (VENDOR / name).is_file()]


@register()
def check_vendored_assets(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    missing = missing_vendored_files()
    if not missing:
        return []
    return [
        Warning(
            f"The dashboard's chart library is not installed ({', '.join(missing)} missing from {VENDOR}).",
            hint="Run scripts/vendor-assets (scripts/quickstart and scripts/test do); "
            "until then the node and models pages show their tables without charts.",
            id="dashboard.W001",
        )
    ]
