"""`manage.py serve` runs a real mesh process: proxy slot, API, admin, clean shutdown."""

import json
import re
import signal
import subprocess
import sys

import httpx
import pytest

from devtools.ports import free_port
from devtools.serve import REPO, TEST_SECRET, clean_env, collected_static_root, manage, wait_for_http


@pytest.fixture(scope="module")
def migrated_env(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("serve")
    env = clean_env(data_dir, SECRET_KEY=TEST_SECRET, MESH_LOG_FORMAT="json", STATIC_ROOT=str(collected_static_root()))
    result = manage("migrate", "--noinput", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return env


@pytest.fixture(scope="module")
def server(migrated_env):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=REPO,
        env=migrated_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/healthz", process)
    yield base, process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_it_serves_the_proxy_with_clear_json_errors(server):
    base, _ = server
    response = httpx.post(f"{base}/proxy/v2/models/resnet/infer", json={"inputs": []}, headers={"X-Request-ID": "r-1"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"
    assert response.headers["x-request-id"] == "r-1"
    assert httpx.get(f"{base}/proxy/v2/health/live").status_code == 200
    not_ready = httpx.get(f"{base}/proxy/v2/health/ready")
    assert not_ready.status_code == 503  # nothing is loaded anywhere yet
    assert "retry-after" in not_ready.headers


def test_it_serves_the_api_admin_and_docs(server):
    base, _ = server
    assert httpx.get(f"{base}/api/v1/nodes/").status_code == 401
    login = httpx.get(f"{base}/admin/login/")
    assert login.status_code == 200
    assert "infermesh" in login.text or "Django administration" in login.text
    docs = httpx.get(f"{base}/api/docs/")
    assert docs.status_code == 200
    scripts = re.findall(r'src="([^"]+)"', docs.text)
    assert len(scripts) >= 2
    for script in scripts:  # vendored and served here: nothing loads from the internet
        assert script.startswith("/static/"), script
        assert httpx.get(f"{base}{script}").status_code == 200
    assert httpx.get(f"{base}/api/schema/").status_code == 200


def test_it_stops_cleanly_on_sigterm_and_its_logs_were_json(server):
    base, process = server
    httpx.get(f"{base}/api/v1/models/", headers={"X-Request-ID": "trace-43"})
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    lines = [line for line in process.stderr.read().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    unauthorized = [e for e in entries if e["logger"] == "django.request" and e.get("request_id") == "trace-43"]
    assert unauthorized and unauthorized[0]["level"] == "warning"
    assert any(e["logger"] == "infermesh.serve" and "serving infermesh" in e["message"] for e in entries)


def test_it_refuses_to_serve_an_unmigrated_database(tmp_path):
    result = manage("serve", "--port", str(free_port()), env=clean_env(tmp_path, SECRET_KEY=TEST_SECRET))
    assert result.returncode != 0
    assert "unapplied migration" in result.stderr
    assert "manage.py migrate" in result.stderr
