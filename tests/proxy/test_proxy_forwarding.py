"""/proxy forwards KServe v2 requests to real Triton servers and answers every failure in JSON."""

import asyncio
import gzip
import json

import pytest

from devtools.ports import free_port
from meshcore.routing.desired import PolicyInfo
from tests.proxy.support import REVOKED_TOKEN, STAFF_TOKEN, infer_body, runtime_record

pytestmark = pytest.mark.django_db(transaction=False)


def two_nodes(view, tritons, **kwargs):
    return view.set({"gpu-a": tritons[0].http_url, "gpu-b": tritons[1].http_url}, **kwargs)


async def test_it_forwards_an_inference_and_names_the_target(client, view, tritons):
    two_nodes(view, tritons)
    response = await client.post(
        "/proxy/v2/models/echo/infer", json=infer_body([1, 2, 3]), headers={"x-request-id": "req-1"}
    )
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [1.0, 2.0, 3.0]
    assert response.headers["x-request-id"] == "req-1"
    assert response.headers["x-infermesh-target"] in {"gpu-a/triton", "gpu-b/triton"}


async def test_it_passes_gzip_bodies_through(client, view, tritons):
    two_nodes(view, tritons)
    body = gzip.compress(json.dumps(infer_body([4.0, 5.0])).encode())
    response = await client.post("/proxy/v2/models/echo/infer", content=body, headers={"content-encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [4.0, 5.0]


async def test_it_generates_a_request_id_when_there_is_none(client, view, tritons):
    two_nodes(view, tritons)
    response = await client.get("/proxy/v2/models/echo")
    assert response.status_code == 200
    assert response.json()["name"] == "echo"
    assert len(response.headers["x-request-id"]) == 32


async def test_tritons_own_errors_pass_through_unchanged(client, view, tritons):
    two_nodes(view, tritons)
    bad = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 2], "data": [1]}]}
    response = await client.post("/proxy/v2/models/echo/infer", json=bad)
    direct = await asyncio.to_thread(_post, tritons[0].http_url + "/v2/models/echo/infer", json.dumps(bad).encode())
    assert (response.status_code, response.json()) == direct


def _post(url: str, body: bytes) -> tuple[int, dict]:
    import httpx

    answer = httpx.post(url, content=body)
    return answer.status_code, answer.json()


async def test_round_robin_alternates_between_targets(client, view, tritons):
    policy = PolicyInfo("rr", "load_balancing", {"model": "echo", "strategy": "round_robin"}, True, 0)
    two_nodes(view, tritons, policies=(policy,))
    seen = [
        (await client.post("/proxy/v2/models/echo/infer", json=infer_body([1]))).headers["x-infermesh-target"]
        for _ in range(6)
    ]
    assert seen[0::2] == [seen[0]] * 3 and seen[1::2] == [seen[1]] * 3 and seen[0] != seen[1]


async def test_consistent_hash_keeps_a_key_on_one_target(client, view, tritons):
    policy = PolicyInfo(
        "sticky",
        "load_balancing",
        {"model": "echo", "strategy": "consistent_hash", "hash_header": "x-session"},
        True,
        0,
    )
    two_nodes(view, tritons, policies=(policy,))
    targets = {}
    for session in ("s1", "s2", "s3", "s4", "s5", "s6"):
        seen = {
            (
                await client.post("/proxy/v2/models/echo/infer", json=infer_body([1]), headers={"x-session": session})
            ).headers["x-infermesh-target"]
            for _ in range(3)
        }
        assert len(seen) == 1
        targets[session] = seen.pop()
    assert len(set(targets.values())) == 2  # six keys spread over both (fails with probability 1/32)


async def test_a_sequence_stays_on_its_target(client, view, tritons):
    two_nodes(view, tritons)
    first = await client.post("/proxy/v2/models/echo/infer", json=infer_body([1], sequence_id=42, sequence_start=True))
    assert first.status_code == 200, first.text
    held_by = first.headers["x-infermesh-target"]
    for _ in range(8):
        response = await client.post("/proxy/v2/models/echo/infer", json=infer_body([2], sequence_id=42))
        assert response.headers["x-infermesh-target"] == held_by
    end = await client.post("/proxy/v2/models/echo/infer", json=infer_body([3], sequence_id=42, sequence_end=True))
    assert end.headers["x-infermesh-target"] == held_by


