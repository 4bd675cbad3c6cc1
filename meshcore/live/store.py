"""The live state store: last values per node, GPU and runtime, with a short history.

Each node is one record of fields holding JSON (`gpu:<uuid>` metrics, `info:<uuid>`
inventory, `rt:<name>` runtime, `states:<name>` model states, plus `agent`, `seq`,
`received_at`, `interval`, `health`, `meta`). A report becomes one atomic `apply`:
the sequence check, the writes, and the previous values of what the caller watches, in
one round trip (a Lua script on Redis, a lock in process memory).

Redis when `REDIS_URL` is set, so every control-plane and router process sees the same
fleet; process memory otherwise (the embedded default).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"

ACCEPTED = "accepted"
STALE = "stale"
SNAPSHOT_REQUIRED = "snapshot_required"


@dataclass
class NodeWrite:
    """One accepted-or-not report, already turned into field writes."""

    node: str
    agent_id: str
    seq: int
    kind: str  # "snapshot" replaces the record; "delta" changes only the named fields
    now: float
    interval_s: float
    meta: str
    fields: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    watch: list[str] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)  # (series, JSON point)


@dataclass
class ApplyResult:
    verdict: str
    previous_health: str | None = None
    previous: dict[str, str | None] = field(default_factory=dict)  # watched fields before the write
    replaced_fields: list[str] = field(default_factory=list)  # a snapshot's predecessor's fields


class LiveStore(Protocol):
    def apply(self, write: NodeWrite) -> ApplyResult: ...

    async def apply_async(self, write: NodeWrite) -> ApplyResult: ...

    def read(self, names: Iterable[str] | None = None) -> dict[str, dict[str, str]]: ...

    def history(self, node: str, series: str, since: float) -> list[list[Any]]: ...

    def sweep(self, now: float, missed_intervals: int) -> list[str]: ...

    def try_lock(self, name: str, owner: str, ttl_s: float) -> bool: ...

    def publish_router_stats(self, source: str, stats: str, ttl_s: float) -> None: ...

    def router_stats(self) -> dict[str, str]: ...

    def clear(self) -> None: ...


class MemoryLiveStore:
    """Process memory: exact for one process, gone on restart (agents resend a snapshot)."""

    def __init__(self, history_points: int = 300) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, dict[str, str]] = {}
        self._history: dict[tuple[str, str], deque[str]] = {}
        self._router_stats: dict[str, tuple[str, float]] = {}
        self._history_points = history_points
        self._locks: dict[str, tuple[str, float]] = {}

    def apply(self, write: NodeWrite) -> ApplyResult:
        with self._lock:
            record = self._nodes.get(write.node, {})
            agent = record.get("agent")
            if write.kind == "delta" and agent != write.agent_id:
                return ApplyResult(SNAPSHOT_REQUIRED)
            if agent == write.agent_id and write.seq <= int(record.get("seq", "0")):
                return ApplyResult(STALE)
            result = ApplyResult(
                ACCEPTED,
                previous_health=record.get("health"),
                previous={name: record.get(name) for name in write.watch},
            )
            if write.kind == "snapshot":
                result.replaced_fields = list(record)
                record = {key: record[key] for key in ("health",) if key in record}
            for name in write.removed:
                record.pop(name, None)
            record.update(write.fields)
            record.update(
                agent=write.agent_id,
                seq=str(write.seq),
                received_at=repr(write.now),
                interval=repr(write.interval_s),
                health=HEALTHY,
                meta=write.meta,
            )
            self._nodes[write.node] = record
            for series, point in write.history:
                points = self._history.setdefault((write.node, series), deque(maxlen=self._history_points))
                points.append(point)
            return result

    async def apply_async(self, write: NodeWrite) -> ApplyResult:
        return self.apply(write)  # a few dictionary writes under a lock: cheaper than any hop

    def read(self, names: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
        with self._lock:
            wanted = self._nodes if names is None else names
            return {name: dict(self._nodes[name]) for name in wanted if name in self._nodes}

    def history(self, node: str, series: str, since: float) -> list[list[Any]]:
        with self._lock:
            points = list(self._history.get((node, series), ()))
        return [point for point in map(json.loads, points) if point[0] >= since]

    def sweep(self, now: float, missed_intervals: int) -> list[str]:
        turned = []
        with self._lock:
            for name, record in self._nodes.items():
                silent_for = now - float(record.get("received_at", "0"))
                if record.get("health") != UNHEALTHY and silent_for > missed_intervals * float(record["interval"]):
                    record["health"] = UNHEALTHY
                    turned.append(name)
        return turned

    def try_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        with self._lock:
            holder = self._locks.get(name)
            now = time.monotonic()
            if holder is None or holder[0] == owner or holder[1] < now:
                self._locks[name] = (owner, now + ttl_s)
                return True
            return False

    def publish_router_stats(self, source: str, stats: str, ttl_s: float) -> None:
        """One router process's per-second aggregates (JSON text), kept `ttl_s`."""
        with self._lock:
            self._router_stats[source] = (stats, time.monotonic() + ttl_s)

    def router_stats(self) -> dict[str, str]:
        """The aggregates of every router process that published lately, by process."""
        now = time.monotonic()
        with self._lock:
            return {source: stats for source, (stats, until) in self._router_stats.items() if until > now}

    def clear(self) -> None:
        with self._lock:
            self._nodes.clear()
            self._history.clear()
            self._locks.clear()
            self._router_stats.clear()


