"""PostgreSQL connections come from a bounded pool per process; an exhausted pool answers 503.

Under ASGI each request runs in a thread of its own: connections kept per thread used to pile
up until PostgreSQL refused clients, and requests failed with 500. These tests need the
PostgreSQL server that DATABASE_URL names; the SQLite run skips them.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dj_database_url
import httpx
import psycopg
import pytest
from django.db import connection, connections
from django.test import Client
from rest_framework.test import APIClient

from devtools.serve import TEST_SECRET, ServeProcess, clean_env, collected_static_root, manage
from meshcore import registry

pytestmark = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="needs PostgreSQL (DATABASE_URL)"
)

POOL_SIZE = 6


def server_dsn(database: str) -> str:
    """DATABASE_URL's server, another database on it."""
    settings = dj_database_url.parse(os.environ["DATABASE_URL"])
    user = settings["USER"] or "postgres"
    return f"postgresql://{user}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}/{database}"


def backends(database: str) -> int:
    with psycopg.connect(server_dsn("postgres"), autocommit=True) as admin:
        return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)).fetchone()[0]


@pytest.fixture(scope="module")
def fresh_database() -> Iterator[str]:
    name = f"infermesh_pool_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(server_dsn("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def pooled_server(fresh_database, tmp_path_factory) -> Iterator[tuple[ServeProcess, dict[str, str]]]:
    """`serve` on its own PostgreSQL database with a pool of POOL_SIZE, and an admin's token header."""
    data_dir = tmp_path_factory.mktemp("pool")
    env = clean_env(
        data_dir / "var",
        SECRET_KEY=TEST_SECRET,
        DATABASE_URL=server_dsn(fresh_database),
        MESH_DB_POOL_SIZE=str(POOL_SIZE),
        MESH_ADMIN_PASSWORD="pool-test-password",
        MESH_LOCAL_AGENT="off",
        STATIC_ROOT=str(collected_static_root()),
    )
    result = manage("migrate", "--noinput", env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    server = ServeProcess(env, data_dir / "serve.log")
    server.start()
    try:
        server.wait_http(60)
        assert manage("ensure_admin", env=env).returncode == 0
        issued = manage("apitoken", "issue", "admin", "pool-test", env=env)
        assert issued.returncode == 0, issued.stderr
        yield server, {"Authorization": f"Bearer {issued.stdout.strip().splitlines()[-1]}"}
    finally:
        server.stop()


def test_a_serve_process_under_load_stays_within_its_pool(pooled_server, fresh_database):
    server, headers = pooled_server
    most_backends = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal most_backends
        while not done.is_set():
            most_backends = max(most_backends, backends(fresh_database))
            time.sleep(0.05)

    def client(_: int) -> list[int]:
        with httpx.Client(base_url=f"{server.url}/api/v1", headers=headers, timeout=30) as http:
            return [http.get("/policies/").status_code for _ in range(25)]

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(16) as clients:
            statuses = [status for answers in clients.map(client, range(16)) for status in answers]
    finally:
        done.set()
        watcher.join()
    # Before the pool: about one connection per request thread, then "too many clients" and 500s.
    assert statuses == [200] * 400
    assert 0 < most_backends <= POOL_SIZE


QUOTA_SPEC = {"scope": "global", "max_concurrent": 1}


def _lines_until(response: httpx.Response, text: str, timeout_s: float = 10) -> list[str]:
    seen = []
    deadline = time.monotonic() + timeout_s
    for line in response.iter_lines():
        seen.append(line)
        if text in line or time.monotonic() > deadline:
            break
    return seen


def test_open_event_streams_leave_the_pool_to_requests(pooled_server, fresh_database):
    server, headers = pooled_server
    streams = [httpx.Client(base_url=server.url, headers=headers, timeout=30) for _ in range(2 * POOL_SIZE)]
    opened = []
    try:
        for stream in streams:
            response = stream.send(stream.build_request("GET", "/api/v1/events/stream/"), stream=True)
            assert response.status_code == 200
            opened.append(response)
        with httpx.Client(base_url=f"{server.url}/api/v1", headers=headers, timeout=30) as http:
            statuses = [http.get("/policies/").status_code for _ in range(10)]
            created = http.post("/policies/", json={"name": "while-streaming", "kind": "quota", "spec": QUOTA_SPEC})
        assert statuses == [200] * 10
        assert created.status_code == 201
        # Each stream still gets the event: streams wait without a connection and borrow one to read.
        for response in opened:
            assert any("while-streaming" in line for line in _lines_until(response, "while-streaming"))
        assert backends(fresh_database) <= POOL_SIZE
    finally:
        for response in opened:
            response.close()
        for stream in streams:
            stream.close()


@pytest.fixture
def small_pool(monkeypatch) -> Iterator[Callable[[], list[Any]]]:
    """This process's pool cut to two connections with a short wait; `hold()` takes both."""
    pool_options = connection.settings_dict["OPTIONS"]["pool"]
    connection.close()
    connection.close_pool()
    monkeypatch.setitem(pool_options, "max_size", 2)
    monkeypatch.setitem(pool_options, "timeout", 0.3)
    holders: list[Any] = []

    def hold() -> list[Any]:
        for _ in range(2):
            holder = connections.create_connection("default")
            holder.connect()  # from the same pool: the pool belongs to the alias
            holders.append(holder)
        return holders

    yield hold
    for holder in holders:
        holder.close()
    connection.close_pool()


def in_another_thread(request: Callable[[], Any]) -> Any:
    """A request as the server runs it: in a thread of its own, which needs a connection of its own."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(request).result(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_an_exhausted_pool_answers_503_with_retry_after(operator, small_pool):
    _, token = registry.issue_api_token(actor=operator, user=operator, name="automation")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    pages = Client(raise_request_exception=False)
    pages.force_login(operator)
    connection.close()  # the test's own connection back to the pool before it shrinks to two, both held
    small_pool()

    from_api = in_another_thread(lambda: api.get("/api/v1/policies/"))
    from_admin = in_another_thread(lambda: pages.get("/admin/"))

    assert (from_api.status_code, from_api["Retry-After"]) == (503, "2")
    assert "database is busy" in from_api.json()["detail"]
    # The admin reads the session before any view runs: the error comes from middleware.
    assert (from_admin.status_code, from_admin["Retry-After"]) == (503, "2")
    assert b"database is busy" in from_admin.content