async def test_a_sequence_whose_target_left_gets_503_until_restarted(client, view, tritons):
    two_nodes(view, tritons)
    first = await client.post(
        "/proxy/v2/models/echo/infer", json=infer_body([1], sequence_id="s-7", sequence_start=True)
    )
    held_by = first.headers["x-infermesh-target"].split("/")[0]
    view.set({name: t.http_url for name, t in zip(("gpu-a", "gpu-b"), tritons, strict=True)}, draining=(held_by,))
    response = await client.post("/proxy/v2/models/echo/infer", json=infer_body([2], sequence_id="s-7"))
    assert response.status_code == 503
    assert response.json()["error"] == "sequence_target_gone"
    restarted = await client.post(
        "/proxy/v2/models/echo/infer", json=infer_body([1], sequence_id="s-7", sequence_start=True)
    )
    assert restarted.status_code == 200
    assert restarted.headers["x-infermesh-target"].split("/")[0] != held_by


async def test_a_draining_node_gets_no_new_request(client, view, tritons):
    two_nodes(view, tritons, draining=("gpu-a",))
    for _ in range(10):
        response = await client.post("/proxy/v2/models/echo/infer", json=infer_body([1]))
        assert response.headers["x-infermesh-target"] == "gpu-b/triton"


async def test_every_node_draining_is_a_503_that_says_so(client, view, tritons):
    two_nodes(view, tritons, draining=("gpu-a", "gpu-b"))
    response = await client.post("/proxy/v2/models/echo/infer", json=infer_body([1]))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "draining" in response.json()["detail"]
    assert response.headers["x-request-id"]


async def test_a_model_loaded_nowhere_is_a_503(client, view, tritons):
    view.set(
        {"gpu-a": tritons[0].http_url},
        models=("echo", "resnet"),
        live={"gpu-a": runtime_record({"echo": "READY"}, tritons[0].http_url)},
    )
    response = await client.post("/proxy/v2/models/resnet/infer", json=infer_body([1]))
    assert response.status_code == 503
    assert response.json() == {"error": "no_target", "detail": "model 'resnet' is loaded nowhere"}


async def test_a_stale_report_takes_the_node_out(client, view, tritons):
    stale = runtime_record({"echo": "READY"}, tritons[0].http_url, received_at=1.0)
    view.set({"gpu-a": tritons[0].http_url}, live={"gpu-a": stale})
    response = await client.post("/proxy/v2/models/echo/infer", json=infer_body([1]))
    assert response.status_code == 503
    assert "report stale" in response.json()["detail"]


async def test_an_unknown_model_is_a_404(client, view, tritons):
    two_nodes(view, tritons)
    response = await client.post("/proxy/v2/models/nope/infer", json=infer_body([1]))
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_model"


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/proxy/v3/models/echo/infer", 404, "not_found"),
        ("/proxy/v2/models/echo/explode", 404, "not_found"),
        ("/proxy/v2/repository/index", 403, "repository_forbidden"),
        ("/proxy/v2/repository/models/echo/unload", 403, "repository_forbidden"),
    ],
)
async def test_paths_it_does_not_route_get_json_errors(client, view, tritons, path, status, error):
    two_nodes(view, tritons)
    response = await client.post(path, json={})
    assert response.status_code == status
    assert response.json()["error"] == error
    assert set(response.json()) == {"error", "detail"}


async def test_a_wrong_method_is_a_405_naming_the_right_one(client, view, tritons):
    two_nodes(view, tritons)
    response = await client.get("/proxy/v2/models/echo/infer")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


async def test_malformed_json_with_a_sequence_is_a_400(client, view, tritons):
    two_nodes(view, tritons)
    response = await client.post("/proxy/v2/models/echo/infer", content=b'{"parameters": {"sequence_id": 1')
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_request"


async def test_a_body_over_the_limit_is_a_413(client, view, tritons, router):
    two_nodes(view, tritons)
    router.max_body = 2048
    response = await client.post("/proxy/v2/models/echo/infer", content=b"x" * 4096)
    assert response.status_code == 413
    assert "MESH_PROXY_MAX_BODY_BYTES" in response.json()["detail"]


