"""One router process's admissions against a quota, run in a child process by test_quotas_shared."""

import asyncio
import os
import time


def hammer(shared: bool, key: str, rate: float, seconds: float, redis_url: str, start, results) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()  # a spawned child starts bare: the quota module reads the policy rules' models
    from meshcore.routing.quotas import LocalQuotas, QuotaGate, QuotaRule, RedisQuotas

    async def run() -> int:
        backend = RedisQuotas(redis_url, prefix=f"infermesh-test:{key}:") if shared else LocalQuotas()
        gate = QuotaGate(backend)
        rule = QuotaRule("rate", key, rate, None, True)
        admitted = 0
        start.wait(timeout=60)  # both processes begin together: one window of `seconds` for both
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            refusal, _ = await gate.admit([rule])
            if refusal is None:
                admitted += 1
            else:
                await asyncio.sleep(min(refusal.retry_after_s, 0.01))
        return admitted

    try:
        results.put(asyncio.run(run()))
    except Exception as error:  # the parent reports it rather than waiting for a count
        results.put(repr(error))
