"""The ASGI application sends /proxy/ to the lean handler and the rest to Django."""

import httpx
import pytest

from infermesh_site.asgi import application


@pytest.fixture
def client():
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://127.0.0.1")


async def test_it_routes_proxy_paths_to_the_data_path(client):
    for path, status in (("/proxy", 404), ("/proxy/", 404), ("/proxy/v2/models/m/infer", 401)):
        response = await client.post(path, content=b"x" * 100_000)
        assert response.status_code == status, path
        assert set(response.json()) == {"error", "detail"}
        assert response.headers["x-request-id"]


async def test_it_routes_metrics_to_the_proxys_endpoint(client):
    response = await client.get("/metrics")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"


async def test_it_routes_everything_else_to_django(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    not_found = await client.get("/proxyish")
    assert not_found.status_code == 404
    api_not_found = await client.get("/api/v1/nothing-here/")
    assert api_not_found.status_code == 404
    assert "detail" in api_not_found.json()
