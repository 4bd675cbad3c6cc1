"""Quotas on the hot path: a token bucket per quota for requests per second, and a count in flight.

A quota policy (docs/policies.md) limits a scope (global, a tenant, a model) to
`max_requests_per_second` (a token bucket whose burst is one second of the rate) and/or
`max_concurrent` requests in flight. The quotas a request must fit are the winners of
`meshcore.policies.applicable_quotas`; `enforcement: log` only records what would have been
refused.

Without `REDIS_URL` each router process enforces its own buckets (a limit per process).
With it, every process shares them through Redis without a round trip per request for
the rate: a process leases a slice of the bucket (`LEASE_S` of the rate, at least one
token) with one atomic script call and spends it locally; only when its lease is used up
does it ask again. `max_concurrent` is counted in Redis per request (an increment when it
starts, a decrement when it ends), since a concurrency lease would strand capacity in idle
processes. docs/routing.md gives the measured cost of both (benchmarks/quota_overhead.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as redis_asyncio

from meshcore.policies import applicable_quotas

logger = logging.getLogger(__name__)

# A lease is this much of the rate: small enough that processes share fairly, large enough
# that Redis sees one call per lease, not per request.
LEASE_S = 0.05
# A lease not spent within this long is dropped (its tokens are not returned).
LEASE_TTL_S = 0.5
# Counters in flight expire in Redis after this long without change (a router that died).
CONCURRENCY_TTL_S = 120


@dataclass(slots=True)
class QuotaRule:
    """One applicable quota: its policy, the bucket it counts in, and its limits."""

    policy: str
    key: str
    rate: float | None
    max_concurrent: int | None
    enforce: bool  # False: enforcement "log"


@dataclass(slots=True)
class Refused:
    policy: str
    detail: str
    retry_after_s: float
    enforced: bool


class QuotaBackend(Protocol):
    async def take(self, rule: QuotaRule, now: float) -> float: ...

    async def enter(self, rule: QuotaRule) -> bool: ...

    async def leave(self, rule: QuotaRule) -> None: ...


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class LocalQuotas:
    """Buckets and counters in this process (no Redis)."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._in_flight: dict[str, int] = {}

    async def take(self, rule: QuotaRule, now: float) -> float:
        """Take one token; 0 when taken, else the seconds until one is due."""
        return take_token(self._buckets, rule.key, rule.rate or 0.0, now)

    async def enter(self, rule: QuotaRule) -> bool:
        count = self._in_flight.get(rule.key, 0)
        if rule.max_concurrent is not None and count >= rule.max_concurrent:
            return False
        self._in_flight[rule.key] = count + 1
        return True

    async def leave(self, rule: QuotaRule) -> None:
        self._in_flight[rule.key] = max(0, self._in_flight.get(rule.key, 0) - 1)


def take_token(buckets: dict[str, _Bucket], key: str, rate: float, now: float) -> float:
    bucket = buckets.get(key)
    burst = max(1.0, rate)  # one second of the rate
    if bucket is None:
        bucket = buckets[key] = _Bucket(burst, now)
    bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * rate)
    bucket.stamp = now
    if bucket.tokens >= 1.0:
        bucket.tokens -= 1.0
        return 0.0
    return (1.0 - bucket.tokens) / rate


# KEYS[1]: the bucket. ARGV: rate, burst, now, wanted. Returns {granted, seconds until a token as a string}.
_LEASE_SCRIPT = """
local rate, burst, now, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens, stamp = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, stamp = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local granted = math.min(wanted, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(1000 * (burst / rate + 60)))
local wait = 0
if granted == 0 then wait = (1 - tokens) / rate end
return {granted, tostring(wait)}
"""

# KEYS[1]: the counter. ARGV: the limit, ttl. 1 when entered, 0 when full.
_ENTER_SCRIPT = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

