"""A quota holds across router processes that share Redis; without Redis each process has its own."""

import multiprocessing
import uuid

import pytest

from tests.routing.quota_worker import hammer

REDIS_URL = "redis://127.0.0.1:6379/0"
RATE = 40.0
SECONDS = 2.0


def admitted_by_two_processes(shared: bool) -> list[int]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    key = uuid.uuid4().hex[:8]
    start = context.Barrier(2)
    processes = [
        context.Process(target=hammer, args=(shared, key, RATE, SECONDS, REDIS_URL, start, results)) for _ in range(2)
    ]
    for process in processes:
        process.start()
    counts = [results.get(timeout=60) for _ in processes]
    assert all(isinstance(count, int) for count in counts), counts
    for process in processes:
        process.join(timeout=10)
    return counts


@pytest.mark.timeout(120)
def test_two_processes_sharing_redis_share_one_bucket():
    counts = admitted_by_two_processes(shared=True)
    allowed = RATE * SECONDS + RATE  # the rate for the run, plus one second's burst
    assert sum(counts) <= allowed + 2 * max(1, RATE * 0.05)  # at most one unspent lease per process
    assert sum(counts) >= 0.8 * RATE * SECONDS
    assert min(counts) > 0  # both processes got a share


@pytest.mark.timeout(120)
def test_without_redis_each_process_enforces_its_own_bucket():
    counts = admitted_by_two_processes(shared=False)
    assert sum(counts) > RATE * SECONDS + RATE + 10  # two buckets: about twice the shared figure
