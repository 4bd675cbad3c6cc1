"""Fixtures of the dashboard tests: a fresh in-memory live state store and channel layer."""

from __future__ import annotations

import pytest

from dashboard.snapshots import spark_cache
from tests.meshcore.event_stream_support import channel_layer, session_cookie


@pytest.fixture
def live(live):
    """The suite's fresh in-memory live state (tests/conftest.py), with the sparkline cache emptied too."""
    spark_cache.clear()
    yield live
    spark_cache.clear()


@pytest.fixture
def memory_layer(settings):
    """Call it to enter a fresh in-memory channel layer in the test body."""
    return lambda: channel_layer("memory", settings)


@pytest.fixture
def viewer_cookie(viewer):
    return session_cookie(viewer)
