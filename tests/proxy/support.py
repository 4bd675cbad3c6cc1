"""Fixtures for the proxy's in-process tests: real Triton servers, and a routing table we set.

The proxy runs in this process behind httpx's ASGI transport; its upstreams are real CPU
Triton servers (devtools.triton_server). The routing table is built by the real
`build_table` from desired state and live records written as the agent would report them.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from devtools.triton_server import EXAMPLE_MODELS, LocalTriton
from meshcore.proxy.app import ProxyRouter
from meshcore.proxy.upstream import close_pools
from meshcore.routing.desired import DesiredSnapshot, NodeInfo, PolicyInfo, RuntimeInfo, TokenInfo
from meshcore.routing.table import RoutingTable, build_table
from meshcore.tokens import new_api_token

TOKEN = new_api_token()
STAFF_TOKEN = new_api_token()
REVOKED_TOKEN = new_api_token()


@pytest.fixture(scope="session")
def tritons() -> Iterator[list[LocalTriton]]:
    """Two real Triton servers with `echo` and `slow` loaded."""
    servers = [LocalTriton(EXAMPLE_MODELS, load_models=["echo", "slow"]) for _ in range(2)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def token_info(
    name: str,
    *,
    staff: bool = False,
    revoked: bool = False,
    expires_at: datetime | None = None,
    tenant: str | None = "team-a",
) -> TokenInfo:
    return TokenInfo(
        name=name,
        username="alice",
        user_active=True,
        is_staff=staff,
        groups=frozenset({"team-a"}),
        tenant=tenant,
        expires_at=expires_at,
        revoked=revoked,
    )


def runtime_record(models: dict[str, str], url: str, live: bool = True, received_at: float | None = None) -> dict:
    """A node's live record as ingest writes it, with one runtime `triton`."""
    sample = {
        "name": "triton",
        "url": url,
        "live": live,
        "ready": live,
        "models": [{"name": name, "version": "1", "state": state, "reason": ""} for name, state in models.items()],
    }
    return {
        "received_at": str(received_at if received_at is not None else time.time()),
        "interval": "1",
        "health": "healthy",
        "rt:triton": json.dumps(sample),
    }


class FixedView:
    """Stands where the routing view is: a table the test builds, re-built on `set`."""

    def __init__(self) -> None:
        self.table: RoutingTable = build_table(DesiredSnapshot(), {}, time.time(), 3.0)

    def set(
        self,
        urls: dict[str, str],
        *,
        models: tuple[str, ...] = ("echo", "slow"),
        draining: tuple[str, ...] = (),
        policies: tuple[PolicyInfo, ...] = (),
        live: dict[str, dict] | None = None,
    ) -> RoutingTable:
        """One node per entry of `urls` (node name -> Triton URL), each with runtime `triton`."""
        nodes = {name: NodeInfo(name, name in draining, "", {}) for name in urls}
        runtimes = tuple(RuntimeInfo(index + 1, name, "triton", url) for index, (name, url) in enumerate(urls.items()))
        tokens = {
            TOKEN.digest: token_info("app"),
            STAFF_TOKEN.digest: token_info("ops", staff=True),
            REVOKED_TOKEN.digest: token_info("old", revoked=True),
        }
        desired = DesiredSnapshot(nodes, runtimes, frozenset(models), policies, tokens)
        records = (
            live
            if live is not None
            else {name: runtime_record(dict.fromkeys(models, "READY"), url) for name, url in urls.items()}
        )
        self.table = build_table(desired, records, time.time(), 3.0)
        return self.table


@pytest.fixture
def view() -> FixedView:
    return FixedView()


@pytest.fixture
async def router(view: FixedView) -> AsyncIterator[ProxyRouter]:
    router = ProxyRouter(view)
    yield router
    await router.close()  # an event still being written would lock SQLite for the next test


@pytest.fixture
async def client(router: ProxyRouter) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=router)
    async with httpx.AsyncClient(transport=transport, base_url="http://mesh", timeout=30) as client:
        client.headers["authorization"] = f"Bearer {TOKEN.value}"
        yield client


def infer_body(values: list[float], **parameters: object) -> dict:
    body: dict = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [len(values)], "data": values}]}
    if parameters:
        body["parameters"] = parameters
    return body


REPO_MODELS = Path(EXAMPLE_MODELS)


@pytest.fixture(autouse=True)
async def close_upstream_sessions() -> AsyncIterator[None]:
    """Each test has its own event loop; the proxy's pool on it closes with it."""
    yield
    await close_pools()
