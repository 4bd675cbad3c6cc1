"""The load side of the telemetry ingest benchmark: simulated agents and a WebSocket subscriber.

`fleet_main` and `subscriber_main` run in child processes of `benchmarks.telemetry_ingest`,
so their CPU is not the control plane's. Nothing here imports Django: a spawned child imports
only this module.

The agents speak HTTP/1.1 over raw asyncio streams with keep-alive connections (a Python HTTP
client would cost more CPU than the server it measures on 2 cores). Every report body is built
before the clock starts: per node a snapshot and a few deltas whose 8 GPUs' metrics differ, so
sending one only substitutes `seq`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import time
import uuid
import zlib
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

GPUS_PER_NODE = 8
# Metric sets per node, rotated by seq: every report of a node carries other values than the last.
VARIANTS = 5
REQUEST_TIMEOUT_S = 30.0
TELEMETRY_PATH = "/api/v1/telemetry/"
SEQ_MARK = '"@@seq@@"'
GIB = 1024**3
H100_MEMORY = 85520809984


# ---- report bodies ---------------------------------------------------------------------------


def gpu_info(node: str, index: int) -> dict[str, Any]:
    """What NVML says about an H100 SXM (inventory: sent in snapshots only)."""
    return {
        "name": "NVIDIA H100 80GB HBM3",
        "architecture": "hopper",
        "serial": f"{zlib.crc32(f'{node}/{index}'.encode()):013d}",
        "vbios_version": "96.00.74.00.01",
        "pci": {
            "bus_id": f"00000000:{0x19 + 0x10 * index:02X}:00.0",
            "device_id": "0x233010DE",
            "subsystem_id": "0x16C110DE",
        },
        "memory_total_bytes": H100_MEMORY,
        "power_limit_w": 700.0,
        "compute_capability": "9.0",
        "mig_mode": {"current": "disabled", "pending": "disabled"},
    }


def gpu_metrics(rng: random.Random) -> dict[str, Any]:
    """One sample of a busy H100's metrics, as an agent collects it every second."""
    utilization = rng.randint(20, 100)
    used = rng.randint(8, 78) * GIB + rng.randint(0, GIB)
    return {
        "memory_used_bytes": used,
        "memory_free_bytes": H100_MEMORY - used,
        "utilization_gpu_pct": utilization,
        "utilization_memory_pct": utilization * 2 // 5,
        "encoder_utilization_pct": 0,
        "decoder_utilization_pct": 0,
        "temperature_gpu_c": rng.randint(35, 75),
        "temperature_memory_c": rng.randint(35, 80),
        "power_usage_w": round(rng.uniform(90, 690), 1),
        "clocks_mhz": {"graphics": 1980, "memory": 2619, "sm": 1980},
        "performance_state": 0,
        "throttle_reasons": [] if utilization < 95 else ["sw_power_cap"],
        "ecc_errors": {
            "corrected_volatile": 0,
            "uncorrected_volatile": 0,
            "corrected_aggregate": 0,
            "uncorrected_aggregate": 0,
        },
        "processes": [{"pid": 4242, "type": "compute", "used_memory_bytes": used - GIB // 2}],
    }


def _split(report: dict[str, Any]) -> tuple[bytes, bytes]:
    """The body as the bytes before and after the seq value."""
    text = json.dumps({**report, "seq": "@@seq@@"}, separators=(",", ":"))
    before, after = text.split(SEQ_MARK)
    return before.encode(), after.encode()


@dataclass
class NodeReports:
    """One simulated agent: its token, agent id, prebuilt bodies and next seq."""

    name: str
    token: str
    snapshot: tuple[bytes, bytes]
    deltas: list[tuple[bytes, bytes]]
    auth: bytes
    seq: int = 0

    @classmethod
    def build(cls, name: str, token: str, seed: int) -> NodeReports:
        rng = random.Random(seed)
        agent = {"id": uuid.uuid4().hex, "version": "0.1.0", "hostname": f"{name}.bench"}
        nvml = {"status": "ok", "driver_version": "550.54.15", "cuda_version": "12.4", "nvml_version": "12.550.54.15"}
        uuids = [f"GPU-{uuid.UUID(int=rng.getrandbits(128))}" for _ in range(GPUS_PER_NODE)]
        common = {"node": name, "agent": agent, "interval_s": 1.0, "sent_at": time.time(), "nvml": nvml}
        snapshot = {
            **common,
            "kind": "snapshot",
            "gpus": [
                {"uuid": uuids[i], "index": i, "info": gpu_info(name, i), "metrics": gpu_metrics(rng), "errors": {}}
                for i in range(GPUS_PER_NODE)
            ],
            "runtimes": [],
        }
        deltas = [
            {
                **common,
                "kind": "delta",
                "gpus": [
                    {"uuid": uuids[i], "index": i, "metrics": gpu_metrics(rng), "errors": {}}
                    for i in range(GPUS_PER_NODE)
                ],
            }
            for _ in range(VARIANTS)
        ]
        return cls(
            name=name,
            token=token,
            snapshot=_split(snapshot),
            deltas=[_split(delta) for delta in deltas],
            auth=f"Bearer {token}".encode(),
        )

    def next_request(self, host: bytes) -> tuple[int, bytes]:
        """(seq, the whole HTTP request) of this agent's next report: a snapshot first, then deltas."""
        self.seq += 1
        before, after = self.snapshot if self.seq == 1 else self.deltas[self.seq % VARIANTS]
        body = b"%s%d%s" % (before, self.seq, after)
        head = (
            b"POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (TELEMETRY_PATH.encode(), host, self.auth, len(body))
        )
        return self.seq, head + body


# ---- a minimal keep-alive HTTP/1.1 client ----------------------------------------------------


class HttpError(Exception):
    pass


class HttpConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send one request and read its answer: (status, body). Raises on a broken connection."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                self.writer.write(data)
                return await self._response()
        except BaseException:
            self.close()
            raise

    async def _response(self) -> tuple[int, bytes]:
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 "):
            raise HttpError(f"not an HTTP/1.1 answer: {head[:40]!r}")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
            body = await self.reader.readexactly(length)
        elif b"\r\ntransfer-encoding: chunked" in lower:
            body = await self._chunked()
        else:
            raise HttpError("an answer without Content-Length or chunked encoding")
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, body

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        chunks = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(chunks)
            chunks.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# ---- the simulated fleet ------------------------------------------------------------------------


@dataclass
class FleetPlan:
    host: str
    port: int
    connections: int
    interval_s: float = 1.0


@dataclass
class Sent:
    """One delta report of a measured run: when it was due, sent and answered, and whether it was accepted."""

    node: str
    seq: int
    due: float
    sent: float
    done: float
    accepted: bool


@dataclass
class RunResult:
    mode: str
    nodes: int
    connections: int
    window: tuple[float, float]  # (start, end) of the measurement, time.time()
    reports: list[Sent] = field(default_factory=list)  # the deltas due (paced) or sent (closed) in the window
    errors: dict[str, int] = field(default_factory=dict)  # since the previous run, snapshots included
    first_errors: list[str] = field(default_factory=list)
    skipped: int = 0  # paced, in the window: reports not sent because the node still waited for an answer
    queued: int = 0  # reports due in the window that were queued or sent (the answered ones are in `reports`)
    cpu_s: float = 0.0  # this process, during the window


class Fleet:
    """Simulated agents that keep reporting once per interval; the parent adds nodes and asks for runs.

    Messages from the parent: ("add", [(name, token), ...]), ("run", mode, warmup_s, duration_s), ("stop",).
    Answers: ("added", (snapshot start, seconds)), ("measuring", t), ("measured", t), ("done", RunResult).
    Between runs and during a paced run every node reports once per interval, spread evenly over it;
    a closed-loop run stops that and sends each node's next report as soon as its last is answered.
    Node i always uses connection i % C, so a node's reports arrive in order.
    """

    def __init__(self, plan: FleetPlan, pipe: Connection) -> None:
        self.plan = plan
        self.pipe = pipe
        self.host = f"{plan.host}:{plan.port}".encode()
        self.agents: list[NodeReports] = []
        self.active = 0  # agents whose snapshot was answered: the paced schedule covers these
        self.waiting: list[bool] = []  # a node's report is queued or in flight
        self.connections = [HttpConnection(plan.host, plan.port) for _ in range(plan.connections)]
        self.queues: list[asyncio.Queue[tuple[int, float]]] = [asyncio.Queue() for _ in self.connections]
        self.paused = False  # the paced schedule sends nothing (a closed-loop run has the connections)
        self.run: RunResult | None = None  # the run being measured, if any
        self.errors: dict[str, int] = {}
        self.first_errors: list[str] = []

    # ---- sending -------------------------------------------------------------------------------

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.first_errors) < 5:
            self.first_errors.append(f"{kind}: {detail}"[:300])

    async def send(self, index: int, due: float) -> None:
        agent = self.agents[index]
        connection = self.connections[index % len(self.connections)]
        seq, request = agent.next_request(self.host)
        sent = time.time()
        try:
            status, body = await connection.request(request)
        except (OSError, EOFError, HttpError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self.error("connection", f"{agent.name} seq {seq}: {type(exc).__name__} {exc}")
            accepted = False
        else:
            accepted = status == 200 and b'"accepted"' in body
            if not accepted:
                kind = f"HTTP {status}" if status != 200 else json.loads(body).get("status", "unknown")
                self.error(kind, f"{agent.name} seq {seq}: {body[:200]!r}")
        run = self.run
        if run is not None and seq > 1 and run.window[0] <= due < run.window[1]:
            run.reports.append(Sent(agent.name, seq, due, sent, time.time(), accepted))
        self.waiting[index] = False

    async def worker(self, number: int) -> None:
        queue = self.queues[number]
        while True:
            index, due = await queue.get()
            await self.send(index, due)
            queue.task_done()

    def enqueue(self, index: int, due: float) -> bool:
        """Queue the node's next report, unless the last one is still unanswered (as an agent would)."""
        if self.waiting[index]:
            return False
        self.waiting[index] = True
        self.queues[index % len(self.queues)].put_nowait((index, due))
        run = self.run
        if run is not None and run.window[0] <= due < run.window[1]:
            run.queued += 1
        return True

    async def paced(self) -> None:
        """Forever: each active node once per interval, at its own offset within it."""
        interval = self.plan.interval_s
        tick_start = time.time()
        while True:
            count = self.active
            for index in range(count):
                due = tick_start + index * interval / count
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.paused:
                    continue
                if not self.enqueue(index, due):
                    run = self.run
                    if run is not None and run.window[0] <= due < run.window[1]:
                        run.skipped += 1
            tick_start += interval
            await asyncio.sleep(max(0.0, tick_start - time.time()))

    async def drain(self) -> None:
        await asyncio.gather(*(queue.join() for queue in self.queues))

    # ---- what the parent asks for --------------------------------------------------------------

    async def add(self, nodes: list[tuple[str, str]]) -> None:
        """New agents: build their reports, send their snapshots, then include them in the schedule."""
        first = len(self.agents)
        for offset, (name, token) in enumerate(nodes):
            self.agents.append(NodeReports.build(name, token, seed=first + offset))
            self.waiting.append(False)
        started = time.time()
        for index in range(first, len(self.agents)):
            self.enqueue(index, started)
        await self.drain()
        self.active = len(self.agents)
        self.pipe.send(("added", (started, time.time() - started)))

    async def measure(self, mode: str, warmup_s: float, duration_s: float) -> None:
        now = time.time()
        window = (now + warmup_s, now + warmup_s + duration_s)
        run = RunResult(mode, self.active, min(len(self.connections), self.active), window)
        self.run = run

        async def mark() -> None:
            await asyncio.sleep(max(0.0, window[0] - time.time()))
            cpu = _cpu_seconds()
            self.pipe.send(("measuring", time.time()))
            await asyncio.sleep(max(0.0, window[1] - time.time()))
            run.cpu_s = _cpu_seconds() - cpu
            self.pipe.send(("measured", time.time()))

        marker = asyncio.create_task(mark())
        if mode == "closed":
            self.paused = True
            await self.drain()
            await asyncio.gather(*(self.closed(run, number) for number in range(run.connections)))
            self.paused = False
        await marker
        # Reports due in the window may still be on their way: give them a few seconds.
        deadline = time.time() + 5.0
        while len(run.reports) < run.queued and time.time() < deadline:
            await asyncio.sleep(0.05)
        self.run = None
        # Errors since the last run: its snapshots and the reports between runs count too.
        run.errors, run.first_errors = self.errors, self.first_errors
        self.errors, self.first_errors = {}, []
        self.pipe.send(("done", run))

    async def closed(self, run: RunResult, number: int) -> None:
        """One connection: its nodes' reports in turn, each as soon as the last one is answered."""
        end = run.window[1]
        mine = range(number, self.active, len(self.connections))
        while True:
            for index in mine:
                now = time.time()
                if now >= end:
                    return
                self.waiting[index] = True
                run.queued += run.window[0] <= now
                await self.send(index, now)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        loop.add_reader(self.pipe.fileno(), lambda: commands.put_nowait(self.pipe.recv()))
        tasks = [asyncio.create_task(self.worker(number)) for number in range(len(self.connections))]
        tasks.append(asyncio.create_task(self.paced()))
        while True:
            command = await commands.get()
            if command[0] == "add":
                await self.add(command[1])
            elif command[0] == "run":
                await self.measure(*command[1:])
            else:
                break
        loop.remove_reader(self.pipe.fileno())
        for task in tasks:
            task.cancel()
        for connection in self.connections:
            connection.close()
        self.pipe.send(("stopped", {"errors": self.errors, "first_errors": self.first_errors}))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fleet_main(plan: FleetPlan, pipe: Connection) -> None:
    """Child process: the simulated fleet, driven by the parent through `pipe`."""
    asyncio.run(Fleet(plan, pipe).serve())
    pipe.close()


# ---- the WebSocket subscriber -----------------------------------------------------------------


@dataclass
class SubscriberPlan:
    url: str  # ws://host:port/ws/events/?telemetry=1
    origin: str
    api_token: str


@dataclass
class Delivery:
    received: float  # time.time() when the frame was read
    node: str
    seq: int | None  # None while the payload has no seq
    time: float  # the control plane's receive time of the report


@dataclass
class SubscriberResult:
    deliveries: list[Delivery] = field(default_factory=list)
    other_frames: int = 0
    error: str = ""
    cpu_s: float = 0.0
    listened_s: float = 0.0


async def _subscribe(plan: SubscriberPlan, ready: Connection, stop: Event) -> SubscriberResult:
    from websockets.asyncio.client import connect
    from websockets.datastructures import Headers
    from websockets.typing import Origin

    result = SubscriberResult()
    headers = Headers(Authorization=f"Bearer {plan.api_token}")
    try:
        async with connect(
            plan.url,
            origin=Origin(plan.origin),
            additional_headers=headers,
            compression=None,
            max_size=None,
            max_queue=4096,
            ping_interval=None,
            proxy=None,
            open_timeout=60,
        ) as websocket:
            ready.send("ready")

            async def stopper() -> None:
                while not stop.is_set():
                    await asyncio.sleep(0.05)
                await websocket.close()

            watcher = asyncio.create_task(stopper())
            cpu = _cpu_seconds()
            began = time.monotonic()
            with contextlib.suppress(Exception):
                async for frame in websocket:
                    received = time.time()
                    payload = json.loads(frame)
                    if payload.get("kind") == "telemetry":
                        result.deliveries.append(
                            Delivery(received, payload["node"], payload.get("seq"), payload["time"])
                        )
                    elif payload.get("kind") == "error":
                        result.error = str(payload)
                    else:
                        result.other_frames += 1
            result.cpu_s = _cpu_seconds() - cpu
            result.listened_s = time.monotonic() - began
            watcher.cancel()
    except Exception as exc:
        result.error = result.error or f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            ready.send("failed")
    return result


def subscriber_main(plan: SubscriberPlan, ready: Connection, stop: Event) -> None:
    """Child process: subscribe with telemetry=1 until `stop`, then send the SubscriberResult."""
    result = asyncio.run(_subscribe(plan, ready, stop))
    ready.send(result)
    ready.close()
