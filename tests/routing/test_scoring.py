"""score_based on fixed inputs: expected wait, each signal, missing and stale signals, ties, failures."""

import random
from collections import Counter

import pytest

from meshcore.routing import scoring
from meshcore.routing.scoring import DEFAULT_WEIGHTS, SAMPLE, ServiceStats, TargetSignals
from meshcore.routing.scoring import rank as rank_any_time
from meshcore.routing.table import Target

NOW = 1000.0  # the decisions below are made at this monotonic time, the samples taken at it


def rank(*args, **kwargs):
    return rank_any_time(*args, **{"now": NOW, **kwargs})


WAIT_ONLY = {name: 0.0 for name in scoring.SIGNALS} | {"expected_wait": 1.0}


def targets(*keys: str) -> list[Target]:
    return [Target(key, key.split("/")[0], "triton", f"http://{key}", i) for i, key in enumerate(keys)]


def stats(cost_ms: float, in_flight: int = 0, concurrency: int = 1, errors: float = 0.0) -> ServiceStats:
    made = ServiceStats(in_flight=in_flight, cost_s=cost_ms / 1000, concurrency=concurrency, samples=1, stamp=NOW)
    made.error_rate = errors
    return made


def order(ranked) -> list[str]:
    return [scored.key for scored in ranked]


def test_the_faster_target_wins_on_expected_wait():
    ranked = rank(targets("a", "b"), "m", {"a": stats(40), "b": stats(10)}, {}, WAIT_ONLY)
    assert order(ranked) == ["b", "a"]
    assert ranked[0].score == pytest.approx(100)
    assert ranked[1].score == pytest.approx(25, rel=1e-3)  # four times the wait, a quarter of the score


def test_requests_ahead_count_and_concurrency_divides():
    # a: (3 ahead + 1) x 10 ms / 1 = 40 ms; b: (3 + 1) x 20 ms / 4 instances = 20 ms
    ranked = rank(targets("a", "b"), "m", {"a": stats(10, 3), "b": stats(20, 3, concurrency=4)}, {}, WAIT_ONLY)
    assert order(ranked) == ["b", "a"]
    assert ranked[0].wait_s == pytest.approx(0.020)


def test_the_reported_queue_is_not_added_to_the_routers_own_requests():
    signals = {"a": TargetSignals(queue_depth={"m": 2.0}, queue_age_s=0.1)}
    ranked = rank(targets("a"), "m", {"a": stats(10, in_flight=2)}, signals, WAIT_ONLY)
    assert ranked[0].wait_s == pytest.approx(0.030)  # max(2 in flight, 2 queued) + 1 = 3, not 5
    deeper = {"a": TargetSignals(queue_depth={"m": 5.0}, queue_age_s=0.1)}
    assert rank(targets("a"), "m", {"a": stats(10, in_flight=2)}, deeper, WAIT_ONLY)[0].wait_s == pytest.approx(0.060)


def test_a_stale_queue_is_ignored():
    signals = {"a": TargetSignals(queue_depth={"m": 50.0}, queue_age_s=scoring.SIGNAL_FRESH_S + 1)}
    assert rank(targets("a"), "m", {"a": stats(10)}, signals, WAIT_ONLY)[0].wait_s == pytest.approx(0.010)


@pytest.mark.parametrize(
    ("signal", "better", "worse"),
    [
        (
            "gpu_utilization",
            TargetSignals(gpu_utilization_pct=10, gpu_age_s=0),
            TargetSignals(gpu_utilization_pct=90, gpu_age_s=0),
        ),
        (
            "gpu_memory",
            TargetSignals(gpu_memory_free_pct=80, gpu_age_s=0),
            TargetSignals(gpu_memory_free_pct=5, gpu_age_s=0),
        ),
        (
            "queue_depth",
            TargetSignals(queue_depth={"m": 0}, queue_age_s=0),
            TargetSignals(queue_depth={"m": 9}, queue_age_s=0),
        ),
    ],
)
def test_each_telemetry_signal_scores_as_designed(signal, better, worse):
    weights = {name: 0.0 for name in scoring.SIGNALS} | {signal: 1.0}
    ranked = rank(targets("a", "b"), "m", {}, {"a": worse, "b": better}, weights)
    assert order(ranked) == ["b", "a"]
    expected = {"gpu_utilization": (90, 10), "gpu_memory": (80, 5), "queue_depth": (100, 10)}[signal]
    assert [round(s.score) for s in ranked] == list(expected)


def test_network_latency_scores_a_thousand_over_ms_plus_one():
    weights = {name: 0.0 for name in scoring.SIGNALS} | {"network_latency": 1.0}
    ranked = rank(
        targets("a", "b"), "m", {}, {}, weights, latency_ms={"a": (49.0, 100.0), "b": (1.0, 100.0)}, now=100.5
    )
    assert [(s.key, round(s.score)) for s in ranked] == [("b", 100), ("a", 20)]


