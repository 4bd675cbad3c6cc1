"""A pooled keep-alive HTTP/1.1 client to the upstream Tritons, one pool per event loop.

Lean by design, since it is half of what a proxied request costs: an asyncio protocol per
connection, httptools (the parser uvicorn uses) for the answer, and idle connections kept per
target and reused, so a request in steady state opens none and makes no objects it does not
need. It measured about a third less CPU per proxied request than aiohttp's client
(docs/benchmarks.md). The pool is per event loop because a connection belongs to the loop it
was made on (a test may run several loops in turn).

Failures come in two kinds, because the router treats them differently:
- `ConnectFailure`: the request got no answer at all (refused, reset, closed before a byte
  came back): another target may take it.
- `BrokenAnswer`: the target answered something that cannot be passed on (malformed, or cut
  off part way): it failed this request.
A deadline passed raises `TimeoutError`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

import httptools

# An idle connection older than this is closed rather than reused (Triton may have dropped it).
IDLE_S = 60.0
# Idle connections kept per target; more are closed when their answer is done.
MAX_IDLE_PER_TARGET = 256
# A streamed answer stops reading from its target while this much waits for the client.
STREAM_HIGH_WATER = 1 << 20

Header = tuple[bytes, bytes]


class UpstreamError(Exception):
    """Something went wrong between the proxy and a target."""


class ConnectFailure(UpstreamError):
    """No answer at all: the connection failed, or closed before a byte of the answer came."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused  # nothing listens on the target's port


class BrokenAnswer(UpstreamError):
    """The target's answer was malformed or broke off part way."""


