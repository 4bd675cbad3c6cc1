"""Policies on the hot path, through /proxy to real Tritons: acl (403), quota (429), pin, load_balancing."""

import asyncio

import pytest

from meshcore.routing.desired import PolicyInfo
from tests.proxy.support import STAFF_TOKEN, infer_body

pytestmark = pytest.mark.django_db(transaction=False)


def policy(name: str, kind: str, priority: int = 0, **spec) -> PolicyInfo:
    return PolicyInfo(name, kind, spec, True, priority)


def fleet(view, tritons, *policies: PolicyInfo, **kwargs):
    return view.set({"gpu-a": tritons[0].http_url, "gpu-b": tritons[1].http_url}, policies=policies, **kwargs)


async def infer(client, model: str = "echo", **headers):
    return await client.post(f"/proxy/v2/models/{model}/infer", json=infer_body([1]), headers=headers)


def acl(name: str, effect: str, models: tuple[str, ...] = ("echo",), **subjects: list[str]) -> PolicyInfo:
    return policy(name, "acl", subjects=subjects, models=list(models), actions=["infer"], effect=effect)


@pytest.mark.parametrize(
    ("policies", "refused_by"),
    [
        ((acl("no-alice", "deny", users=["alice"]),), "no-alice"),
        # Deny wins over allow.
        (
            (acl("team-a-may", "allow", ("*",), groups=["team-a"]), acl("but-not-alice", "deny", users=["alice"])),
            "but-not-alice",
        ),
        # An allow list refuses whoever is not on it.
        ((acl("only-bob", "allow", users=["bob"]),), "only-bob"),
    ],
)
async def test_an_acl_refuses_with_403_naming_the_policy(client, view, tritons, policies, refused_by):
    fleet(view, tritons, *policies)
    response = await infer(client)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden_by_policy"
    assert f"'{refused_by}'" in response.json()["detail"]
    assert (await infer(client, "slow")).status_code == 200  # every acl here names echo only


async def test_a_rate_quota_answers_429_with_retry_after(client, view, tritons):
    # One request per 5 s: the burst (one second of the rate, at least one) lets the first through.
    fleet(view, tritons, policy("tenant-rate", "quota", scope="tenant", target="team-a", max_requests_per_second=0.2))
    answers = [await infer(client) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 429, 429]
    refused = answers[1]
    assert refused.json()["error"] == "quota_exceeded"
    assert "tenant-rate" in refused.json()["detail"]
    assert 1 <= int(refused.headers["retry-after"]) <= 5


async def test_a_quota_of_another_tenant_does_not_apply(client, view, tritons):
    fleet(view, tritons, policy("team-b-rate", "quota", scope="tenant", target="team-b", max_requests_per_second=1))
    assert [(await infer(client)).status_code for _ in range(3)] == [200, 200, 200]


async def test_a_concurrency_quota_refuses_beyond_its_limit(client, view, tritons):
    fleet(view, tritons, policy("one-at-a-time", "quota", scope="model", target="slow", max_concurrent=1))
    first, second = await asyncio.gather(infer(client, "slow"), infer(client, "slow"))
    assert sorted([first.status_code, second.status_code]) == [200, 429]
    assert (await infer(client, "slow")).status_code == 200  # released when the first finished


async def test_a_logged_quota_only_records(client, view, tritons, router):
    fleet(view, tritons, policy("watch", "quota", scope="global", max_requests_per_second=1, enforcement="log"))
    assert [(await infer(client)).status_code for _ in range(4)] == [200] * 4
    assert router.quotas.refusals_logged >= 2


async def test_a_pin_narrows_the_candidates(client, view, tritons):
    fleet(view, tritons, policy("echo-on-b", "pin", model="echo", nodes=["gpu-b"]))
    assert {(await infer(client)).headers["x-infermesh-target"] for _ in range(8)} == {"gpu-b/triton"}
    slow = {(await infer(client, "slow")).headers["x-infermesh-target"] for _ in range(12)}
    assert slow == {"gpu-a/triton", "gpu-b/triton"}  # the pin names echo only


async def test_a_pin_that_leaves_out_every_loaded_target_is_a_503_that_says_so(client, view, tritons):
    fleet(view, tritons, policy("echo-elsewhere", "pin", model="echo", selector={"gpu-type": "h200"}))
    response = await infer(client)
    assert response.status_code == 503
    assert "pin policy" in response.json()["detail"]


async def test_the_load_balancing_policy_switches_the_strategy(client, view, tritons):
    fleet(view, tritons)
    assert (await infer(client)).headers["x-infermesh-strategy"] == "score_based"
    fleet(view, tritons, policy("rr", "load_balancing", model="echo", strategy="round_robin"))
    assert (await infer(client)).headers["x-infermesh-strategy"] == "round_robin"


async def test_fallback_nodes_take_requests_only_when_nothing_else_can(client, view, tritons):
    spill = policy("spill", "load_balancing", model="echo", strategy="round_robin", fallback_nodes=["gpu-b"])
    fleet(view, tritons, spill)
    assert {(await infer(client)).headers["x-infermesh-target"] for _ in range(6)} == {"gpu-a/triton"}
    fleet(view, tritons, spill, draining=("gpu-a",))
    assert (await infer(client)).headers["x-infermesh-target"] == "gpu-b/triton"


async def test_score_based_learns_that_one_target_is_slower(client, view, tritons, router):
    fleet(view, tritons)
    for _ in range(10):
        await infer(client)
    router.balancer.service_stats("echo", "gpu-a/triton").observe(5.0, failed=False)  # as after a 5 s answer
    seen = {(await infer(client)).headers["x-infermesh-target"] for _ in range(10)}
    assert seen == {"gpu-b/triton"}


async def test_a_staff_token_gets_the_decision_explained_in_a_header(client, view, tritons):
    fleet(view, tritons, draining=("gpu-a",))
    plain = await infer(client, **{"x-infermesh-explain": "1"})
    assert "x-infermesh-explain" not in plain.headers  # not for a non-staff token
    staff = await infer(client, **{"x-infermesh-explain": "1", "authorization": f"Bearer {STAFF_TOKEN.value}"})
    explained = staff.headers["x-infermesh-explain"]
    assert explained.startswith("strategy=score_based; order=gpu-b/triton=")
    assert "gpu-a/triton:node draining" in explained
