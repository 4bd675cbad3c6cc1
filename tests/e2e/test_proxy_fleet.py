"""End to end through /proxy: a real control plane, two agent processes, two real Triton servers,
and tritonclient.http pointed at the mesh unchanged.

What a user sees: every tritonclient call works through the mesh (JSON and binary tensors,
compressed bodies); a drained node gets no new request within a second; a Triton killed under
load loses no request that could be retried, is ejected (event TARGET_EJECTED) and comes back
(TARGET_RESTORED) after it restarts; metrics and router aggregates show the traffic.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from devtools.fleet import AgentProcess, ControlPlane
from devtools.ports import free_port
from devtools.triton_server import EXAMPLE_MODELS, LocalTriton
from devtools.waiting import wait_until

pytestmark = pytest.mark.timeout(300)

NODES = ("gpu-a", "gpu-b")


class Fleet:
    def __init__(self, tmp_path_factory) -> None:
        work = tmp_path_factory.mktemp("proxy-fleet")
        self.tritons = {
            node: LocalTriton(
                EXAMPLE_MODELS,
                load_models=["echo", "slow"],
                http_port=free_port(),
                metrics_port=free_port(),
                log_path=work / f"triton-{node}.log",
            )
            for node in NODES
        }
        # Four load threads may all see their request cut at the kill: a budget of four retries lets each retry.
        self.plane = ControlPlane(
            work, MESH_PROXY_EJECTION_S="2", MESH_PROXY_RETRIES="2", MESH_PROXY_RETRY_BUDGET_MIN="4"
        )
        self.work = work
        self.agents: dict[str, AgentProcess] = {}

    def start(self) -> None:
        for triton in self.tritons.values():
            triton.start()
        self.plane.start()
        for node in NODES:
            token = self.plane.register_node(node)
            triton = self.tritons[node]
            agent = AgentProcess(
                node, token, self.plane, self.work, "--triton", f"triton={triton.http_url},{triton.metrics_url}"
            )
            agent.start()
            self.agents[node] = agent
        self.token = self.plane.api_token()
        wait_until(
            lambda: self.targets_seen(20) == {f"{n}/triton" for n in NODES}, 90, "both targets never became routable"
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def infer(self, client: httpx.Client, values: list[float] = (1.0,), model: str = "echo") -> httpx.Response:
        body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [len(values)], "data": list(values)}]}
        return client.post(f"{self.plane.url}/proxy/v2/models/{model}/infer", json=body, headers=self.headers())

    def targets_seen(self, requests: int, concurrency: int = 4) -> set[str]:
        """Targets that answered `requests` requests sent `concurrency` at a time. Concurrent, since
        score_based sends one request at a time to the best-scoring target whatever the others."""

        def send(count: int) -> list[httpx.Response]:
            with httpx.Client(timeout=10) as client:
                return [self.infer(client) for _ in range(count)]

        with ThreadPoolExecutor(concurrency) as pool:
            batches = pool.map(send, [requests // concurrency + 1] * concurrency)
        return {a.headers.get("x-infermesh-target") for batch in batches for a in batch if a.status_code == 200}

    def api(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        return httpx.request(method, f"{self.plane.url}/api/v1/{path}", json=body, headers=self.headers(), timeout=10)

    def serve_log(self) -> str:
        """The end of the control plane's log, for a failure message."""
        return "serve's log ends:\n" + self.plane.serve.log_tail()

    def events(self, event_type: str) -> list[dict]:
        return self.api("GET", f"events/?type={event_type}").json()["results"]

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        self.plane.stop()
        for triton in self.tritons.values():
            triton.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    fleet = Fleet(tmp_path_factory)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


def test_tritonclient_works_through_the_mesh_unchanged(fleet):
    client = triton_http.InferenceServerClient(f"127.0.0.1:{fleet.plane.port}/proxy")
    headers = fleet.headers()
    assert client.is_server_live(headers=headers)
    assert client.is_server_ready(headers=headers)
    assert client.is_model_ready("echo", headers=headers)
    assert client.get_model_metadata("echo", headers=headers)["name"] == "echo"
    assert client.get_model_config("echo", headers=headers)["name"] == "echo"
    values = np.arange(6, dtype=np.float32)
    for binary, compression in ((False, None), (True, None), (True, "gzip"), (False, "deflate")):
        tensor = triton_http.InferInput("INPUT0", [6], "FP32")
        tensor.set_data_from_numpy(values, binary_data=binary)
        output = triton_http.InferRequestedOutput("OUTPUT0", binary_data=binary)
        # A fresh dict each call: tritonclient adds Inference-Header-Content-Length to the one it is given.
        result = client.infer(
            "echo", [tensor], outputs=[output], headers=fleet.headers(), request_compression_algorithm=compression
        )
        assert result.as_numpy("OUTPUT0").tolist() == values.tolist(), (binary, compression)
    with pytest.raises(triton_http.InferenceServerException) as refused:
        client.infer("echo", [tensor], headers={"Authorization": "Bearer imt_wrong"})
    assert str(refused.value) == "[401] unauthenticated"  # tritonclient shows the `error` field
    client.close()


def test_a_drained_node_gets_no_new_request_within_a_second(fleet):
    assert fleet.api("POST", "nodes/gpu-a/drain/").status_code == 200
    drained_at = time.monotonic()
    try:
        with httpx.Client(timeout=10) as client:
            while time.monotonic() - drained_at < 1.0:
                fleet.infer(client)
            after = [fleet.infer(client).headers["x-infermesh-target"] for _ in range(30)]
        assert set(after) == {"gpu-b/triton"}
    finally:
        assert fleet.api("POST", "nodes/gpu-a/undrain/").status_code == 200
    wait_until(lambda: "gpu-a/triton" in fleet.targets_seen(10), 5, "gpu-a did not come back after undrain")


