"""A real Celery worker (`python -m agents`) on the real Redis broker runs the agent's tasks:
placement's load and unload reach the host's real Triton through the node's own queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import httpx
import pytest
from celery import Celery

from devtools.serve import REPO
from devtools.waiting import wait_until

BROKER = "redis://127.0.0.1:6379/4"

pytestmark = pytest.mark.timeout(180)


def model_state(triton, name: str) -> str | None:
    index = httpx.post(f"{triton.http_url}/v2/repository/index", json={}, timeout=5).json()
    return next((entry.get("state") for entry in index if entry["name"] == name), None)


def wait_for(condition, timeout: float, what: str, log_path) -> None:
    if not wait_until(condition, timeout, interval=0.2):
        raise AssertionError(f"{what} within {timeout}s; agent log:\n{log_path.read_text()[-3000:]}")


@pytest.fixture
def agent_worker(fresh_triton, tmp_path):
    node = f"worker-{uuid.uuid4().hex[:6]}"
    token_file = tmp_path / "token"
    token_file.write_text("imn_not-used-control-plane-is-away")
    log_path = tmp_path / "agent.log"
    argv = [
        sys.executable, "-m", "agents", "--node", node,
        "--control-plane", "http://127.0.0.1:9",  # nothing listens: reports back off, tasks still run
        "--token-file", str(token_file), "--triton", f"triton={fresh_triton.http_url},{fresh_triton.metrics_url}",
        "--gpus", "simulated", "--broker", BROKER,
    ]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MESH_", "DJANGO_"))}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_for(lambda: "ready." in log_path.read_text(), 60, "the worker did not start", log_path)
    yield node, log_path
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def test_load_and_unload_tasks_reach_the_hosts_triton_through_its_queue(agent_worker, fresh_triton):
    node, log_path = agent_worker
    client = Celery("placement-test", broker=BROKER)
    assert model_state(fresh_triton, "echo") != "READY"

    client.send_task("agents.load_model", args=["triton", "echo"], queue=f"agents.{node}")
    wait_for(lambda: model_state(fresh_triton, "echo") == "READY", 60, "echo was not loaded", log_path)

    client.send_task("agents.unload_model", args=["triton", "echo"], queue=f"agents.{node}")
    wait_for(lambda: model_state(fresh_triton, "echo") == "UNAVAILABLE", 60, "echo was not unloaded", log_path)


def test_beat_schedules_collection_on_the_nodes_queue_and_reports_back_off(agent_worker):
    _, log_path = agent_worker
    wait_for(
        lambda: "agents.collect_gpus" in log_path.read_text() and "report not delivered" in log_path.read_text(),
        30,
        "no collection task ran or no report was attempted",
        log_path,
    )
