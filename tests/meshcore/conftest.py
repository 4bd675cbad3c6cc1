"""Fixtures the event stream tests share (`/ws/events/` and `GET /api/v1/events/stream/`)."""

from __future__ import annotations

import pytest

from tests.meshcore.event_stream_support import LAYERS, api_token_header, channel_layer, session_cookie


@pytest.fixture(params=LAYERS)
def use_layer(request, settings):
    """Each test once per channel layer (in memory, Redis); call it to enter a fresh one in the test body."""
    return lambda: channel_layer(request.param, settings)


@pytest.fixture
def viewer_cookie(viewer):
    return session_cookie(viewer)


@pytest.fixture
def viewer_token(operator, viewer):
    return api_token_header(operator, viewer)