# KEYS: node record, node index, history key prefix for this node, the index of when each healthy node is next due.
# ARGV: agent, seq, kind, now, interval, meta, ttl, history points, node name, then counted lists:
# fields to set (name, value)…, fields to remove…, fields to watch…, history (series, point)….
_APPLY_SCRIPT = """
local record, index, history_prefix, due = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local agent, seq, kind, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local stored = redis.call('HMGET', record, 'agent', 'seq', 'health')
if kind == 'delta' and stored[1] ~= agent then return {'snapshot_required'} end
if stored[1] == agent and seq <= tonumber(stored[2] or '0') then return {'stale'} end
local i = 10
local n_set = tonumber(ARGV[i]); local set_from = i + 1; i = i + 1 + 2 * n_set
local n_remove = tonumber(ARGV[i]); local remove_from = i + 1; i = i + 1 + n_remove
local n_watch = tonumber(ARGV[i]); local watch_from = i + 1; i = i + 1 + n_watch
local n_history = tonumber(ARGV[i]); local history_from = i + 1
local previous = {}
if n_watch > 0 then previous = redis.call('HMGET', record, unpack(ARGV, watch_from, watch_from + n_watch - 1)) end
local replaced = {}
if kind == 'snapshot' then
  replaced = redis.call('HKEYS', record)
  redis.call('DEL', record)
elseif n_remove > 0 then
  redis.call('HDEL', record, unpack(ARGV, remove_from, remove_from + n_remove - 1))
end
if n_set > 0 then redis.call('HSET', record, unpack(ARGV, set_from, set_from + 2 * n_set - 1)) end
redis.call('HSET', record, 'agent', agent, 'seq', ARGV[2], 'received_at', now, 'interval', ARGV[5],
  'health', 'healthy', 'meta', ARGV[6])
redis.call('EXPIRE', record, ARGV[7])
redis.call('ZADD', index, now, ARGV[9])
redis.call('ZADD', due, tonumber(now) + tonumber(ARGV[5]), ARGV[9])
for j = 0, n_history - 1 do
  local key = history_prefix .. ARGV[history_from + 2 * j]
  redis.call('RPUSH', key, ARGV[history_from + 2 * j + 1])
  redis.call('LTRIM', key, -tonumber(ARGV[8]), -1)
  redis.call('EXPIRE', key, ARGV[7])
end
local watched = {}
for j = 1, n_watch do watched[j] = previous[j] or false end
return {'accepted', stored[3] or false, watched, replaced}
"""