class UpstreamResponse:
    """An answer's status and headers, with its body read whole (`read`) or streamed (`chunks`).

    `release()` must be called once done with it: the connection goes back to the pool when the
    answer was read to its end, and is closed otherwise."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_connection",
        "_deadline",
        "_done",
        "_error",
        "_streaming",
        "_waiter",
        "headers",
        "status",
    )

    def __init__(self, connection: _Connection, status: int, headers: list[Header], deadline: float) -> None:
        self.status = status
        self.headers = headers  # names lower-cased, in the order received
        self._connection = connection
        self._deadline = deadline
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._streaming = False

    @property
    def content_length(self) -> int | None:
        for name, value in self.headers:
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None
        return None

    async def read(self) -> bytes:
        """The whole body (within the request's deadline)."""
        while not self._done:
            await self._wait()
        if self._error is not None:
            raise self._error
        body = b"".join(self._chunks)
        self._chunks.clear()
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; the target is read only as fast as the chunks are taken."""
        self._streaming = True
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                self._connection.resume_if_below(self._buffered)
                yield chunk
            if self._done:
                if self._error is not None:
                    raise self._error
                return
            await self._wait()

    def release(self) -> None:
        self._connection.response_released(complete=self._done and self._error is None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout_at(self._deadline):
                await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ---- fed by the connection ----

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._streaming and self._buffered > STREAM_HIGH_WATER:
            self._connection.pause()
        self._wake()

    def _finish(self, error: BaseException | None = None) -> None:
        if not self._done:
            self._done = True
            self._error = error
            self._wake()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a target, carrying one request at a time."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.paused = False
        self.head_only = False  # answering a HEAD request: no body follows the headers
        self.deadline = 0.0
        self.answer: asyncio.Future[UpstreamResponse] | None = None
        self.response: UpstreamResponse | None = None
        self.reusable = False
        self._headers: list[Header] = []

    # ---- asyncio.Protocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._broken(BrokenAnswer(f"malformed answer: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        reason = f": {exc}" if exc else ""
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectFailure(f"the target closed the connection before answering{reason}"))
        elif self.response is not None:
            # An answer with neither a length nor chunks ends when its connection does.
            delimited = any(name in (b"content-length", b"transfer-encoding") for name, _ in self.response.headers)
            error = BrokenAnswer(f"the target closed the connection mid-answer{reason}") if delimited else None
            self.response._finish(error)

    # ---- httptools callbacks ----

    def on_message_begin(self) -> None:
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if self.answer is None or self.answer.done() or 100 <= status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the final one follows
        response = UpstreamResponse(self, status, self._headers, self.deadline)
        self.response = response
        self.answer.set_result(response)
        if self.head_only:
            # httptools would wait for the body a HEAD answer's content-length announces: end here, not reused.
            response._finish()
            self.reusable = False
            self.close()

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        self.reusable = self.parser.should_keep_alive()
        if self.response is not None:
            self.response._finish()

    # ---- used by the pool and the response ----

    def send(self, head: bytes, body: bytes | None, deadline: float, head_only: bool) -> asyncio.Future:
        self.answer = asyncio.get_running_loop().create_future()
        self.response = None
        self.reusable = False
        self.deadline = deadline
        self.head_only = head_only
        if body:
            self.transport.writelines((head, body))
        else:
            self.transport.write(head)
        return self.answer

    def pause(self) -> None:
        if not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume_if_below(self, buffered: int) -> None:
        if self.paused and buffered <= STREAM_HIGH_WATER // 2 and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def response_released(self, complete: bool) -> None:
        self.answer = None
        self.response = None
        if complete and self.reusable and not self.closed:
            self.pool.put_back(self)
        else:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.abort()  # an unfinished answer leaves nothing worth a graceful close

    def _broken(self, error: BrokenAnswer) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(error)
        elif self.response is not None:
            self.response._finish(error)
        self.close()


class UpstreamPool:
    """Idle keep-alive connections per target, for one event loop."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._targets: dict[str, tuple[tuple[str, str, int], bytes]] = {}
        self._tls: ssl.SSLContext | None = None
        self.opened = 0  # connections made, ever: a test sees reuse by it

    async def request(
        self,
        method: str,
        base_url: str,
        path: str,
        headers: Sequence[Header] = (),
        body: bytes | None = None,
        timeout_s: float = 30.0,
    ) -> UpstreamResponse:
        """Send one request to `base_url` + `path` and return its answer's status and headers.

        `headers` must not hold Host, Content-Length or Connection: the pool writes those."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        key, host_header = self._target(base_url)
        head = b"".join(
            (
                method.encode("latin-1"),
                b" ",
                path.encode("latin-1"),
                b" HTTP/1.1\r\nhost: ",
                host_header,
                b"\r\ncontent-length: %d\r\n" % len(body or b""),
                *(name + b": " + value + b"\r\n" for name, value in headers),
                b"\r\n",
            )
        )
        async with asyncio.timeout_at(deadline):
            connection = await self._acquire(key)
            answer = connection.send(head, body, deadline, head_only=method == "HEAD")
            try:
                return await answer
            except BaseException:
                connection.close()  # cancelled or failed mid-request: never reused
                raise

    async def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()

    # ---- used by connections ----

    def put_back(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= MAX_IDLE_PER_TARGET:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    # ---- inside ----

    def _target(self, base_url: str) -> tuple[tuple[str, str, int], bytes]:
        known = self._targets.get(base_url)
        if known is None:
            parts = urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConnectFailure(f"not an http(s) URL: {base_url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            known = self._targets[base_url] = ((parts.scheme, parts.hostname, port), parts.netloc.encode("idna"))
        return known

    async def _acquire(self, key: tuple[str, str, int]) -> _Connection:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to have been dropped
            if not connection.closed and now - connection.idle_since < IDLE_S:
                return connection
            connection.close()
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self, key), host, port, ssl=self._tls_context() if scheme == "https" else None
            )
        except ConnectionRefusedError as error:
            raise ConnectFailure(f"connection refused by {host}:{port}: {error}", refused=True) from None
        except (OSError, ssl.SSLError) as error:
            raise ConnectFailure(f"cannot connect to {host}:{port}: {error}") from None
        self._open.add(connection)
        self.opened += 1
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls


_pools: dict[asyncio.AbstractEventLoop, UpstreamPool] = {}


def upstream_pool() -> UpstreamPool:
    """This event loop's pool."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        for other in [known for known in _pools if known.is_closed()]:
            del _pools[other]
        pool = _pools[loop] = UpstreamPool()
    return pool


async def close_pools() -> None:
    """Close every connection of every pool (at shutdown)."""
    for pool in list(_pools.values()):
        await pool.close()
    _pools.clear()