_LEAVE_SCRIPT = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count > 0 then redis.call('DECR', KEYS[1]) end
return 0
"""


@dataclass(slots=True)
class _Lease:
    tokens: int = 0
    until: float = 0.0


@dataclass
class RedisQuotas:
    """Buckets and counters shared by every router process through Redis (see the module)."""

    url: str
    prefix: str = "infermesh:quota:"
    _clients: dict[Any, Any] = field(default_factory=dict)
    _leases: dict[str, _Lease] = field(default_factory=dict)

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = redis_asyncio.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
            client.lease = client.register_script(_LEASE_SCRIPT)
            client.enter = client.register_script(_ENTER_SCRIPT)
            client.leave = client.register_script(_LEAVE_SCRIPT)
            self._clients[loop] = client
        return client

    async def take(self, rule: QuotaRule, now: float) -> float:
        lease = self._leases.get(rule.key)
        if lease is not None and lease.tokens > 0 and lease.until > now:
            lease.tokens -= 1
            return 0.0
        rate = rule.rate or 0.0
        wanted = max(1, math.floor(rate * LEASE_S))
        granted, wait = await self._client().lease(
            keys=[self.prefix + "rate:" + rule.key], args=[rate, max(1.0, rate), time.time(), wanted]
        )
        granted = int(granted)
        if granted == 0:
            return float(wait)
        self._leases[rule.key] = _Lease(granted - 1, now + LEASE_TTL_S)
        return 0.0

    async def enter(self, rule: QuotaRule) -> bool:
        entered = await self._client().enter(
            keys=[self.prefix + "inflight:" + rule.key], args=[rule.max_concurrent, CONCURRENCY_TTL_S]
        )
        return bool(int(entered))

    async def leave(self, rule: QuotaRule) -> None:
        await self._client().leave(keys=[self.prefix + "inflight:" + rule.key], args=[])


class QuotaGate:
    """Admits a request against its quotas, or says which refused it and when to retry."""

    def __init__(self, backend: QuotaBackend) -> None:
        self.backend = backend
        self.refusals_logged = 0

    async def admit(self, rules: list[QuotaRule]) -> tuple[Refused | None, list[QuotaRule]]:
        """(the refusal, or None; the concurrency quotas entered, to `release` when the request ends)."""
        now = time.monotonic()
        entered: list[QuotaRule] = []
        for rule in rules:
            refusal = None
            if rule.rate is not None:
                wait = await self.backend.take(rule, now)
                if wait > 0:
                    refusal = Refused(
                        rule.policy,
                        f"over {rule.rate:g} requests per second (quota policy {rule.policy})",
                        wait,
                        rule.enforce,
                    )
            if refusal is None and rule.max_concurrent is not None:
                if await self.backend.enter(rule):
                    entered.append(rule)
                else:
                    refusal = Refused(
                        rule.policy,
                        f"{rule.max_concurrent} requests already in flight (quota policy {rule.policy})",
                        1.0,
                        rule.enforce,
                    )
            if refusal is not None:
                if refusal.enforced:
                    await self.release(entered)
                    return refusal, []
                self.refusals_logged += 1
                logger.info("quota %s would refuse a request (enforcement: log): %s", rule.policy, refusal.detail)
        return None, entered

    async def release(self, entered: list[QuotaRule]) -> None:
        for rule in entered:
            try:
                await self.backend.leave(rule)
            except Exception:
                logger.warning("could not release quota %s", rule.policy, exc_info=True)


def quota_rules(policies: list[Any], model: str, tenant: str | None) -> list[QuotaRule]:
    """The quotas a request for `model` from `tenant` must fit (one per scope, as policies.py says)."""
    rules = []
    for policy in applicable_quotas(policies, model, tenant):
        spec = policy.spec
        rules.append(
            QuotaRule(
                policy=policy.name,
                key=f"{policy.name}:{spec['scope']}:{spec.get('target', '')}",
                rate=spec.get("max_requests_per_second"),
                max_concurrent=spec.get("max_concurrent"),
                enforce=spec.get("enforcement", "block") == "block",
            )
        )
    return rules
