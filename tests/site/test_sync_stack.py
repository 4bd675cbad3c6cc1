"""Under ASGI, a request to a (sync) Django view crosses into a thread a bounded number of times.

Without `SyncStackMiddleware` Django ran each of its middleware async and called their sync
hooks through `sync_to_async`: about one switch per hook, for every request.
"""

import httpx
import pytest
from asgiref import sync

from infermesh_site.asgi import application
from meshcore import registry

# The request-started signal, the whole middleware stack (one hop), and in Django's async
# response path: the middleware's process_view, the view, rendering and closing the response.
# Without SyncStackMiddleware this request took 16.
MOST_HOPS = 6


@pytest.fixture
def hops(monkeypatch):
    counted = []
    original = sync.SyncToAsync.__call__

    async def counting(self, *args, **kwargs):
        counted.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(sync.SyncToAsync, "__call__", counting)
    return counted


@pytest.fixture
def operator_token(transactional_db, operator):
    return registry.issue_api_token(actor=operator, user=operator, name="automation")[1]


@pytest.mark.django_db(transaction=True)
async def test_an_api_request_runs_its_middleware_in_one_thread(hops, operator_token):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://127.0.0.1") as client:
        response = await client.get("/api/v1/policies/", headers={"Authorization": f"Bearer {operator_token}"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"]
    assert len(hops) <= MOST_HOPS, hops
    assert not [hop for hop in hops if "process_request" in hop or "process_response" in hop], hops
