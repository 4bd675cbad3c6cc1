"""The proxy's upstream client against real sockets: servers here answer as scripted, byte for byte,
including the ways a target goes wrong (refusing, closing, cutting off, stalling, malformed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from devtools.ports import free_port
from meshcore.proxy.upstream import BrokenAnswer, ConnectFailure, UpstreamPool

Answer = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


def ok(body: bytes = b"hello", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class ScriptedServer:
    """Reads each request whole, then lets `answer` write what it likes; it returns whether to keep going."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length")), 0
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if not await self.answer(request, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def answering(data: bytes, keep_going: bool = True) -> Answer:
    async def answer(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        await writer.drain()
        return keep_going

    return answer


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool()
    yield pool
    await pool.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answer], Awaitable[ScriptedServer]]]:
    servers: list[ScriptedServer] = []

    async def start(answer: Answer) -> ScriptedServer:
        server = await ScriptedServer(answer).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


async def fetch(pool: UpstreamPool, url: str, method: str = "POST", body: bytes | None = b"{}", **kw) -> tuple:
    response = await pool.request(method, url, "/v2/models/echo/infer", [(b"x-request-id", b"abc")], body, **kw)
    try:
        return response.status, response.headers, await response.read()
    finally:
        response.release()


async def test_it_sends_the_request_as_given_and_reuses_one_connection(pool, serve):
    server = await serve(answering(ok(b'{"outputs": []}', b"content-type: application/json\r\n")))
    for _ in range(5):
        status, headers, body = await fetch(pool, server.url)

    assert (status, body) == (200, b'{"outputs": []}')
    assert (b"content-type", b"application/json") in headers
    assert server.connections == 1 and pool.opened == 1
    port = server.url.rsplit(":", 1)[1]
    assert server.requests[0] == (
        b"POST /v2/models/echo/infer HTTP/1.1\r\nhost: 127.0.0.1:%s\r\ncontent-length: 2\r\n"
        b"x-request-id: abc\r\n\r\n{}" % port.encode()
    )


async def test_a_chunked_answer_streams_in_pieces(pool, serve):
    async def answer(request, reader, writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"first ", b"second ", b"third"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")
        return True

    server = await serve(answer)
    response = await pool.request("GET", server.url, "/stream")
    pieces = [chunk async for chunk in response.chunks()]
    response.release()

    assert b"".join(pieces) == b"first second third" and len(pieces) >= 2
    assert response.content_length is None
    await fetch(pool, server.url, "GET", None)
    assert server.connections == 1  # a chunked answer read to its end leaves the connection reusable


async def test_an_answer_with_neither_length_nor_chunks_ends_with_its_connection(pool, serve):
    server = await serve(answering(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it", keep_going=False))

    assert (await fetch(pool, server.url))[2] == b"all of it"
    await fetch(pool, server.url)
    assert server.connections == 2


async def test_a_head_answer_ends_after_its_headers(pool, serve):
    server = await serve(answering(b"HTTP/1.1 200 OK\r\ncontent-length: 120\r\n\r\n"))

    status, headers, body = await asyncio.wait_for(fetch(pool, server.url, "HEAD", None), 2)

    assert (status, body) == (200, b"") and (b"content-length", b"120") in headers


async def test_an_interim_answer_is_skipped_for_the_final_one(pool, serve):
    server = await serve(answering(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + ok(b"final")))

    status, headers, body = await fetch(pool, server.url)

    assert (status, body) == (200, b"final") and not [name for name, _ in headers if name == b"link"]


async def test_a_connection_close_answer_is_not_reused(pool, serve):
    server = await serve(answering(ok(extra=b"connection: close\r\n"), keep_going=False))
    for _ in range(3):
        assert (await fetch(pool, server.url))[2] == b"hello"

    assert server.connections == 3


async def test_a_refused_connection_says_so():
    pool = UpstreamPool()
    with pytest.raises(ConnectFailure, match="refused") as failure:
        await fetch(pool, f"http://127.0.0.1:{free_port()}")

    assert failure.value.refused


async def test_a_target_closing_without_an_answer_is_a_connect_failure(pool, serve):
    async def close_at_once(request, reader, writer) -> bool:
        return False

    server = await serve(close_at_once)
    with pytest.raises(ConnectFailure, match="before answering") as failure:
        await fetch(pool, server.url)

    assert not failure.value.refused


async def test_an_answer_cut_off_part_way_is_broken(pool, serve):
    server = await serve(answering(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part", keep_going=False))

    with pytest.raises(BrokenAnswer, match="mid-answer"):
        await fetch(pool, server.url)
    await asyncio.sleep(0.05)
    assert not pool._idle.get(("http", "127.0.0.1", int(server.url.rsplit(":", 1)[1])))


async def test_a_malformed_answer_is_broken(pool, serve):
    server = await serve(answering(b"SMTP ready\r\n\r\n"))

    with pytest.raises(BrokenAnswer, match="malformed"):
        await fetch(pool, server.url)


async def test_a_stalled_target_times_out_and_its_connection_is_dropped(pool, serve):
    stall = asyncio.Event()

    async def answer(request, reader, writer) -> bool:
        if not stall.is_set():
            stall.set()
            await asyncio.sleep(5)
        writer.write(ok())
        return True

    server = await serve(answer)
    with pytest.raises(TimeoutError):
        await fetch(pool, server.url, timeout_s=0.2)
    assert (await fetch(pool, server.url))[2] == b"hello"

    assert server.connections == 2  # the late answer's connection could hold it: never reused


async def test_a_body_that_stalls_times_out(pool, serve):
    async def answer(request, reader, writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await asyncio.sleep(5)
        return False

    server = await serve(answer)
    with pytest.raises(TimeoutError):
        await fetch(pool, server.url, timeout_s=0.3)


async def test_a_connection_the_target_dropped_while_idle_is_not_reused(pool, serve):
    server = await serve(answering(ok()))
    await fetch(pool, server.url)
    for writer in server.writers:
        writer.close()
    await asyncio.sleep(0.05)

    assert (await fetch(pool, server.url))[2] == b"hello"
    assert server.connections == 2


async def test_a_cancelled_request_closes_its_connection(pool, serve):
    async def slow(request, reader, writer) -> bool:
        await asyncio.sleep(0.3)
        writer.write(ok())
        return True

    server = await serve(slow)
    task = asyncio.ensure_future(fetch(pool, server.url))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await fetch(pool, server.url))[2] == b"hello"

    assert server.connections == 2


async def test_a_streamed_answer_is_read_no_faster_than_it_is_taken(pool, serve):
    written = asyncio.Event()
    backlog: list[int] = []

    async def huge(request, reader, writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        piece = b"x" * 65536
        for _ in range(256):  # 16 MiB
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            if writer.transport.get_write_buffer_size() > 4 << 20:
                backlog.append(writer.transport.get_write_buffer_size())
                written.set()
                await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    server = await serve(huge)
    response = await pool.request("GET", server.url, "/big")
    chunks = response.chunks()
    first = await chunks.__anext__()
    await asyncio.wait_for(written.wait(), 5)  # the proxy stopped reading: the target's writes back up
    total = len(first) + sum([len(chunk) async for chunk in chunks])
    response.release()

    assert backlog and total == 256 * 65536
