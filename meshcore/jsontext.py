"""Compact JSON text for the hot paths (telemetry ingest and publishing), with orjson.

orjson is about ten times faster than json for the small values a report holds; what it
refuses (integers beyond 64 bits) falls back to json, so both accept the same values.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def compact(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"))


def canonical(value: Any) -> str:
    """JSON with sorted keys, so equal values compare equal as text."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))


def loads(text: bytes | str) -> Any:
    """Parse JSON; ValueError (as json.loads raises) when it is not valid, including integers beyond 64 bits."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)  # what orjson refuses and json takes (large integers, NaN); else json's error
