"""Router-local choices: strategies, outlier ejection with panic mode, the retry budget, sequences."""

from collections import Counter

from meshcore.routing.balancer import Balancer, HashRing, OutlierSettings, RetryBudget
from meshcore.routing.sequences import SequenceTable
from meshcore.routing.table import Target


def targets(count: int) -> list[Target]:
    return [Target(f"n{i}/triton", f"n{i}", "triton", f"http://10.0.0.{i}:8000", i) for i in range(count)]


def test_round_robin_visits_each_target_in_turn():
    balancer, fleet = Balancer(), targets(3)
    firsts = [balancer.order("round_robin", "m", fleet)[0].key for _ in range(6)]
    assert firsts == ["n0/triton", "n1/triton", "n2/triton"] * 2


def test_round_robin_counts_per_model():
    balancer, fleet = Balancer(), targets(2)
    assert balancer.order("round_robin", "a", fleet)[0] == balancer.order("round_robin", "b", fleet)[0]


def test_least_request_prefers_the_target_with_fewer_in_flight():
    balancer, fleet = Balancer(), targets(2)
    balancer.state("n0/triton").in_flight = 5
    assert all(balancer.order("least_request", "m", fleet)[0].key == "n1/triton" for _ in range(20))


def test_least_request_spreads_over_idle_targets():
    balancer, fleet = Balancer(), targets(4)
    firsts = Counter(balancer.order("least_request", "m", fleet)[0].key for _ in range(400))
    assert set(firsts) == {t.key for t in fleet}


def test_score_based_sends_to_the_shorter_expected_wait():
    balancer, fleet = Balancer(), targets(2)
    balancer.service_stats("m", "n0/triton").observe(0.050, failed=False)
    balancer.service_stats("m", "n1/triton").observe(0.010, failed=False)
    assert all(balancer.order("score_based", "m", fleet)[0].key == "n1/triton" for _ in range(20))
    balancer.service_stats("m", "n1/triton").in_flight = 9  # (9 + 1) x 10 ms > 50 ms
    assert balancer.order("score_based", "m", fleet)[0].key == "n0/triton"


def test_every_order_holds_every_target_once():
    balancer, fleet = Balancer(), targets(5)
    for strategy in ("round_robin", "random", "least_request", "consistent_hash"):
        order = balancer.order(strategy, "m", fleet, hash_key="k")
        assert sorted(t.key for t in order) == sorted(t.key for t in fleet), strategy


def test_a_hash_ring_moves_only_the_keys_of_a_removed_target():
    fleet = targets(4)
    before = HashRing(fleet)
    after = HashRing(fleet[:3])
    keys = [f"session-{i}" for i in range(2000)]
    moved = [k for k in keys if before.lookup(k) != after.lookup(k)]
    assert all(before.lookup(k).key == "n3/triton" for k in moved)
    assert 0.1 < len(moved) / len(keys) < 0.4  # about a quarter


def test_consecutive_failures_eject_for_longer_each_time():
    balancer = Balancer(OutlierSettings(consecutive_failures=3, base_ejection_s=30, max_ejection_s=70))
    seen = []
    balancer.on_ejection = seen.append
    now = 1000.0
    for round_ in range(3):
        for _ in range(3):
            balancer.record_failure("n0/triton", now=now)
        assert seen[-1].ejected and seen[-1].for_s == min(30 * (round_ + 1), 70)
        now += seen[-1].for_s + 1
        balancer.restore_due(now)
        assert seen[-1].ejected is False
    assert [e.for_s for e in seen if e.ejected] == [30, 60, 70]


def test_a_success_resets_the_failure_count():
    balancer = Balancer(OutlierSettings(consecutive_failures=3))
    for _ in range(2):
        balancer.record_failure("n0/triton", now=1.0)
    balancer.record_success("n0/triton")
    balancer.record_failure("n0/triton", now=1.0)
    assert balancer.ejected(now=1.0) == {}


def test_a_refused_connection_ejects_at_once():
    balancer = Balancer(OutlierSettings(consecutive_failures=5))
    balancer.record_failure("n0/triton", now=1.0)
    assert balancer.ejected(now=1.0) == {}  # a failure that is not a refusal needs five in a row
    balancer.record_failure("n1/triton", now=1.0, refused=True)
    assert list(balancer.ejected(now=1.0)) == ["n1/triton"]


def test_ejected_targets_are_left_out_until_more_than_half_are():
    balancer, fleet = Balancer(OutlierSettings(consecutive_failures=1)), targets(4)
    balancer.record_failure("n0/triton", now=10.0)
    kept, panic = balancer.eligible(fleet, now=11.0)
    assert [t.key for t in kept] == ["n1/triton", "n2/triton", "n3/triton"] and not panic
    balancer.record_failure("n1/triton", now=10.0)
    kept, panic = balancer.eligible(fleet, now=11.0)
    assert len(kept) == 2 and not panic  # half ejected: still honoured
    balancer.record_failure("n2/triton", now=10.0)
    kept, panic = balancer.eligible(fleet, now=11.0)
    assert len(kept) == 4 and panic  # more than half: route to all


def test_the_retry_budget_is_a_fifth_of_requests_in_flight_or_the_minimum():
    budget = RetryBudget(fraction=0.2, minimum=3)
    budget.active_requests, budget.active_retries = 100, 19
    assert budget.allows_retry()
    budget.active_retries = 20
    assert not budget.allows_retry()
    budget.active_requests, budget.active_retries = 2, 2
    assert budget.allows_retry()
    budget.active_retries = 3
    assert not budget.allows_retry()


def test_a_sequence_is_forgotten_when_idle():
    table = SequenceTable(idle_s=10)
    table.remember(("m", 7), "n0/triton", now=0.0)
    assert table.target_of(("m", 7), now=5.0) == "n0/triton"
    assert table.target_of(("m", 7), now=16.0) is None
    assert len(table) == 0


def test_the_sequence_table_is_bounded():
    table = SequenceTable(idle_s=100, max_entries=3)
    for i in range(5):
        table.remember(("m", i), "t", now=float(i))
    assert len(table) == 3
    assert table.target_of(("m", 0), now=5.0) is None
    assert table.target_of(("m", 4), now=5.0) == "t"
