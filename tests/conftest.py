"""Shared fixtures: the personas every API and admin test speaks as.

- operator: a staff user (session login and API token)
- viewer: a signed-in user without staff rights
- stranger: no account at all
- node agent: presents its node's token
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from meshcore import registry
from meshcore.live import parts as live_parts
from meshcore.live.node_auth import node_tokens
from meshcore.live.store import MemoryLiveStore, use_store
from meshcore.replication.log import local_log

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def fresh_local_log():
    """Each test's database is rolled back afterwards; the in-process log must forget it too, and
    no telemetry thread a test started (the mirror writes the database) may outlive it."""
    local_log().reset()
    yield
    local_log().reset()
    live_parts.reset()


@pytest.fixture
def operator(db):
    return get_user_model().objects.create_user("olivia", password=PASSWORD, is_staff=True, is_superuser=True)


@pytest.fixture
def viewer(db):
    return get_user_model().objects.create_user("victor", password=PASSWORD)


def signed_in(user) -> APIClient:
    """An API client with a session of `user`, as a browser that signed in has."""
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def operator_client(operator) -> APIClient:
    return signed_in(operator)


@pytest.fixture
def operator_token_client(operator) -> APIClient:
    _, value = registry.issue_api_token(actor=operator, user=operator, name="automation")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {value}")
    return client


@pytest.fixture
def viewer_client(viewer) -> APIClient:
    return signed_in(viewer)


@pytest.fixture
def stranger_client(db) -> APIClient:
    return APIClient()


@pytest.fixture
def registered_node(operator):
    """A node with its agent token (value shown once at registration)."""
    node, token = registry.create_node(
        actor=operator, name="gpu-a", address="10.0.0.11", roles=["gpu"], zone="eu-1", labels={"gpu-type": "h100"}
    )
    node.issued_token = token
    return node


@pytest.fixture
def node_agent_client(registered_node) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {registered_node.issued_token}")
    return client


@pytest.fixture
def live():
    """This process's telemetry parts on a fresh in-memory live state store."""
    made = MemoryLiveStore()
    use_store(made)
    live_parts.reset()
    node_tokens.forget_all()
    yield made
    live_parts.reset()
    use_store(None)
    node_tokens.forget_all()
