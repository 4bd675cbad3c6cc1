"""Fixtures for the agent tests."""

from tests.agents.triton_fixtures import (  # noqa: F401 - pytest finds fixtures by name
    collector,
    fresh_triton,
    triton,
    triton_client,
    triton_repository,
)
