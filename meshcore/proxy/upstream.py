"""One pooled keep-alive HTTP client per event loop, to every upstream Triton.

aiohttp, chosen by measurement (docs/proxy.md): connections to each target are kept and
reused, so a request in steady state opens none. The pool is per event loop because aiohttp
sessions belong to the loop they were made on (a test may run several loops in turn).
"""

from __future__ import annotations

import asyncio

import aiohttp

# Failures before any response: the request did not reach Triton, or Triton dropped it unanswered.
CONNECT_FAILURES = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)

_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


def upstream_session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        for other in [known for known in _sessions if known.is_closed()]:
            del _sessions[other]
        connector = aiohttp.TCPConnector(
            limit=0,  # no cap across targets: in-flight limits are policy (quotas), not pool size
            limit_per_host=0,
            keepalive_timeout=60,
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        session = _sessions[loop] = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # bodies pass through byte for byte
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
    return session


async def close_sessions() -> None:
    for session in list(_sessions.values()):
        await session.close()
    _sessions.clear()