def test_a_triton_killed_under_load_loses_no_request_and_comes_back(fleet, request):
    stop = threading.Event()
    outcomes: list[tuple[int, str]] = []

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                answer = fleet.infer(client)
                outcomes.append((answer.status_code, answer.headers.get("x-infermesh-target", "") or answer.text))

    # Round robin for this test: every other request goes to the victim, so one meets its dead Triton at
    # once. (score_based may leave a target idle for longer than its last report takes to go stale, and a
    # target nobody sends to is rightly never ejected; CI saw that happen.)
    spec = {"model": "echo", "strategy": "round_robin"}
    created = fleet.api("POST", "policies/", {"name": "e2e-kill-rr", "kind": "load_balancing", "spec": spec})
    assert created.status_code == 201, created.text
    request.addfinalizer(lambda: fleet.api("DELETE", "policies/e2e-kill-rr/"))
    with httpx.Client(timeout=10) as client:
        wait_until(
            lambda: fleet.infer(client).headers.get("x-infermesh-strategy") == "round_robin", 5, "no round robin"
        )
    with ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(load) for _ in range(4)]
        time.sleep(1.0)
        busiest = Counter(target for _, target in outcomes).most_common(1)[0][0]
        victim_node, survivor = busiest.split("/")[0], ({f"{n}/triton" for n in NODES} - {busiest}).pop()
        # The host goes down whole: its agent first, so the router alone must find the dead Triton (a live
        # agent reports it gone within half a second, sometimes before any request meets it: no ejection then).
        fleet.agents[victim_node].kill()
        fleet.tritons[victim_node].kill()  # SIGKILL: open connections reset, new ones refused
        killed_at = len(outcomes)
        time.sleep(3.0)
        stop.set()
        for worker in workers:
            worker.result()
    assert len(outcomes) > killed_at + 20
    failed = [outcome for outcome in outcomes if outcome[0] != 200]
    assert failed == [], f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"
    assert {target for _, target in outcomes[killed_at + 20 :]} == {survivor}
    ejected = wait_until(lambda: fleet.events("TARGET_EJECTED"), 10, f"no TARGET_EJECTED event; {fleet.serve_log()}")
    assert {event["data"]["target"] for event in ejected} == {busiest}

    fleet.tritons[victim_node].start()  # same ports: the agent finds it again
    fleet.agents[victim_node].start()
    wait_until(lambda: busiest in fleet.targets_seen(10), 60, "the restarted Triton never took requests")
    restored = wait_until(lambda: fleet.events("TARGET_RESTORED"), 10, "no TARGET_RESTORED event")
    assert {event["data"]["target"] for event in restored} == {busiest}


def test_metrics_need_a_staff_token_and_count_the_traffic(fleet):
    assert httpx.get(f"{fleet.plane.url}/metrics").status_code == 401
    metrics = httpx.get(f"{fleet.plane.url}/metrics", headers=fleet.headers())
    assert metrics.status_code == 200
    assert 'infermesh_proxy_requests_total{code="200",model="echo",target="gpu-a/triton"}' in metrics.text
    assert "infermesh_proxy_upstream_duration_seconds_bucket" in metrics.text


def test_router_aggregates_reach_the_instances_api(fleet):
    def routed() -> list[dict]:
        fleet.targets_seen(20)
        instances = fleet.api("GET", "instances/?model_name=echo").json()["results"]
        return [i for i in instances if (i.get("live") or {}).get("router")]

    found = wait_until(routed, 10, "no router aggregates on the instances")
    assert found[0]["live"]["router"]["rate"] > 0


def test_an_acl_and_a_quota_written_through_the_api_take_effect_within_a_second(fleet):
    def post_policy(name: str, kind: str, spec: dict) -> float:
        response = httpx.post(
            f"{fleet.plane.url}/api/v1/policies/",
            json={"name": name, "kind": kind, "spec": spec},
            headers=fleet.headers(),
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return time.monotonic()

    def delete_policy(name: str) -> None:
        assert fleet.api("DELETE", f"policies/{name}/").status_code == 204

    with httpx.Client(timeout=10) as client:
        written = post_policy(
            "e2e-deny",
            "acl",
            {"subjects": {"users": ["admin"]}, "models": ["echo"], "actions": ["infer"], "effect": "deny"},
        )
        refused = wait_until(lambda: fleet.infer(client).status_code == 403, 1.0, "the acl took longer than 1 s")
        assert refused and time.monotonic() - written < 1.5
        assert "e2e-deny" in fleet.infer(client).json()["detail"]
        delete_policy("e2e-deny")
        wait_until(lambda: fleet.infer(client).status_code == 200, 1.0, "the deleted acl still refused after 1 s")

        post_policy("e2e-quota", "quota", {"scope": "model", "target": "echo", "max_requests_per_second": 1})
        statuses = set()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and 429 not in statuses:
            statuses.add(fleet.infer(client).status_code)
        assert 429 in statuses, "the quota did not refuse within a second"
        delete_policy("e2e-quota")


def test_serve_stops_cleanly_closing_its_upstream_connections(fleet):
    fleet.targets_seen(8)  # the router holds pooled connections to both Tritons
    fleet.plane.stop()
    log = fleet.plane.serve.log()
    assert "infermesh stopped" in log
    complaints = ("Traceback", "Unclosed", "was destroyed but it is pending", "exception was never retrieved")
    assert not [line for line in log.splitlines() if any(complaint in line for complaint in complaints)], log[-2000:]