@pytest.mark.parametrize(
    ("authorization", "status", "error"),
    [
        (None, 401, "unauthenticated"),
        ("Bearer imt_not-a-token", 401, "unauthenticated"),
        (f"Bearer {REVOKED_TOKEN.value}", 401, "unauthenticated"),
        ("Basic abc", 401, "unauthenticated"),
        ("Bearer imn_a-node-token", 403, "node_token"),
    ],
)
async def test_requests_without_a_usable_api_token_are_refused(client, view, tritons, authorization, status, error):
    two_nodes(view, tritons)
    headers = {"authorization": authorization} if authorization else {}
    if authorization is None:
        del client.headers["authorization"]
    response = await client.post("/proxy/v2/models/echo/infer", json=infer_body([1]), headers=headers)
    assert response.status_code == status
    assert response.json()["error"] == error


async def test_anonymous_requests_pass_when_the_proxy_is_opened(client, view, tritons, router):
    two_nodes(view, tritons)
    router.allow_anonymous = True
    del client.headers["authorization"]
    response = await client.post("/proxy/v2/models/echo/infer", json=infer_body([1]))
    assert response.status_code == 200


async def test_health_and_server_metadata(client, view, tritons):
    del client.headers["authorization"]
    assert (await client.get("/proxy/v2/health/live")).status_code == 200
    assert (await client.get("/proxy/v2/health/ready")).status_code == 503  # nothing routable yet
    two_nodes(view, tritons)
    assert (await client.get("/proxy/v2/health/ready")).status_code == 200
    assert (await client.get("/proxy/v2")).status_code == 401
    metadata = await client.get("/proxy/v2", headers={"authorization": f"Bearer {STAFF_TOKEN.value}"})
    assert metadata.json()["name"] == "infermesh"


async def test_a_refused_connection_moves_the_request_to_another_target(client, view, tritons):
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    policy = PolicyInfo("rr", "load_balancing", {"model": "echo", "strategy": "round_robin", "retries": 1}, True, 0)
    view.set({"gpu-dead": dead, "gpu-b": tritons[1].http_url}, policies=(policy,))
    for _ in range(4):
        response = await client.post("/proxy/v2/models/echo/infer", json=infer_body([1]))
        assert response.status_code == 200
        assert response.headers["x-infermesh-target"] == "gpu-b/triton"


async def test_the_retry_budget_refuses_retries_beyond_it(client, view, tritons, router):
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    policy = PolicyInfo("rr", "load_balancing", {"model": "echo", "strategy": "round_robin", "retries": 1}, True, 0)
    view.set({"gpu-dead": dead, "gpu-b": tritons[1].http_url}, policies=(policy,))
    router.balancer.budget.minimum = 0
    router.balancer.budget.fraction = 0.0  # no retry at all may be in flight
    answers = [await client.post("/proxy/v2/models/echo/infer", json=infer_body([1])) for _ in range(2)]
    refused = [a for a in answers if a.status_code == 502]
    assert len(refused) == 1  # round robin sent one of the two to the dead target first
    assert "retry budget exhausted" in refused[0].json()["detail"]


async def test_when_every_tried_target_fails_it_is_a_502(client, view, tritons):
    dead = [f"http://127.0.0.1:{free_port('127.0.0.1')}" for _ in range(2)]
    view.set({"gpu-a": dead[0], "gpu-b": dead[1]})
    response = await client.post("/proxy/v2/models/echo/infer", json=infer_body([1]))
    assert response.status_code == 502
    assert response.json()["error"] == "upstream_failed"
    assert response.json()["tried"] == 2


async def test_a_refused_connection_ejects_a_target_at_once_and_sends_events(client, view, tritons, router):
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    ejections = []
    router.balancer.on_ejection = ejections.append
    policy = PolicyInfo("rr", "load_balancing", {"model": "echo", "strategy": "round_robin", "retries": 1}, True, 0)
    view.set({"gpu-dead": dead, "gpu-b": tritons[1].http_url, "gpu-c": tritons[0].http_url}, policies=(policy,))
    for _ in range(20):
        assert (await client.post("/proxy/v2/models/echo/infer", json=infer_body([1]))).status_code == 200
    assert [(e.target, e.ejected) for e in ejections] == [("gpu-dead/triton", True)]
    assert ejections[0].for_s == router.balancer.outliers.base_ejection_s
    failures = router.balancer.state("gpu-dead/triton").failures
    assert failures == 1  # nothing listens on its port: one refusal is enough
    for _ in range(10):
        await client.post("/proxy/v2/models/echo/infer", json=infer_body([1]))
    assert router.balancer.state("gpu-dead/triton").failures == failures  # ejected: not tried any more