# KEYS: node index, node record prefix, due index. ARGV: now, missed intervals, record TTL.
# Only nodes already an interval late are looked at (a range of the due index), not the whole fleet.
_SWEEP_SCRIPT = """
local now = tonumber(ARGV[1])
local late = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
local turned = {}
for _, name in ipairs(late) do
  local record = KEYS[2] .. name
  local values = redis.call('HMGET', record, 'received_at', 'interval', 'health')
  if not values[1] or values[3] == 'unhealthy' then
    redis.call('ZREM', KEYS[3], name)
  elseif now - tonumber(values[1]) > tonumber(ARGV[2]) * tonumber(values[2]) then
    redis.call('HSET', record, 'health', 'unhealthy')
    redis.call('ZREM', KEYS[3], name)
    turned[#turned + 1] = name
  end
end
-- Names whose records expired (no report for the TTL) leave the index.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
return turned
"""


class RedisLiveStore:
    """Redis: shared by every process of the mesh; records expire a day after a node's last report."""

    def __init__(
        self, url: str, prefix: str = "infermesh:live:", history_points: int = 300, ttl_s: int = 86400
    ) -> None:
        import redis

        # Short timeouts: ingest answers 503 rather than hanging when Redis is away.
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30)
        self._prefix = prefix
        self._history_points = history_points
        self._ttl_s = ttl_s
        self._url = url
        self._apply = self._redis.register_script(_APPLY_SCRIPT)
        self._sweep = self._redis.register_script(_SWEEP_SCRIPT)
        self._loop_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWriter] = (
            weakref.WeakKeyDictionary()
        )

    def _record_key(self, node: str) -> str:
        return f"{self._prefix}node:{node}"

    def _apply_call(self, write: NodeWrite) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the apply script for this write."""
        args: list[Any] = [
            write.agent_id,
            write.seq,
            write.kind,
            repr(write.now),
            repr(write.interval_s),
            write.meta,
            self._ttl_s,
            self._history_points,
            write.node,
            len(write.fields),
        ]
        for name, value in write.fields.items():
            args += [name, value]
        args += [len(write.removed), *write.removed, len(write.watch), *write.watch, len(write.history)]
        for series, point in write.history:
            args += [series, point]
        keys = [
            self._record_key(write.node),
            f"{self._prefix}nodes",
            f"{self._prefix}hist:{write.node}:",
            f"{self._prefix}due",
        ]
        return keys, args

    @staticmethod
    def _result_of(write: NodeWrite, reply: list[Any]) -> ApplyResult:
        verdict = reply[0].decode()
        if verdict != ACCEPTED:
            return ApplyResult(verdict)
        previous_health = reply[1].decode() if reply[1] else None
        watched = [value.decode() if value else None for value in reply[2]]
        return ApplyResult(
            ACCEPTED,
            previous_health=previous_health,
            previous=dict(zip(write.watch, watched, strict=True)),
            replaced_fields=[name.decode() for name in reply[3]],
        )

    def apply(self, write: NodeWrite) -> ApplyResult:
        keys, args = self._apply_call(write)
        return self._result_of(write, self._apply(keys=keys, args=args))

    async def apply_async(self, write: NodeWrite) -> ApplyResult:
        """The same write from an event loop, without blocking it: batched with the loop's other writes."""
        loop = asyncio.get_running_loop()
        writer = self._loop_writers.get(loop)
        if writer is None:
            writer = self._loop_writers[loop] = _LoopWriter(self._url, self._apply.sha)
        keys, args = self._apply_call(write)
        return self._result_of(write, await writer.evalsha(keys, args))

    def read(self, names: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
        if names is None:
            names = [name.decode() for name in self._redis.zrange(f"{self._prefix}nodes", 0, -1)]
        names = list(names)
        pipeline = self._redis.pipeline(transaction=False)
        for name in names:
            pipeline.hgetall(self._record_key(name))
        records = {}
        for name, raw in zip(names, pipeline.execute(), strict=True):
            if raw:
                records[name] = {key.decode(): value.decode() for key, value in raw.items()}
        return records

    def history(self, node: str, series: str, since: float) -> list[list[Any]]:
        points = self._redis.lrange(f"{self._prefix}hist:{node}:{series}", 0, -1)
        return [point for point in map(json.loads, points) if point[0] >= since]

    def sweep(self, now: float, missed_intervals: int) -> list[str]:
        keys = [f"{self._prefix}nodes", f"{self._prefix}node:", f"{self._prefix}due"]
        turned = self._sweep(keys=keys, args=[repr(now), missed_intervals, self._ttl_s])
        return [name.decode() for name in turned]

    def try_lock(self, name: str, owner: str, ttl_s: float) -> bool:
        key = f"{self._prefix}lock:{name}"
        ttl_ms = int(ttl_s * 1000)
        if self._redis.set(key, owner, nx=True, px=ttl_ms):
            return True
        # Renew only a lock this owner already holds (compare and extend, atomically).
        return bool(self._redis.eval(_RENEW_LOCK, 1, key, owner, ttl_ms))

    def publish_router_stats(self, source: str, stats: str, ttl_s: float) -> None:
        self._redis.set(f"{self._prefix}router:{source}", stats, px=int(ttl_s * 1000))

    def router_stats(self) -> dict[str, str]:
        keys = list(self._redis.scan_iter(match=f"{self._prefix}router:*", count=1000))
        values = self._redis.mget(keys) if keys else []
        start = len(f"{self._prefix}router:")
        return {key.decode()[start:]: value.decode() for key, value in zip(keys, values, strict=True) if value}

    def clear(self) -> None:
        keys = list(self._redis.scan_iter(match=f"{self._prefix}*", count=1000))
        if keys:
            self._redis.delete(*keys)


class _LoopWriter:
    """One event loop's apply calls, sent as pipelines: what queues while one is in flight goes in the next.

    Under load a round trip carries many reports, and the loop never waits on Redis: each
    caller awaits its own reply.
    """

    MAX_BATCH = 256

    def __init__(self, url: str, sha: str) -> None:
        import redis.asyncio

        self._redis = redis.asyncio.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._sha = sha
        self._pending: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._flushing = False

    async def evalsha(self, keys: list[str], args: list[Any]) -> Any:
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((keys, args, reply))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        return await reply

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.MAX_BATCH], self._pending[self.MAX_BATCH :]
                try:
                    replies = await self._execute(batch)
                except Exception as error:  # Redis away: every caller of this batch answers 503
                    replies = [error] * len(batch)
                for (_, _, reply), value in zip(batch, replies, strict=True):
                    if reply.done():
                        continue
                    if isinstance(value, Exception):
                        reply.set_exception(value)
                    else:
                        reply.set_result(value)
        finally:
            self._flushing = False

    async def _execute(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> list[Any]:
        from redis.exceptions import NoScriptError

        replies = await self._send([(keys, args) for keys, args, _ in batch])
        missing = [at for at, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            # Redis restarted or was flushed: load the script and resend what did not run (nothing of it applied).
            await self._redis.script_load(_APPLY_SCRIPT)
            resent = await self._send([batch[at][:2] for at in missing])
            for at, reply in zip(missing, resent, strict=True):
                replies[at] = reply
        return replies

    async def _send(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        pipeline = self._redis.pipeline(transaction=False)
        for keys, args in calls:
            pipeline.evalsha(self._sha, len(keys), *keys, *args)
        return await pipeline.execute(raise_on_error=False)


_RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_store: LiveStore | None = None
_store_lock = threading.Lock()


def live_store() -> LiveStore:
    """This process's store, made from the settings on first use."""
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                from django.conf import settings

                points = settings.MESH_TELEMETRY_HISTORY_POINTS
                if settings.REDIS_URL:
                    _store = RedisLiveStore(
                        settings.REDIS_URL, prefix=settings.MESH_LIVE_STATE_PREFIX, history_points=points
                    )
                else:
                    _store = MemoryLiveStore(history_points=points)
    return _store


def use_store(store: LiveStore | None) -> None:
    """Replace this process's store (tests; a process that switches backends)."""
    global _store
    _store = store
