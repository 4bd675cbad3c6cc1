"""The embedded default, as a new user runs it: `serve` with no broker collects this machine's
GPUs (simulated here, where there is no NVML) and a local Triton, and the API shows both live."""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import pytest

from devtools.fleet import ControlPlane, dumps
from devtools.triton_server import EXAMPLE_MODELS, LocalTriton
from devtools.waiting import wait_until

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def local_triton(tmp_path_factory):
    repository = tmp_path_factory.mktemp("embedded") / "models"
    shutil.copytree(EXAMPLE_MODELS, repository, ignore=shutil.ignore_patterns("__pycache__"))
    with LocalTriton(repository, load_models=["echo", "slow"]) as server:
        yield server


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, local_triton):
    plane = ControlPlane(
        tmp_path_factory.mktemp("embedded-control"),
        MESH_LOCAL_AGENT="auto",
        MESH_LOCAL_NODE="this-host",
        MESH_LOCAL_TRITON_URLS=local_triton.http_url,
        MESH_LOCAL_TRITON_METRICS_URLS=local_triton.metrics_url,
        REDIS_URL="",  # the embedded default: process memory for live state and the channel layer
    )
    plane.start()
    yield plane
    plane.stop()


def infer_echo(triton: LocalTriton, count: int) -> None:
    body = {"inputs": [{"name": "INPUT0", "shape": [4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}
    with httpx.Client(timeout=10) as client:
        for _ in range(count):
            response = client.post(f"{triton.http_url}/v2/models/echo/infer", json=body)
            assert response.status_code == 200, response.text


def test_the_local_node_registers_itself_and_reports_gpus_and_models(embedded, local_triton):
    token = embedded.api_token()
    node = wait_until(
        lambda: next((n for n in embedded.get("/api/v1/nodes/", token)["results"] if n["name"] == "this-host"), None),
        30,
        "the local node never registered itself",
    )
    assert set(node["roles"]) == {"gpu", "control"}
    gpus = wait_until(
        lambda: embedded.get("/api/v1/gpus/?node=this-host", token)["results"],
        30,
        "the local GPUs never reached the API",
    )
    assert all(gpu["simulated"] and gpu["uuid"].startswith("SIM-") for gpu in gpus), dumps(gpus)
    assert all(gpu["live"]["age_s"] < 5 for gpu in gpus)

    instances = wait_until(
        lambda: (
            {i["model_name"]: i for i in embedded.get("/api/v1/instances/", token)["results"]}.keys()
            >= {"echo", "slow"}
            and {i["model_name"]: i for i in embedded.get("/api/v1/instances/", token)["results"]}
        ),
        30,
        "the local Triton's models never reached the API",
    )
    assert instances["echo"]["state"] == "ready"
    assert instances["echo"]["node"] == "this-host"
    assert instances["echo"]["in_catalog"] is False  # Triton serves it; the catalog does not list it


def test_simulated_gpus_follow_the_runtimes_real_load(embedded, local_triton):
    token = embedded.api_token()
    wait_until(lambda: embedded.get("/api/v1/gpus/?node=this-host", token)["results"], 30, "no local GPUs")

    def busiest() -> float:
        return max(g["live"]["metrics"]["utilization_gpu_pct"] for g in embedded.get("/api/v1/gpus/", token)["results"])

    idle = busiest()
    infer_echo(local_triton, 300)

    def loaded() -> bool:
        infer_echo(local_triton, 50)
        return busiest() > idle

    wait_until(loaded, 30, f"utilization stayed at {idle}% while Triton served requests", interval=0.5)
    rate = wait_until(
        lambda: next(
            (
                i["live"]["stats"].get("inference_per_s")
                for i in embedded.get("/api/v1/instances/", token)["results"]
                if i["model_name"] == "echo" and i["live"] and i["live"]["stats"].get("inference_per_s")
            ),
            None,
        ),
        20,
        "echo's inference rate never showed",
    )
    assert rate > 0
    assert np.isfinite(rate)
