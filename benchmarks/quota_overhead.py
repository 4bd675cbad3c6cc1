"""What a quota costs a proxied request, with and without Redis: the leases against a Redis call per request.

    .venv/bin/python -m benchmarks.quota_overhead           # full
    .venv/bin/python -m benchmarks.quota_overhead --quick   # CI

One event loop admits requests one after another through `QuotaGate` (and releases them), as
the proxy does, for each way of keeping a quota:

- none: no quota applies (the baseline);
- local: a token bucket in this process (no `REDIS_URL`);
- redis, leases of 100: the shared bucket in Redis, leased 100 tokens at a time (what the router
  does for a quota of 2,000 requests per second: `LEASE_S`, 50 ms, of the rate);
- redis, leases of 10: the same for a quota of 200 requests per second;
- redis, per request: the same script called for every request (a lease of one token);
- redis, max_concurrent: a count in flight in Redis, one call to enter and one to leave.

The rate is 10 million requests per second, so that no request is refused and each row times
admission alone; the lease sizes are set through `LEASE_S`. Redis is the real one at `MESH_BENCH_REDIS_URL`
(redis://127.0.0.1:6379/15 by default); its keys are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
import django

django.setup()

import redis  # noqa: E402

from benchmarks.common import percentile, say, yardstick_ms  # noqa: E402
from meshcore.routing import quotas  # noqa: E402
from meshcore.routing.quotas import LocalQuotas, QuotaGate, QuotaRule, RedisQuotas  # noqa: E402

REDIS_URL = os.environ.get("MESH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
RATE = 10_000_000.0


async def admit_times(gate: QuotaGate, rules: list[QuotaRule], requests: int) -> list[float]:
    times = []
    clock = time.perf_counter
    for _ in range(requests):
        began = clock()
        refused, entered = await gate.admit(rules)
        assert refused is None, refused  # the rate is far above what one loop can send
        if entered:
            await gate.release(entered)
        times.append(clock() - began)
    return times


def rows(prefix: str) -> list[tuple[str, QuotaGate, list[QuotaRule], float]]:
    """(name, gate, rules, LEASE_S giving the row's lease size) per way of keeping the quota."""
    rate_rule = [QuotaRule("bench-rate", "rate", RATE, None, True)]
    concurrent_rule = [QuotaRule("bench-concurrent", "concurrent", None, 1_000_000, True)]

    def shared(row: str) -> QuotaGate:
        return QuotaGate(RedisQuotas(REDIS_URL, prefix=f"infermesh:bench:{prefix}:{row}:"))

    return [
        ("none", QuotaGate(LocalQuotas()), [], quotas.LEASE_S),
        ("local", QuotaGate(LocalQuotas()), rate_rule, quotas.LEASE_S),
        ("redis, leases of 100", shared("100"), rate_rule, 100 / RATE),
        ("redis, leases of 10", shared("10"), rate_rule, 10 / RATE),
        ("redis, per request", shared("1"), rate_rule, 0.0),
        ("redis, max_concurrent", shared("concurrent"), concurrent_rule, quotas.LEASE_S),
    ]


async def run(requests: int) -> None:
    prefix = uuid.uuid4().hex[:8]
    say(f"{'quota kept':<22} {'p50 us':>8} {'p99 us':>8} {'mean us':>8} {'vs local':>8}")
    baseline = None
    lease_s = quotas.LEASE_S
    try:
        for name, gate, rules, lease in rows(prefix):
            quotas.LEASE_S = lease
            await admit_times(gate, rules, requests // 10)  # warm up: connections, scripts loaded
            times = await admit_times(gate, rules, requests)
            p50, p99 = percentile(times, 50) * 1e6, percentile(times, 99) * 1e6
            mean = sum(times) / len(times) * 1e6
            if name == "local":
                baseline = mean
            ratio = f"{mean / baseline:>7.1f}x" if baseline else f"{'-':>8}"
            say(f"{name:<22} {p50:>8.1f} {p99:>8.1f} {mean:>8.1f} {ratio}")
    finally:
        quotas.LEASE_S = lease_s
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"infermesh:bench:{prefix}*"):
            client.delete(key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (CI)")
    args = parser.parse_args(argv)
    requests = 2_000 if args.quick else 20_000
    say(f"quota admission per request, {requests} requests per row, one at a time; yardstick {yardstick_ms():.1f} ms")
    asyncio.run(run(requests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