async def test_a_target_its_agent_sees_come_back_is_no_longer_ejected(client, view, tritons, router):
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    policy = PolicyInfo("rr", "load_balancing", {"model": "echo", "strategy": "round_robin", "retries": 1}, True, 0)
    fleet = {"gpu-dead": dead, "gpu-b": tritons[1].http_url, "gpu-c": tritons[0].http_url}
    view.set(fleet, policies=(policy,))
    for _ in range(3):  # round robin tries the dead target once in three
        assert (await client.post("/proxy/v2/models/echo/infer", json=infer_body([1]))).status_code == 200
    assert "gpu-dead/triton" in router.balancer.ejected()
    await asyncio.sleep(1.5)  # the router takes in the table once a second, on its loop
    del fleet["gpu-dead"]
    view.set(fleet, policies=(policy,))  # its agent reports it down
    await asyncio.sleep(1.5)
    assert "gpu-dead/triton" in router.balancer.ejected()
    # And back, restarted (its port answers now: the round-trip probe would eject it again otherwise).
    view.set({**fleet, "gpu-dead": tritons[0].http_url}, policies=(policy,))
    await asyncio.sleep(1.5)
    assert router.balancer.ejected() == {}


async def test_an_idle_target_whose_triton_stopped_is_ejected_by_the_latency_probe(client, view, router):
    """No request need meet a stopped Triton: the round-trip probe finds it refused and ejects it."""

    connections = []

    async def answer_everything(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(h.split(b":")[1]) for h in head.lower().split(b"\r\n") if h.startswith(b"content-length")), 0
                )
                await reader.readexactly(length)
                body = json.dumps({"model_name": "echo", "outputs": []}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    stand_in = await asyncio.start_server(answer_everything, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{stand_in.sockets[0].getsockname()[1]}"
    view.set({"gpu-x": url})
    assert (await client.post("/proxy/v2/models/echo/infer", json=infer_body([1]))).headers[
        "x-infermesh-target"
    ] == "gpu-x/triton"
    stand_in.close()  # the port now refuses
    for writer in connections:
        writer.close()

    deadline = asyncio.get_running_loop().time() + 6  # a probe every 2 s
    while "gpu-x/triton" not in router.balancer.ejected():
        assert asyncio.get_running_loop().time() < deadline, "the probe did not eject the stopped target"
        await asyncio.sleep(0.1)
    assert router.balancer.state("gpu-x/triton").failures == 1


async def test_the_policy_timeout_is_a_504(client, view, tritons):
    policy = PolicyInfo("fast", "load_balancing", {"model": "slow", "timeout_ms": 50}, True, 0)
    two_nodes(view, tritons, policies=(policy,))
    response = await client.post("/proxy/v2/models/slow/infer", json=infer_body([1]))
    assert response.status_code == 504
    assert response.json()["error"] == "upstream_timeout"


async def test_a_client_that_leaves_cancels_its_upstream_request(router, view, tritons):
    two_nodes(view, tritons)
    body = json.dumps(infer_body([1])).encode()
    sent = []
    received = asyncio.Queue()
    await received.put({"type": "http.request", "body": body, "more_body": False})
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/proxy/v2/models/slow/infer",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {STAFF_TOKEN.value}".encode()), (b"content-type", b"application/json")],
    }

    async def send(message):
        sent.append(message)

    task = asyncio.create_task(router(scope, received.get, send))
    await asyncio.sleep(0.05)  # the slow model takes 200 ms
    in_flight = sum(state.in_flight for state in router.balancer.states.values())
    await received.put({"type": "http.disconnect"})
    await asyncio.wait_for(task, 1)
    assert in_flight == 1
    assert sum(state.in_flight for state in router.balancer.states.values()) == 0
    assert sent == []  # nothing was answered to a client that left
