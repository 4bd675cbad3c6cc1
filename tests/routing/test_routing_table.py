"""The routing table: which targets are routable for a model, and why the others are not."""

import json

from meshcore.routing.desired import DesiredSnapshot, NodeInfo, PolicyInfo, RuntimeInfo
from meshcore.routing.table import DRAINING, NOT_READY, RUNTIME_DOWN, STALE, UNHEALTHY, build_table

NOW = 10_000.0


def record(
    models: dict[str, str], *, age: float = 0.5, health: str = "healthy", live: bool = True, version: str = "1"
) -> dict:
    sample = {
        "live": live,
        "ready": live,
        "models": [{"name": n, "version": version, "state": s, "reason": ""} for n, s in models.items()],
    }
    return {"received_at": str(NOW - age), "interval": "1", "health": health, "rt:triton": json.dumps(sample)}


def desired(*names: str, draining: tuple[str, ...] = (), catalog=("m",), policies=()) -> DesiredSnapshot:
    return DesiredSnapshot(
        nodes={n: NodeInfo(n, n in draining, "", {}) for n in names},
        runtimes=tuple(RuntimeInfo(i, n, "triton", f"http://{n}:8000") for i, n in enumerate(names)),
        catalog=frozenset(catalog),
        policies=tuple(policies),
    )


def reasons(table, model="m") -> dict[str, str]:
    return {e.target.key: e.reason for e in table.routes(model).excluded}


def test_a_ready_model_on_a_healthy_fresh_node_is_routable():
    table = build_table(desired("a"), {"a": record({"m": "READY"})}, NOW, 3.0)
    assert [t.key for t in table.routes("m").targets()] == ["a/triton"]
    assert [t.key for t in table.routes("m").targets("1")] == ["a/triton"]
    assert table.routes("m").targets("2") == ()


def test_each_reason_a_target_is_left_out():
    live = {
        "draining": record({"m": "READY"}),
        "stale": record({"m": "READY"}, age=30),
        "sick": record({"m": "READY"}, health="unhealthy"),
        "down": record({"m": "READY"}, live=False),
        "loading": record({"m": "LOADING"}),
        "good": record({"m": "READY"}),
    }
    table = build_table(desired(*live, "silent", draining=("draining",)), live, NOW, 3.0)
    assert [t.key for t in table.routes("m").targets()] == ["good/triton"]
    assert reasons(table) == {
        "draining/triton": DRAINING,
        "stale/triton": STALE,
        "sick/triton": UNHEALTHY,
        "down/triton": RUNTIME_DOWN,
        "loading/triton": NOT_READY,
    }
    # A node with no report at all holds no model to route: it is not even a candidate.
    assert "silent/triton" not in reasons(table)


def test_a_runtime_of_an_unregistered_node_is_ignored():
    table = build_table(desired("a"), {"a": record({"m": "READY"}), "b": record({"m": "READY"})}, NOW, 3.0)
    assert [t.key for t in table.routes("m").targets()] == ["a/triton"]


def test_the_503_reasons_say_what_happened():
    all_draining = build_table(
        desired("a", "b", draining=("a", "b")), {"a": record({"m": "READY"}), "b": record({"m": "READY"})}, NOW, 3.0
    )
    assert "draining" in all_draining.unroutable_reason("m")
    nowhere = build_table(desired("a", catalog=("m", "x")), {"a": record({"m": "READY"})}, NOW, 3.0)
    assert nowhere.unroutable_reason("x") == "model 'x' is loaded nowhere"
    assert nowhere.knows("x") and not nowhere.knows("y")
    wrong_version = build_table(desired("a"), {"a": record({"m": "READY"})}, NOW, 3.0)
    assert "version '9'" in wrong_version.unroutable_reason("m", "9")


def test_the_load_balancing_policy_is_the_highest_priority_match():
    policies = (
        PolicyInfo("everything", "load_balancing", {"model": "*", "strategy": "random"}, True, 0),
        PolicyInfo("for-m", "load_balancing", {"model": "m", "strategy": "round_robin"}, True, 5),
    )
    table = build_table(desired("a", policies=policies), {}, NOW, 3.0)
    assert table.balancing_policy("m").name == "for-m"
    assert table.balancing_policy("other").name == "everything"
