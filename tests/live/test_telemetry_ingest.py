"""POST /api/v1/telemetry/: node tokens only, every report checked, sequence numbers respected.

Each behaviour runs on the lean ASGI path `serve` uses and on the Django view behind it.
"""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from meshcore import registry
from meshcore.live.store import live_store
from tests.live.support import TELEMETRY_URL, gpu, post_lean, report, runtime


@pytest.fixture
def node_token(db, live):
    _, token = registry.create_node(actor="system", name="gpu-01", address="10.0.0.1", roles=["gpu"])
    return token


@pytest.fixture
def other_node_token(db, live):
    _, token = registry.create_node(actor="system", name="gpu-02", address="10.0.0.2", roles=["gpu"])
    return token


def post_django(token, body, headers=None):
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    content = body if isinstance(body, bytes) else json.dumps(body)
    return client.generic("POST", TELEMETRY_URL, content, content_type="application/json", **(headers or {}))


@pytest.fixture(params=["lean", "django"])
def post(request):
    return post_lean if request.param == "lean" else post_django


def stored():
    return live_store().read()


def test_it_accepts_a_snapshot_from_the_nodes_agent(post, node_token):
    response = post(node_token, report(gpus=[gpu("GPU-1"), gpu("GPU-2", 1)]))
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "accepted", "seq": 1, "snapshot_required": False}
    record = stored()["gpu-01"]
    assert {"gpu:GPU-1", "gpu:GPU-2", "info:GPU-1"} <= set(record)


def test_it_ignores_a_duplicate_or_older_report(post, node_token):
    post(node_token, report(seq=5, gpus=[gpu(util=50)]))
    for seq in (5, 3):
        response = post(node_token, report(seq=seq, gpus=[gpu(util=99)]))
        assert response.status_code == 200
        assert response.json()["status"] == "stale"
    assert json.loads(stored()["gpu-01"]["gpu:GPU-1"])["metrics"]["utilization_gpu_pct"] == 50


def test_it_asks_for_a_snapshot_when_a_delta_has_no_base(post, node_token):
    response = post(node_token, report(kind="delta", gpus=[gpu(info=False)]))
    assert response.json() == {"status": "snapshot_required", "seq": 1, "snapshot_required": True}
    assert stored() == {}


def test_it_applies_deltas_on_the_last_snapshot(post, node_token):
    post(node_token, report(seq=1, gpus=[gpu("GPU-1"), gpu("GPU-2", 1)]))
    post(node_token, report(seq=2, kind="delta", gpus=[gpu("GPU-1", util=77, info=False)], removed_gpus=["GPU-2"]))
    record = stored()["gpu-01"]
    assert json.loads(record["gpu:GPU-1"])["metrics"]["utilization_gpu_pct"] == 77
    assert "info:GPU-1" in record
    assert "gpu:GPU-2" not in record


@pytest.mark.parametrize(
    ("token", "expected"),
    [(None, 401), ("imn_not-a-real-token", 401), ("garbage", 401)],
)
def test_it_refuses_reports_without_a_valid_node_token(post, node_token, token, expected):
    response = post(token, report())
    assert response.status_code == expected
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert stored() == {}


def test_it_refuses_an_api_token(post, node_token, operator):
    _, api_token = registry.issue_api_token(actor=operator, user=operator, name="automation")
    assert post(api_token, report()).status_code == 401
    assert stored() == {}


def test_a_revoked_token_stops_working_at_once(post, node_token):
    assert post(node_token, report(seq=1)).status_code == 200  # now in the token cache
    registry.revoke_node_token(actor="system", name="gpu-01")
    assert post(node_token, report(seq=2)).status_code == 401


def test_a_rotated_token_stops_working_and_the_new_one_works(post, node_token):
    assert post(node_token, report(seq=1)).status_code == 200
    _, new_token = registry.rotate_node_token(actor="system", name="gpu-01")
    assert post(node_token, report(seq=2)).status_code == 401
    assert post(new_token, report(seq=2)).status_code == 200


def test_it_refuses_a_report_for_another_node(post, node_token, other_node_token):
    response = post(other_node_token, report(node="gpu-01"))
    assert response.status_code == 403
    assert "gpu-02" in response.json()["node"][0]
    assert stored() == {}


BAD_REPORTS = {
    "not json": (b"{nope", "non_field_errors"),
    "a list": ([1, 2], "non_field_errors"),
    "no node": ({**report(), "node": None}, "node"),
    "no agent id": ({**report(), "agent": {"version": "1"}}, "agent"),
    "zero seq": ({**report(), "seq": 0}, "seq"),
    "boolean seq": ({**report(), "seq": True}, "seq"),
    "unknown kind": ({**report(), "kind": "full"}, "kind"),
    "interval too short": ({**report(), "interval_s": 0.0}, "interval_s"),
    "interval not a number": ({**report(), "interval_s": "1"}, "interval_s"),
    "gpus not a list": ({**report(), "gpus": {"uuid": "x"}}, "gpus"),
    "gpu without uuid": ({**report(), "gpus": [{**gpu(), "uuid": ""}]}, "gpus"),
    "gpu index negative": ({**report(), "gpus": [{**gpu(), "index": -1}]}, "gpus"),
    "utilization over 100": ({**report(), "gpus": [{**gpu(), "metrics": {"utilization_gpu_pct": 140}}]}, "gpus"),
    "metric not finite": ({**report(), "gpus": [{**gpu(), "metrics": {"power_usage_w": "NaN"}}]}, "gpus"),
    "snapshot gpu without info": ({**report(), "gpus": [gpu(info=False)]}, "gpus"),
    "duplicate gpu": ({**report(), "gpus": [gpu(), gpu()]}, "gpus"),
    "runtime bad name": ({**report(), "runtimes": [{**runtime(), "name": "no spaces"}]}, "runtimes"),
    "runtime bad url": ({**report(), "runtimes": [{**runtime(), "url": "ftp://x"}]}, "runtimes"),
    "model bad state": ({**report(), "runtimes": [runtime({"m": ("BROKEN", "")})]}, "runtimes"),
    "snapshot with removals": ({**report(), "removed_gpus": ["GPU-9"]}, "kind"),
    "too many gpus": ({**report(), "gpus": [gpu(f"G{i}", i) for i in range(65)]}, "gpus"),
}


@pytest.mark.parametrize("case", sorted(BAD_REPORTS))
def test_it_answers_400_with_field_errors_and_changes_nothing(post, node_token, case):
    body, field = BAD_REPORTS[case]
    response = post(node_token, body)
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert stored() == {}


def test_nested_field_errors_name_the_gpu_and_field(post, node_token):
    body = {**report(), "gpus": [gpu(), {**gpu("GPU-2", 1), "metrics": {"temperature_gpu_c": "hot"}}]}
    errors = post(node_token, body).json()
    assert errors == {"gpus": {"1": {"metrics": {"temperature_gpu_c": ["Must be a number from -50 to 200."]}}}}


def test_the_lean_path_refuses_other_methods_and_media_types(node_token):
    assert post_lean(node_token, report(), method="GET").status_code == 405
    assert post_lean(node_token, report(), headers={"Content-Type": "text/plain"}).status_code == 415
    too_big = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    assert post_lean(node_token, too_big).status_code == 413


def test_it_answers_503_with_retry_after_when_the_store_is_away(post, node_token):
    from meshcore.live import parts as service
    from meshcore.live.store import RedisLiveStore, use_store

    use_store(RedisLiveStore("redis://127.0.0.1:1/0"))  # nothing listens on port 1
    service.reset()
    response = post(node_token, report())
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
