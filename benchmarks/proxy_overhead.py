"""Proxy overhead benchmark: what `/proxy` costs over calling Triton directly, next to nginx.

In one run, against the same upstreams, three ways to send a KServe v2 inference request:

- direct: to the upstream itself;
- nginx: through Debian's nginx, `proxy_pass` to an `upstream` block with keep-alive
  connections (`keepalive`, HTTP/1.1, `Connection ""`), one worker process (as `serve` is one
  process), its own generated config in the run's folder on a free port, run in the
  foreground as a child of this process (installed with apt-get when missing; no system service);
- /proxy: through a real `manage.py serve` (embedded defaults: SQLite, in-process live state and
  channel layer, one Raft replica; no local agent), once under uvicorn and once under daphne
  (`MESH_ASGI_SERVER`), since the server under `serve` is chosen by this benchmark.

Two upstreams, each a row per path:

- tiny: a KServe v2 HTTP server written for this benchmark (raw asyncio on uvloop, httptools for
  parsing) that answers every inference with a fixed small JSON: fast enough not to be the
  bottleneck, so its rows show the proxies' own cost;
- triton: the real CPU Triton (`devtools.triton_server.LocalTriton`) and its `echo` model.

How /proxy learns its targets, the real way: the node and its two runtimes are registered through
the REST API (`POST /api/v1/nodes/`, `POST /api/v1/runtimes/`, an admin API token), and a thread in
this process posts telemetry reports with the node token to `POST /api/v1/telemetry/` as the agent
would (docs/telemetry.md: a snapshot naming both runtimes with their model READY, then heartbeats
every 2 s), so the routing table finds them routable. No agent or Redis is involved.

Load comes from wrk (installed with apt-get when missing), a C load generator: a Python one on
2 cores would take CPU from the proxy. A Lua script sets the POST body and the Authorization header
(the same request on every path) and prints wrk's latency percentiles. Per row: requests per second
with 32 connections and the CPU time per request of the process on the path (the upstream itself
for direct, nginx's master and worker, or serve), then p50/p99 latency with 1 connection (closed
loop: one request at a time). Added latency is the row's percentile minus the direct row's for the
same upstream. The full run measures every row in 3 rounds that alternate the paths and keeps each
row's best figures (the least disturbed by other work on the machine); direct and nginx are
measured while the first server's serve runs, idle between its own rows.

    python -m benchmarks.proxy_overhead            # the full run: 3 rounds of 5 s windows (about 6 minutes)
    python -m benchmarks.proxy_overhead --quick    # one round of 2 s windows (about 80 s; for CI)

Goals (issue 19): /proxy at least 0.2x nginx's throughput in the same run, and at most 1 ms added
p50 latency at 1 connection. They are printed as met / MISSED for every server and upstream. The
run exits 1 only when something failed (a check request not answered 200, an answer of 400 or more
under load, which wrk counts, a socket error or timeout, a process that would not start), never on
a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from benchmarks.common import conclude, print_table, say
from devtools.ports import free_port
from devtools.serve import ServeProcess, clean_env, manage
from devtools.triton_server import EXAMPLE_MODELS, LocalTriton

GOAL_THROUGHPUT_RATIO = 0.2  # /proxy's req/s at least this fraction of nginx's
GOAL_ADDED_P50_MS = 1.0
ADMIN_PASSWORD = "a-benchmark-admin-password"  # a throwaway admin in a temporary folder
NODE = "bench-node"
REPORT_INTERVAL_S = 2.0
SERVERS = ("uvicorn", "daphne")
# The upstreams: key -> (runtime name on the node, model name).
UPSTREAMS = {"tiny": ("tiny", "tiny"), "triton": ("triton", "echo")}
INFER_BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1.0, 2.0, 3.0, 4.0]}]},
    separators=(",", ":"),
)


# ---- the tiny upstream ---------------------------------------------------------------------------


def _answer(status: int, body: bytes) -> bytes:
    reason = {200: b"OK", 404: b"Not Found"}[status]
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    return head % (status, reason, len(body)) + body


_MODEL_PATH = re.compile(rb"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/infer|/ready|/config)?$")


def _tiny_answer(method: bytes, path: bytes, cache: dict[tuple[bytes, bytes], bytes]) -> bytes:
    key = (method, path)
    answer = cache.get(key)
    if answer is not None:
        return answer
    path_only = path.split(b"?", 1)[0]
    match = _MODEL_PATH.match(path_only)
    if path_only in (b"/v2/health/live", b"/v2/health/ready"):
        answer = _answer(200, b"")
    elif path_only in (b"/v2", b"/v2/"):
        answer = _answer(200, json.dumps({"name": "tiny", "version": "1", "extensions": []}).encode())
    elif match:
        model, version, tail = (part.decode() if part else "" for part in match.groups())
        version = version or "1"
        if tail == "/infer" and method == b"POST":
            output = {"name": "OUTPUT0", "datatype": "FP32", "shape": [4], "data": [1.0, 2.0, 3.0, 4.0]}
            body = {"model_name": model, "model_version": version, "outputs": [output]}
        elif tail == "/ready":
            body = None
        elif tail == "/config":
            body = {"name": model, "backend": "python", "max_batch_size": 0}
        else:
            tensor = {"name": "INPUT0", "datatype": "FP32", "shape": [-1]}
            body = {"name": model, "versions": ["1"], "platform": "python", "inputs": [tensor], "outputs": [tensor]}
        answer = _answer(200, json.dumps(body, separators=(",", ":")).encode() if body is not None else b"")
    else:
        answer = _answer(404, b'{"error":"not found"}')
    if len(cache) < 1000:
        cache[key] = answer
    return answer


def serve_tiny_upstream(port: int) -> None:
    """Run the tiny KServe v2 server on 127.0.0.1:`port` until SIGTERM (in its own process)."""
    import httptools

    cache: dict[tuple[bytes, bytes], bytes] = {}

    class Connection(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_message_complete(self) -> None:
            path, self.url = self.url, b""
            self.transport.write(_tiny_answer(self.parser.get_method(), path, cache))
            if not self.parser.should_keep_alive():
                self.transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        server = await loop.create_server(Connection, "127.0.0.1", port, backlog=1024)
        async with server:
            await stop.wait()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


class TinyUpstream:
    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.proxy_overhead", "--tiny-upstream", str(self.port)],
                cwd=Path(__file__).resolve().parents[1],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_answering(f"{self.url}/v2/health/ready", self.process, "the tiny upstream", self.log)

    def stop(self) -> None:
        _stop(self.process)


# ---- tools: nginx and wrk ------------------------------------------------------------------------


def ensure_tool(command: str, package: str) -> str:
    """The path of `command`, installing Debian's `package` with apt-get first when it is missing."""
    found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found:
        return found
    say(f"{command} is missing: apt-get update && apt-get install -y {package}")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update"], ["apt-get", "install", "-y", package]):
        done = subprocess.run([*sudo, *step], env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(step)} failed (exit {done.returncode}): {done.stderr[-1500:]}")
    found = shutil.which(command) or shutil.which(command, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        raise RuntimeError(f"installed {package} but {command} is still not on PATH")
    return found


NGINX_CONF = """\
{user}worker_processes {workers};
daemon off;
master_process on;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
{upstreams}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
{locations}
    }}
}}
"""


class Nginx:
    """nginx in the foreground with a generated config: /{name}/... proxied to each upstream, keep-alive."""

    def __init__(self, binary: str, root: Path, upstreams: dict[str, str], workers: int = 1) -> None:
        self.binary = binary
        self.workers = workers
        self.root = root
        self.port = free_port()
        self.upstreams = upstreams
        self.process: subprocess.Popen | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        blocks, locations = [], []
        for name, url in self.upstreams.items():
            address = url.removeprefix("http://")
            blocks.append(f"    upstream {name} {{ server {address}; keepalive 64; }}")
            locations.append(
                f"        location /{name}/ {{ proxy_pass http://{name}/; proxy_http_version 1.1; "
                'proxy_set_header Connection ""; proxy_buffering on; }'
            )
        # As root, nginx's workers would switch to `nobody`, who cannot write the temporary folders here.
        user = f"user {pwd.getpwuid(0).pw_name};\n" if os.geteuid() == 0 else ""
        config = self.root / "nginx.conf"
        config.write_text(
            NGINX_CONF.format(
                user=user,
                workers=self.workers,
                root=self.root,
                port=self.port,
                upstreams="\n".join(blocks),
                locations="\n".join(locations),
            )
        )
        log = self.root / "stdout.log"
        with log.open("a") as out:
            self.process = subprocess.Popen(
                [self.binary, "-p", str(self.root), "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        first = next(iter(self.upstreams))
        _wait_answering(f"{self.url(first)}/v2/health/live", self.process, "nginx", self.root / "error.log")

    def stop(self) -> None:
        _stop(self.process, signal.SIGQUIT)  # nginx's graceful stop


WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, '
    .. '"timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass
class WrkResult:
    requests: int
    duration_us: int
    connect: int
    read: int
    write: int
    status: int  # answers with a status of 400 or more (wrk counts those)
    timeout: int
    p50_us: int
    p90_us: int
    p99_us: int
    mean_us: float
    max_us: int

    @property
    def per_s(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    @property
    def errors(self) -> int:
        return self.connect + self.read + self.write + self.status + self.timeout


class Wrk:
    def __init__(self, binary: str, script: Path) -> None:
        self.binary = binary
        self.script = script

    def run(self, url: str, connections: int, seconds: float) -> WrkResult:
        command = [
            self.binary,
            "-t1",  # one thread drives 32 connections easily, and leaves the other core to what is measured
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(self.script),
            url,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        line = next((line for line in done.stdout.splitlines() if line.startswith("WRK-JSON ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(
                f"wrk failed on {url} (exit {done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}"
            )
        return WrkResult(**json.loads(line.removeprefix("WRK-JSON ")))


# ---- the control plane: serve, registration, telemetry --------------------------------------------


def prepare(root: Path) -> tuple[dict[str, str], str]:
    """A migrated data folder with an admin; serve's environment, and an admin API token."""
    data = root / "data"
    data.mkdir()
    env = clean_env(
        data,
        SECRET_KEY=secrets.token_urlsafe(50),
        MESH_LOCAL_AGENT="off",
        MESH_LOG_LEVEL="warning",
        MESH_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    for command in (("migrate", "--noinput"), ("ensure_admin",), ("apitoken", "issue", "admin", "benchmark")):
        done = manage(*command, env=env, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(command)} failed: {done.stderr[-2000:]}")
    return env, done.stdout.strip().splitlines()[-1]


def _post_retrying(client: httpx.Client, path: str, body: dict, timeout: float = 30) -> httpx.Response:
    """POST, again while the single Raft replica is still electing itself (503)."""
    deadline = time.monotonic() + timeout
    answer = client.post(path, json=body)
    while answer.status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
        answer = client.post(path, json=body)
    return answer


def register(url: str, api_token: str, runtimes: dict[str, str]) -> str:
    """Register the node and its runtimes (name -> URL) through the REST API; the node's token."""
    with httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {api_token}"}, timeout=30) as api:
        answer = _post_retrying(api, "/nodes/", {"name": NODE, "address": "127.0.0.1", "roles": ["gpu"]})
        if answer.status_code != 201:
            raise RuntimeError(f"registering node {NODE}: HTTP {answer.status_code} {answer.text[:300]}")
        token = answer.json()["token"]
        for name, runtime_url in runtimes.items():
            answer = _post_retrying(api, "/runtimes/", {"node": NODE, "name": name, "http_url": runtime_url})
            if answer.status_code != 201:
                raise RuntimeError(f"registering runtime {name}: HTTP {answer.status_code} {answer.text[:300]}")
    return token


class Reporter:
    """Reports as the node's agent would (docs/telemetry.md): a snapshot, then heartbeats, every 2 s."""

    def __init__(self, url: str, node_token: str, runtimes: dict[str, tuple[str, str]]) -> None:
        self.url = url
        self.node_token = node_token
        self.runtimes = [
            {
                "name": name,
                "url": runtime_url,
                "live": True,
                "ready": True,
                "models": [{"name": model, "version": "1", "state": "READY", "reason": ""}],
            }
            for name, (runtime_url, model) in runtimes.items()
        ]
        self.agent = {"id": uuid.uuid4().hex, "version": "benchmark", "hostname": "benchmark"}
        self.seq = 0
        self.snapshot_due = True
        self.problem: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reporter", daemon=True)

    def report(self, client: httpx.Client) -> None:
        self.seq += 1
        body = {
            "node": NODE,
            "agent": self.agent,
            "seq": self.seq,
            "kind": "snapshot" if self.snapshot_due else "delta",
            "interval_s": REPORT_INTERVAL_S,
            "sent_at": time.time(),
            "nvml": {"status": "missing"},
            "gpus": [],
            "runtimes": self.runtimes if self.snapshot_due else [],
        }
        answer = client.post("/api/v1/telemetry/", json=body)
        if answer.status_code >= 300:
            raise RuntimeError(f"telemetry report refused: HTTP {answer.status_code} {answer.text[:300]}")
        self.snapshot_due = bool(answer.json().get("snapshot_required"))

    def start(self) -> None:
        with httpx.Client(base_url=self.url, headers=self._headers(), timeout=10) as client:
            self.report(client)
        self._thread.start()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.node_token}"}

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self._headers(), timeout=10) as client:
            while not self._stop.wait(REPORT_INTERVAL_S):
                try:
                    self.report(client)
                except Exception as error:
                    self.problem = f"{error.__class__.__name__}: {error}"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def wait_routable(url: str, api_token: str, models: dict[str, str], timeout: float = 30) -> None:
    """Until /proxy answers an inference for each model (name -> expected target) from that target."""
    deadline = time.monotonic() + timeout
    last = ""
    with httpx.Client(headers={"Authorization": f"Bearer {api_token}"}, timeout=10) as client:
        for model, target in models.items():
            while True:
                answer = client.post(f"{url}/proxy/v2/models/{model}/infer", content=INFER_BODY)
                if answer.status_code == 200 and answer.headers.get("x-infermesh-target") == target:
                    break
                last = f"HTTP {answer.status_code} from {answer.headers.get('x-infermesh-target')}: {answer.text[:200]}"
                if time.monotonic() > deadline:
                    raise RuntimeError(f"/proxy did not route {model} to {target} within {timeout:.0f} s: {last}")
                time.sleep(0.2)


# ---- measuring -----------------------------------------------------------------------------------


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU time (user + system, all threads) of a process and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo += [child for child, parent in parents.items() if parent == pid]
    return total


@dataclass
class Sample:
    throughput: WrkResult  # at `connections`
    latency: WrkResult  # at 1 connection
    cpu_us_per_request: float  # of the process on the path (the upstream for direct), at `connections`
    load_average: float  # the machine's, 1 minute, after the sample


@dataclass
class Row:
    """One path to one upstream; with several rounds, its best figures (the least disturbed by other work)."""

    upstream: str
    path: str  # direct, nginx, /proxy (uvicorn), /proxy (daphne)
    samples: list[Sample]

    @property
    def throughput(self) -> WrkResult:
        return max(self.samples, key=lambda sample: sample.throughput.per_s).throughput

    @property
    def latency(self) -> WrkResult:
        return min(self.samples, key=lambda sample: sample.latency.p50_us).latency

    @property
    def cpu_us_per_request(self) -> float:
        return min(sample.cpu_us_per_request for sample in self.samples)

    @property
    def errors(self) -> int:
        return sum(sample.throughput.errors + sample.latency.errors for sample in self.samples)


@dataclass
class Settings:
    connections: int
    warmup_s: float
    duration_s: float
    rounds: int
    api_token: str = ""


def measure(wrk: Wrk, url: str, label: str, pid: int, settings: Settings, warmup: bool) -> Sample:
    """Warm up, then requests per second at `connections` (and the CPU process `pid` spent), then latency at 1."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {settings.api_token}"}
    check = httpx.post(url, content=INFER_BODY, headers=headers, timeout=30)
    if check.status_code != 200:
        raise RuntimeError(f"{label}: HTTP {check.status_code} {check.text[:300]}")
    if warmup and settings.warmup_s > 0:
        wrk.run(url, settings.connections, settings.warmup_s)
    cpu_before = tree_cpu_seconds(pid)
    throughput = wrk.run(url, settings.connections, settings.duration_s)
    cpu = tree_cpu_seconds(pid) - cpu_before
    latency = wrk.run(url, 1, settings.duration_s)
    sample = Sample(throughput, latency, cpu * 1e6 / max(1, throughput.requests), os.getloadavg()[0])
    errors = throughput.errors + latency.errors
    say(
        f"  {label:<24} {throughput.per_s:>9,.0f} req/s at {settings.connections} "
        f"({sample.cpu_us_per_request:.0f} us CPU each); "
        f"p50 {latency.p50_us / 1000:.3f} ms, p99 {latency.p99_us / 1000:.3f} ms at 1; "
        f"load average {sample.load_average:.1f}" + (f"; {errors} ERRORS" if errors else "")
    )
    return sample


class ServePhase:
    """One `manage.py serve` under `server`, its node registered (once per data folder) and reported as routable."""

    def __init__(self, server: str, env: dict[str, str], root: Path, api_token: str, upstream_urls: dict[str, str]):
        self.server = server
        self.api_token = api_token
        self.upstream_urls = upstream_urls
        self.serve = ServeProcess({**env, "MESH_ASGI_SERVER": server}, root / f"serve-{server}.log", name=server)
        self.reporter: Reporter | None = None

    def start(self, node_token: str | None) -> str:
        """Start serve, register the node when `node_token` is None, report, wait until routable; the node token."""
        self.serve.start()
        boot = self.serve.wait_http(60)
        say(f"serve ({self.server}) up on {self.serve.url} in {boot:.1f} s")
        runtimes = {UPSTREAMS[key][0]: (url, UPSTREAMS[key][1]) for key, url in self.upstream_urls.items()}
        if node_token is None:
            node_token = register(self.serve.url, self.api_token, {name: url for name, (url, _) in runtimes.items()})
        self.reporter = Reporter(self.serve.url, node_token, runtimes)
        self.reporter.start()
        wait_routable(self.serve.url, self.api_token, {model: f"{NODE}/{name}" for name, model in UPSTREAMS.values()})
        return node_token

    @property
    def pid(self) -> int:
        assert self.serve.process is not None
        return self.serve.process.pid

    def url(self, model: str) -> str:
        return f"{self.serve.url}/proxy/v2/models/{model}/infer"

    def stop(self) -> None:
        problem = self.reporter.problem if self.reporter is not None else None
        if self.reporter is not None:
            self.reporter.stop()
        self.serve.stop()
        if problem:
            raise RuntimeError(f"the telemetry reporter failed during the run: {problem}")


# ---- the table -----------------------------------------------------------------------------------


def ms(us: float) -> str:
    return f"{us / 1000:.3f}"


def table(rows: list[Row], connections: int) -> list[tuple[str, ...]]:
    header = (
        "upstream",
        "path",
        f"req/s @{connections}",
        "x nginx",
        "CPU us/req",
        "p50 ms @1",
        "p99 ms @1",
        "added p50 ms",
        "added p99 ms",
        "errors",
    )
    lines = [header]
    for row in rows:
        direct = next(r for r in rows if r.upstream == row.upstream and r.path == "direct")
        nginx = next(r for r in rows if r.upstream == row.upstream and r.path == "nginx")
        added = row.path != "direct"
        ratio = f"{row.throughput.per_s / nginx.throughput.per_s:.2f}" if added and nginx.throughput.per_s else "-"
        lines.append(
            (
                row.upstream,
                row.path,
                f"{row.throughput.per_s:,.0f}",
                ratio,
                f"{row.cpu_us_per_request:.0f}",
                ms(row.latency.p50_us),
                ms(row.latency.p99_us),
                f"{(row.latency.p50_us - direct.latency.p50_us) / 1000:+.3f}" if added else "-",
                f"{(row.latency.p99_us - direct.latency.p99_us) / 1000:+.3f}" if added else "-",
                str(row.errors),
            )
        )
    return lines


def busy_note(rows: list[Row]) -> str | None:
    """A warning when other work loaded the machine during the run (the figures are then lower and noisier)."""
    highest = max(sample.load_average for row in rows for sample in row.samples)
    cpus = os.cpu_count() or 1
    if highest <= cpus:
        return None
    return (
        f"note: other work loaded the machine during the run (1-minute load average up to {highest:.1f} on "
        f"{cpus} CPUs): every figure is lower and noisier than on an idle machine."
    )


def goals(rows: list[Row]) -> list[str]:
    """One line per /proxy row and goal: met or MISSED."""
    lines = []
    for row in rows:
        if not row.path.startswith("/proxy"):
            continue
        direct = next(r for r in rows if r.upstream == row.upstream and r.path == "direct")
        nginx = next(r for r in rows if r.upstream == row.upstream and r.path == "nginx")
        ratio = row.throughput.per_s / nginx.throughput.per_s if nginx.throughput.per_s else 0.0
        added = (row.latency.p50_us - direct.latency.p50_us) / 1000
        lines.append(
            f"{row.path} to {row.upstream}: throughput {ratio:.2f}x nginx (goal >= {GOAL_THROUGHPUT_RATIO}x): "
            f"{verdict(ratio >= GOAL_THROUGHPUT_RATIO)}; added p50 {added:+.3f} ms at 1 connection "
            f"(goal <= {GOAL_ADDED_P50_MS:g} ms): {verdict(added <= GOAL_ADDED_P50_MS)}"
        )
    return lines


def verdict(ok: bool) -> str:
    return "goal met" if ok else "goal MISSED"


def faster_server(rows: list[Row]) -> list[str]:
    lines = []
    for upstream in UPSTREAMS:
        by_server = {r.path: r for r in rows if r.upstream == upstream and r.path.startswith("/proxy")}
        if len(by_server) < 2:
            continue
        best = max(by_server.values(), key=lambda r: r.throughput.per_s)
        quickest = min(by_server.values(), key=lambda r: r.latency.p50_us)
        others = [r for r in by_server.values() if r is not best]
        ratio = best.throughput.per_s / max(1e-9, max(r.throughput.per_s for r in others))
        lines.append(
            f"{upstream}: {best.path} has the most throughput ({ratio:.2f}x the next); "
            f"{quickest.path} the lowest p50 at 1 connection ({ms(quickest.latency.p50_us)} ms)"
        )
    return lines


def failures_of(rows: list[Row]) -> list[str]:
    failures = []
    for row in rows:
        for sample in row.samples:
            for what, result in (("throughput", sample.throughput), ("latency", sample.latency)):
                if result.errors:
                    failures.append(
                        f"{row.upstream} via {row.path} ({what}): {result.status} answers of 400 or more, "
                        f"{result.connect + result.read + result.write} socket errors, {result.timeout} timeouts"
                    )
                if result.requests == 0:
                    failures.append(f"{row.upstream} via {row.path} ({what}): no request answered")
    return failures


# ---- the run -------------------------------------------------------------------------------------


def _wait_answering(url: str, process: subprocess.Popen, name: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{name} exited with {process.returncode}: {tail}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f} s")


def _stop(process: subprocess.Popen | None, how: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(how)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Proxy overhead: direct, nginx and /proxy against the same upstreams.")
    parser.add_argument("--quick", action="store_true", help="one round of 2 s windows (about 80 s; for CI)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of every measurement, best kept (default 3)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of load before each row (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="connections for the throughput figure")
    parser.add_argument("--servers", default=",".join(SERVERS), help="ASGI servers under serve (default both)")
    parser.add_argument(
        "--nginx-workers", type=int, default=1, help="nginx worker processes (default 1: serve is one process)"
    )
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the data folder and logs")
    parser.add_argument("--tiny-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny_upstream:
        serve_tiny_upstream(args.tiny_upstream)
        return 0
    servers = [s for s in args.servers.split(",") if s]
    if not servers or not set(servers) <= set(SERVERS):
        parser.error(f"--servers: one or more of {', '.join(SERVERS)}")
    settings = Settings(
        connections=args.connections,
        warmup_s=args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0),
        duration_s=args.duration or (2.0 if args.quick else 5.0),
        rounds=max(1, args.rounds or (1 if args.quick else 3)),
    )

    root = Path(tempfile.mkdtemp(prefix="infermesh-proxy-bench-"))
    say(f"data folder and logs in {root}; {os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}")
    started = time.monotonic()
    rows: dict[tuple[str, str], Row] = {}
    failures = ["the benchmark did not finish"]
    tiny = triton = nginx = None
    try:
        nginx_binary = ensure_tool("nginx", "nginx")
        wrk_binary = ensure_tool("wrk", "wrk")
        nginx_version = subprocess.run([nginx_binary, "-v"], capture_output=True, text=True).stderr.strip()
        say(f"load generator: wrk ({wrk_binary}), 1 thread; {nginx_version}")

        tiny = TinyUpstream(root / "tiny-upstream.log")
        tiny.start()
        # Triton starts while the data folder is migrated (both take seconds).
        triton = LocalTriton(EXAMPLE_MODELS, load_models=["echo"], log_path=root / "triton.log")
        triton_started = threading.Thread(target=triton.start, name="triton-start")
        triton_started.start()
        env, api_token = prepare(root)
        triton_started.join()
        if not triton.running:
            raise RuntimeError(f"Triton did not start: {triton.log_tail()}")
        upstream_urls = {"tiny": tiny.url, "triton": triton.http_url}
        nginx = Nginx(nginx_binary, root / "nginx", upstream_urls, workers=args.nginx_workers)
        nginx.start()
        script = root / "infer.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps(INFER_BODY), token=api_token))
        wrk = Wrk(wrk_binary, script)
        settings.api_token = api_token
        say(f"upstreams, nginx and a migrated data folder ready in {time.monotonic() - started:.1f} s")

        upstream_pids = {"tiny": tiny.process.pid, "triton": triton._process.pid}

        def record(upstream: str, path: str, url: str, pid: int, first: bool) -> None:
            sample = measure(wrk, url, f"{upstream} {path}", pid, settings, warmup=first)
            rows.setdefault((upstream, path), Row(upstream, path, [])).samples.append(sample)

        # Rounds alternate the paths, so that each compares with the others under the same load. Direct
        # and nginx are measured while the first server runs (an idle serve costs a few ms of CPU a second).
        node_token = None
        for phase, server in enumerate(servers):
            serve = ServePhase(server, env, root, api_token, upstream_urls)
            try:
                node_token = serve.start(node_token)
                for round_ in range(settings.rounds):
                    if settings.rounds > 1:
                        say(f"round {round_ + 1} of {settings.rounds}")
                    for key, (_, model) in UPSTREAMS.items():
                        infer = f"/v2/models/{model}/infer"
                        if phase == 0:
                            record(key, "direct", upstream_urls[key] + infer, upstream_pids[key], round_ == 0)
                            record(key, "nginx", nginx.url(key) + infer, nginx.process.pid, round_ == 0)
                        record(key, f"/proxy ({server})", serve.url(model), serve.pid, round_ == 0)
            finally:
                serve.stop()
        ordered = sorted(
            rows.values(), key=lambda r: (list(UPSTREAMS).index(r.upstream), r.path != "direct", r.path != "nginx")
        )
        failures = failures_of(ordered)

        say("")
        say(
            f"Proxy overhead ({'quick' if args.quick else 'full'} run): {os.cpu_count()} CPUs shared by wrk, the "
            f"upstream and the proxy; {settings.duration_s:g} s per figure after {settings.warmup_s:g} s of warm-up"
            + (f", best of {settings.rounds} rounds. " if settings.rounds > 1 else ". ")
            + f"req/s with {settings.connections} connections, latency with 1 (wrk, closed loop); added = this row "
            f"minus direct to the same upstream; x nginx = req/s over nginx's ({args.nginx_workers} worker(s), "
            "keep-alive upstream); CPU us/req = CPU time of the process on the path (the upstream itself for "
            f"direct, with its children) per request at {settings.connections} connections."
        )
        say("upstreams: tiny = a fixed-answer KServe v2 server (uvloop + httptools); triton = CPU Triton, echo model")
        say(
            "serve: embedded defaults, --no-access-log and MESH_LOG_LEVEL=warning (as devtools.serve starts it; a line "
            "logged per request costs extra), no local agent; the node reported by this process's telemetry thread"
        )
        lines = table(ordered, settings.connections)
        print_table(lines[0], lines[1:], markdown=False)
        if args.markdown:
            say("")
            print_table(lines[0], lines[1:], markdown=True)
        say("")
        for line in goals(ordered) + faster_server(ordered):
            say(line)
        if note := busy_note(ordered):
            say(note)
    except Exception as error:
        traceback.print_exc()
        failures = [f"{error.__class__.__name__}: {error}"]
    finally:
        for part in (nginx, triton, tiny):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()
        if args.json:
            args.json.write_text(json.dumps([asdict(row) for row in rows.values()], indent=2))
    return conclude(root, args.keep, failures, started)


if __name__ == "__main__":
    sys.exit(main())