def test_recent_errors_lower_the_score():
    weights = {name: 0.0 for name in scoring.SIGNALS} | {"recent_performance": 1.0}
    ranked = rank(targets("a", "b"), "m", {"a": stats(10, errors=0.5), "b": stats(10)}, {}, weights)
    assert [(s.key, round(s.score)) for s in ranked] == [("b", 100), ("a", 50)]


def test_a_missing_signal_does_not_punish_a_target():
    # Same wait; a reports a busy GPU (score 50 on that signal), b reports no GPU at all.
    signals = {"a": TargetSignals(gpu_utilization_pct=50, gpu_age_s=0)}
    weights = {"expected_wait": 1.0, "gpu_utilization": 1.0}
    ranked = {s.key: s.score for s in rank(targets("a", "b"), "m", {"a": stats(10), "b": stats(10)}, signals, weights)}
    assert ranked["b"] == pytest.approx(100)  # normalized over the weights present: wait only
    assert ranked["a"] == pytest.approx(75)  # (100 x 1 + 50 x 1) / 2


def test_a_stale_gpu_signal_is_dropped_and_marked_stale():
    stale = TargetSignals(gpu_utilization_pct=99, gpu_age_s=scoring.SIGNAL_FRESH_S + 1)
    ranked = rank(targets("a"), "m", {"a": stats(10)}, {"a": stale}, DEFAULT_WEIGHTS, explain=True)
    assert ranked[0].signals["gpu_utilization"].stale is True
    assert ranked[0].signals["gpu_utilization"].weight == 0
    assert ranked[0].score == pytest.approx(100)


def test_with_no_signal_at_all_every_target_is_equal():
    ranked = rank(targets("a", "b"), "m", {}, {}, {"gpu_utilization": 1.0})
    assert {round(s.score, 6) for s in ranked} == {50.0}


def test_ties_break_at_random():
    rng = random.Random(7)
    firsts = Counter(rank(targets("a", "b", "c"), "m", {}, {}, DEFAULT_WEIGHTS, rng=rng)[0].key for _ in range(300))
    assert set(firsts) == {"a", "b", "c"} and min(firsts.values()) > 50


def test_a_slower_sample_takes_effect_at_once_and_a_faster_one_decays_in():
    service = ServiceStats()
    service.observe(0.010, failed=False, now=0.0)
    service.observe(0.100, failed=False, now=1.0)
    assert service.cost_s == pytest.approx(0.100)
    service.observe(0.010, failed=False, now=2.0)
    assert 0.090 < service.cost_s < 0.100  # one second into a 10 s decay
    for second in range(3, 60):
        service.observe(0.010, failed=False, now=float(second))
    assert service.cost_s == pytest.approx(0.010, abs=0.001)


def test_a_target_that_fails_fast_does_not_look_fast():
    service = ServiceStats()
    service.observe(0.005, failed=False, now=NOW - 0.1)
    timeout_s = 2.0
    service.observe(timeout_s, failed=True, now=NOW)  # the proxy records a failure at the timeout
    healthy = stats(50)
    ranked = rank(targets("a", "b"), "m", {"a": service, "b": healthy}, {}, DEFAULT_WEIGHTS)
    assert order(ranked) == ["b", "a"]
    assert service.error_rate > 0


def test_a_large_pool_is_sampled():
    fleet = targets(*(f"n{i}" for i in range(1000)))
    ranked = rank(fleet, "m", {}, {}, DEFAULT_WEIGHTS)
    assert len(ranked) == SAMPLE


def test_an_idle_targets_cost_decays_so_it_is_tried_again():
    slow = stats(100)
    slow.stamp -= 30  # its last (slow) sample is 30 s old: the cost read now is 100 ms x e^-3
    assert slow.cost_now(NOW) == pytest.approx(0.100 * 0.0498, rel=0.01)
    ranked = rank(targets("a", "b"), "m", {"a": slow, "b": stats(10)}, {}, WAIT_ONLY)
    assert order(ranked) == ["a", "b"]


def test_a_forgotten_target_is_unmeasured():
    service = stats(500, errors=0.5)
    service.forget()
    assert (service.samples, service.cost_s, service.error_rate) == (0, 0.0, 0.0)


def test_a_target_without_samples_gets_the_typical_cost_not_zero():
    ranked = rank(targets("new", "a", "b"), "m", {"a": stats(10), "b": stats(30)}, {}, WAIT_ONLY)
    waits = {s.key: s.wait_s for s in ranked}
    assert waits["new"] == pytest.approx(0.030)  # the median of known costs: tried, not flooded
