"""Routing quality: tail latency on a heterogeneous fleet of real Tritons, per strategy, against a
client-side balancer in the same run.

    .venv/bin/python -m benchmarks.routing_quality            # the full run (about 7 minutes on 2 cores)
    .venv/bin/python -m benchmarks.routing_quality --quick    # one short round (about 2 minutes; for CI)

The fleet, all on this machine, all real processes:

- four CPU Tritons (`devtools.triton_server.LocalTriton`), one per node, each serving a model
  `m` written for this benchmark (a Python-backend identity that sleeps, so it costs no CPU
  while "computing") and acting as a GPU of its own speed and concurrency:
  gpu-a 20 ms x 2 instances, gpu-b 40 ms x 1, gpu-c 80 ms x 1, and gpu-d 20 ms x 1 that slows
  down to 200 ms in the middle of every phase. Each Triton's model reads its delay from a file
  on every execute(), so the benchmark changes speeds by rewriting that file;
- a control plane (`manage.py serve` on the real Redis) and one agent (`python -m agents`,
  simulated GPUs, its default 1 s interval) per node reporting its Triton (`devtools.fleet`),
  so the router sees what it sees in production: the agents' reports (queues, GPUs) and its
  own measurements. Ejections last 2 s (`MESH_PROXY_EJECTION_S`, 30 by default) and each
  phase waits until none is left, so one phase's ejections do not carry into the next.

Load: open-loop Poisson arrivals (one asyncio event loop, aiohttp; each send is scheduled at
its arrival time whatever the answers do, with a bound on requests in flight for safety) at
`--load` (0.75) of the fleet's capacity *after* the slowdown (capacity = instances x 1000 /
delay_ms, summed), so the fleet is never overloaded as a whole, before or after. Latency runs
from each request's scheduled time, so a late load generator does not hide queueing.

Phases, one after the other, each: warm-up (not counted), `before` seconds at the normal
speeds, then gpu-d slows down for `after` seconds; then every Triton's queue is flushed (delays
set to 0 until no request is pending) and the speeds are restored. A round is:

1. the client-side baseline: no mesh, the load generator routes itself straight to the Tritons
   by (in flight + 1) x an EWMA of each target's recent latency;
2. `/proxy` with score_based, 3. least_request, 4. round_robin: the strategy is switched with a
   `load_balancing` policy for `m` (REST API, a staff token; retries 1, timeout_ms 3000 quick,
   10000 full), and a phase starts once answers carry the new `x-infermesh-strategy`.
   score_based follows the baseline, so its router-local state is not the aftermath of
   round_robin's overload (timeouts stay in the peak-EWMA for tens of seconds).

The full run does two rounds and pools each strategy's outcomes over them: other work on a
shared machine comes and goes within minutes, and interleaving spreads it over every strategy.

Per strategy: requests, errors (non-200 answers, timeouts, arrivals shed by the in-flight
bound), p50/p95/p99 (overall and per target), each target's share (`x-infermesh-target`; the
baseline's own choice), and the slowed target's share in 500 ms windows after the slowdown,
with the time until it is half of its share before. For the proxy phases also: the proxy's own
time per request (its request histogram's mean minus its upstream histogram's, from /metrics),
the `serve` process's CPU per request, and the ejections. During the score_based phases the
router's own explanation (`GET /api/v1/routing/explain/?model=m`) is sampled around the
slowdown and printed when a goal is missed (or with `--explain`): the signals it decided on.

Goals (issue 20): score_based p99 <= 0.25x least_request's p99 in the same run and <= 1.5x
the client-side baseline's, with no errors; the slowed target's share halves within 2 s.
They are printed as met / MISSED. The run exits 1 only when something failed: a process that
would not start, an answer with a wrong body, or an error that overload does not explain
(anything but 200, the proxy's 504 upstream_timeout, a client timeout or an arrival shed by
the in-flight bound); never on a goal. Load average and the machine's yardstick are printed
with the figures: on a shared 2-core machine, compare figures only within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

from benchmarks.common import conclude, percentile, say, yardstick_ms
from devtools.fleet import AgentProcess, ControlPlane
from devtools.triton_server import LocalTriton
from devtools.waiting import wait_until

MODEL = "m"
POLICY = "bench-routing-quality"
STRATEGIES = ("score_based", "least_request", "round_robin")
BASELINE = "client-side"
MAX_IN_FLIGHT = 400  # arrivals beyond this many unanswered requests are shed (counted as errors)
WINDOW_S = 0.5
EJECTION_S = 2
GOAL_VS_LEAST_REQUEST = 0.25
GOAL_VS_BASELINE = 1.5
GOAL_HALVING_S = 2.0
BASELINE_ALPHA = 0.2  # the client-side balancer's EWMA: each latency sample moves it by this much
# Explain snapshots, seconds relative to the slowdown (the end of the phase is added).
EXPLAIN_AT = (-2.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
METRIC = re.compile(
    r'^infermesh_proxy_(request|upstream)_duration_seconds_(sum|count)\{model="m"[^}]*\}\s+([0-9.e+-]+)$', re.M
)
TRITON_TIME = re.compile(r'^nv_inference_(request_duration_us|request_success)\{model="m"[^}]*\}\s+([0-9.e+-]+)$', re.M)
PENDING = re.compile(r'^nv_inference_pending_request_count\{[^}]*model="m"[^}]*\}\s+([0-9.e+-]+)$', re.M)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    delay_ms: float
    instances: int
    slowed_ms: float | None = None  # the target that slows down mid-phase

    def capacity(self, slowed: bool = False) -> float:
        delay = self.slowed_ms if slowed and self.slowed_ms else self.delay_ms
        return self.instances * 1000.0 / delay


NODES = (
    NodeSpec("gpu-a", 20, 2),
    NodeSpec("gpu-b", 40, 1),
    NodeSpec("gpu-c", 80, 1),
    NodeSpec("gpu-d", 20, 1, slowed_ms=200),
)
SLOWED = next(node for node in NODES if node.slowed_ms)

CONFIG = """\
name: "m"
backend: "python"
max_batch_size: 0
input [{{ name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] }}]
output [{{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] }}]
instance_group [{{ kind: KIND_CPU, count: {instances} }}]
parameters {{ key: "delay_file", value: {{ string_value: "{delay_file}" }} }}
"""

MODEL_PY = '''\
"""Identity that sleeps the milliseconds written in its delay file (read on every execute)."""

import json
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.delay_file = parameters["delay_file"]["string_value"]
        self.delay_s = 0.0

    def _delay_s(self):
        try:
            with open(self.delay_file) as handle:
                self.delay_s = float(handle.read()) / 1000
        except (OSError, ValueError):
            pass  # keep the last delay
        return self.delay_s

    def execute(self, requests):
        responses = []
        for request in requests:
            time.sleep(self._delay_s())
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", data)]))
        return responses
'''


@dataclass(frozen=True)
class Settings:
    warmup_s: float
    before_s: float
    after_s: float
    timeout_ms: int
    load: float
    rate: float
    seed: int


@dataclass
class Outcome:
    at: float  # scheduled send time, seconds relative to the slowdown
    latency_s: float
    status: int | str  # HTTP status, or "timeout", "connect", "shed"
    target: str | None


@dataclass
class Phase:
    name: str
    outcomes: list[Outcome] = field(default_factory=list)  # after the warm-up
    lag_s: list[float] = field(default_factory=list)  # how late each send left, against its schedule
    wrong: int = 0  # 200 answers whose output was not the input
    explain: list[tuple[str, float, dict]] = field(default_factory=list)  # (phase, time after the slowdown, explain)
    ejections: int = 0  # TARGET_EJECTED events during the phase
    examples: dict[str, str] = field(default_factory=dict)  # the first answer of each kind of error
    sent: int = 0  # requests sent, the warm-up's included
    serve_cpu_ms: float | None = None  # CPU of the `serve` process per request (all of it, not only /proxy)
    # Per node: (seconds in its Triton, requests), the warm-up's included: where the routing sent the queueing.
    in_triton: dict[str, tuple[float, float]] = field(default_factory=dict)
    proxy_ms: float | None = None  # the proxy's own time per request: its total minus the upstream's, on average

    @property
    def latencies_ms(self) -> list[float]:
        return [o.latency_s * 1000 for o in self.outcomes if o.status != "shed"]

    @property
    def errors(self) -> Counter:
        return Counter(str(o.status) for o in self.outcomes if o.status != 200)

    def renamed(self, name: str) -> Phase:
        return dataclasses.replace(self, name=name)

    def merge(self, other: Phase) -> Phase:
        """This phase's outcomes with another round's (times are relative to each one's slowdown)."""
        cpu = [p.serve_cpu_ms for p in (self, other) if p.serve_cpu_ms is not None]
        proxy = [p.proxy_ms for p in (self, other) if p.proxy_ms is not None]
        return Phase(
            name=self.name,
            outcomes=sorted(self.outcomes + other.outcomes, key=lambda o: o.at),
            lag_s=self.lag_s + other.lag_s,
            wrong=self.wrong + other.wrong,
            explain=self.explain + other.explain,
            ejections=self.ejections + other.ejections,
            examples={**other.examples, **self.examples},
            sent=self.sent + other.sent,
            serve_cpu_ms=sum(cpu) / len(cpu) if cpu else None,
            in_triton={
                node: tuple(
                    a + b
                    for a, b in zip(self.in_triton.get(node, (0, 0)), other.in_triton.get(node, (0, 0)), strict=True)
                )
                for node in {*self.in_triton, *other.in_triton}
            },
            proxy_ms=sum(proxy) / len(proxy) if proxy else None,
        )

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def shares(self, start: float = -1e9, end: float = 1e9) -> dict[str, float]:
        chosen = Counter(o.target for o in self.outcomes if o.target and start <= o.at < end)
        total = sum(chosen.values())
        return {target: count / total for target, count in chosen.items()} if total else {}


def target_key(node: str) -> str:
    return f"{node}/triton"


class Fleet:
    """Four Tritons (one model repository each), a control plane and an agent per node."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.delay_files: dict[str, Path] = {}
        self.tritons: dict[str, LocalTriton] = {}
        for node in NODES:
            repository = root / f"models-{node.name}"
            (repository / MODEL / "1").mkdir(parents=True)
            delay_file = root / f"delay-{node.name}"
            self.delay_files[node.name] = delay_file
            self.set_delay(node.name, node.delay_ms)
            (repository / MODEL / "config.pbtxt").write_text(
                CONFIG.format(instances=node.instances, delay_file=delay_file)
            )
            (repository / MODEL / "1" / "model.py").write_text(MODEL_PY)
            self.tritons[node.name] = LocalTriton(
                repository, load_models=[MODEL], log_path=root / f"triton-{node.name}.log", startup_timeout_s=120
            )
        # Ejections last 2 s (30 s by default) so that one phase's ejections end before the next begins.
        self.plane = ControlPlane(root / "plane", MESH_PROXY_EJECTION_S=str(EJECTION_S))
        self.agents: list[AgentProcess] = []
        self.token = ""

    def set_delay(self, node: str, delay_ms: float) -> None:
        path = self.delay_files[node]
        scratch = path.with_suffix(".new")
        scratch.write_text(f"{delay_ms:g}")
        os.replace(scratch, path)  # the model never reads half a number

    def start(self) -> None:
        (self.root / "plane").mkdir()
        with ThreadPoolExecutor(len(self.tritons) + 1) as pool:
            started = [pool.submit(triton.start) for triton in self.tritons.values()]
            started.append(pool.submit(self._start_plane))
            for future in started:
                future.result()
        for node in NODES:
            ready = {m["name"]: m.get("state") for m in self.tritons[node.name].models()}
            if ready.get(MODEL) != "READY":
                raise RuntimeError(
                    f"{node.name}'s Triton did not load {MODEL}: {ready}\n{self.tritons[node.name].log_tail()}"
                )
        for node in NODES:
            # Through the REST API: `manage.py node register` costs a Django start (seconds on 2 busy cores).
            answer = self.api("POST", "nodes/", {"name": node.name, "address": "127.0.0.1", "roles": ["gpu"]})
            if answer.status_code != 201:
                raise RuntimeError(f"registering {node.name} failed: {answer.status_code} {answer.text}")
            token = answer.json()["token"]
            triton = self.tritons[node.name]
            agent = AgentProcess(
                node.name,
                token,
                self.plane,
                self.root,
                "--triton",
                f"triton={triton.http_url},{triton.metrics_url}",
                # The agent's default (AgentProcess asks for 0.5 s): half the reports for this busy machine to take.
                "--interval",
                "1",
            )
            agent.start()
            self.agents.append(agent)
        expected = {target_key(node.name) for node in NODES}

        def routable() -> bool:
            answer = self.api("GET", f"routing/explain/?model={MODEL}")
            return answer.status_code == 200 and {c["target"] for c in answer.json()["candidates"]} == expected

        if not wait_until(routable, 120):
            raise RuntimeError(
                f"the four targets never became routable: {self.api('GET', f'routing/explain/?model={MODEL}').text}\n"
                + "\n".join(f"{a.node}: {a.log()[-1500:]}" for a in self.agents)
            )

    def _start_plane(self) -> None:
        self.plane.start()
        self.token = self.plane.api_token()  # the admin's: a staff token

    def api(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.plane.url}/api/v1/{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=15,
        )

    def set_strategy(self, strategy: str, timeout_ms: int) -> None:
        spec = {"model": MODEL, "strategy": strategy, "retries": 1, "timeout_ms": timeout_ms}
        answer = self.api("PATCH", f"policies/{POLICY}/", {"spec": spec})
        if answer.status_code == 404:
            answer = self.api(
                "POST", "policies/", {"name": POLICY, "kind": "load_balancing", "spec": spec, "enabled": True}
            )
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"writing the load_balancing policy failed: {answer.status_code} {answer.text}")

        def applied() -> bool:
            ready = httpx.get(
                f"{self.plane.url}/proxy/v2/models/{MODEL}/ready",
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=10,
            )
            return ready.headers.get("x-infermesh-strategy", "").split(";")[0] == strategy

        began = time.monotonic()
        if not wait_until(applied, 20, interval=0.1):
            raise RuntimeError(f"the router did not switch to {strategy} within 20 s")
        say(f"  policy {POLICY}: strategy {strategy}, in effect after {time.monotonic() - began:.2f} s")

    def wait_no_ejection(self) -> None:
        def clear() -> bool:
            explained = self.api("GET", f"routing/explain/?model={MODEL}").json()
            return not any(e["reason"] == "ejected" for e in explained["excluded"])

        wait_until(clear, 60, "a target stayed ejected", interval=0.25)

    def ejections(self) -> int:
        return self.api("GET", "events/?type=TARGET_EJECTED&page_size=1").json()["count"]

    def proxy_times(self) -> tuple[float, float, float, float]:
        """The proxy's histograms for `m`: (request seconds sum, count, upstream seconds sum, count)."""
        text = httpx.get(f"{self.plane.url}/metrics", headers={"Authorization": f"Bearer {self.token}"}).text
        sums = Counter()
        for name, kind, value in METRIC.findall(text):
            sums[name, kind] += float(value)
        return (
            sums["request", "sum"],
            sums["request", "count"],
            sums["upstream", "sum"],
            sums["upstream", "count"],
        )

    def serve_cpu_s(self) -> float:
        """CPU seconds the control plane's `serve` process has used (user + system)."""
        process = self.plane.serve.process
        if process is None:
            return 0.0
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def triton_times(self) -> dict[str, tuple[float, float]]:
        """Per node: (seconds its Triton spent on requests for `m`, queue and compute, summed; requests done)."""
        times = {}
        for node, triton in self.tritons.items():
            found = dict(TRITON_TIME.findall(httpx.get(triton.metrics_url, timeout=5).text))
            times[node] = (
                float(found.get("request_duration_us", 0)) / 1e6,
                float(found.get("request_success", 0)),
            )
        return times

    def pending(self) -> int:
        total = 0
        for triton in self.tritons.values():
            text = httpx.get(triton.metrics_url, timeout=5).text
            total += sum(int(float(value)) for value in PENDING.findall(text))
        return total

    def flush(self) -> float:
        """Empty every Triton's queue (delays to 0 until nothing is pending), then restore the speeds."""
        began = time.monotonic()
        for node in NODES:
            self.set_delay(node.name, 0)
        wait_until(lambda: self.pending() == 0, 120, "the Tritons' queues did not empty", interval=0.1)
        time.sleep(0.3)  # what was executing finishes
        for node in NODES:
            self.set_delay(node.name, node.delay_ms)
        return time.monotonic() - began

    def stop(self) -> None:
        """Stop everything started, in parallel (each may wait seconds for its children); never raises."""

        def quietly(stop: Callable[[], None]) -> None:
            try:
                stop()
            except Exception:
                traceback.print_exc()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(quietly, [agent.stop for agent in self.agents]))
            list(pool.map(quietly, [self.plane.stop, *(triton.stop for triton in self.tritons.values())]))


def infer_body(index: int) -> tuple[bytes, float]:
    value = float(index % 1_000_000)
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [value]}]}
    return json.dumps(body).encode(), value


def answered_right(payload: bytes, value: float) -> bool:
    try:
        outputs = json.loads(payload)["outputs"]
        return outputs[0]["name"] == "OUTPUT0" and outputs[0]["data"] == [value]
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def problem_with(status: int, payload: bytes, value: float) -> str | None:
    """None for a 200 with the right output; else what is wrong (a wrong output, or the error's body)."""
    if status != 200:
        return payload[:300].decode(errors="replace")
    return None if answered_right(payload, value) else f"wrong output: {payload[:300]!r}"


# A sender posts request `index` and returns (status, target, problem): the answer's status (or
# "timeout"/"connect"), the target that answered (None when unknown), and `problem_with` the answer.
Sender = Callable[[aiohttp.ClientSession, int], Awaitable[tuple[int | str, str | None, str | None]]]


def proxy_sender(fleet: Fleet, timeout_s: float) -> Sender:
    url = f"{fleet.plane.url}/proxy/v2/models/{MODEL}/infer"
    headers = {"Authorization": f"Bearer {fleet.token}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(session: aiohttp.ClientSession, index: int) -> tuple[int | str, str | None, str | None]:
        body, value = infer_body(index)
        try:
            async with session.post(url, data=body, headers=headers, timeout=timeout) as answer:
                payload = await answer.read()
                target = answer.headers.get("x-infermesh-target")
                return answer.status, target, problem_with(answer.status, payload, value)
        except TimeoutError:
            return "timeout", None, f"no answer within {timeout_s:g} s"
        except aiohttp.ClientError as error:
            return "connect", None, repr(error)

    return send


class ClientSideBalancer:
    """The baseline: route straight to the Tritons by (in flight + 1) x EWMA of recent latency."""

    def __init__(self, fleet: Fleet, timeout_s: float, rng: random.Random) -> None:
        self.urls = {target_key(n): f"{t.http_url}/v2/models/{MODEL}/infer" for n, t in fleet.tritons.items()}
        self.in_flight = dict.fromkeys(self.urls, 0)
        self.ewma_s = dict.fromkeys(self.urls, 0.0)  # 0 until measured: untried targets are tried first
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.timeout_s = timeout_s
        self.rng = rng

    def choose(self) -> str:
        costs = [((self.in_flight[t] + 1) * self.ewma_s[t], self.rng.random(), t) for t in self.urls]
        return min(costs)[2]

    async def send(self, session: aiohttp.ClientSession, index: int) -> tuple[int | str, str | None, str | None]:
        target = self.choose()
        body, value = infer_body(index)
        self.in_flight[target] += 1
        began = time.perf_counter()
        status: int | str
        try:
            async with session.post(
                self.urls[target], data=body, headers={"Content-Type": "application/json"}, timeout=self.timeout
            ) as answer:
                payload = await answer.read()
                status = answer.status
                problem = problem_with(status, payload, value)
        except TimeoutError:
            status, problem = "timeout", f"no answer within {self.timeout_s:g} s"
        except aiohttp.ClientError as error:
            status, problem = "connect", repr(error)
        finally:
            self.in_flight[target] -= 1
        seconds = time.perf_counter() - began if status == 200 else self.timeout_s  # a failure must not look fast
        previous = self.ewma_s[target]
        self.ewma_s[target] = seconds if previous == 0 else previous + BASELINE_ALPHA * (seconds - previous)
        return status, target, problem


async def run_phase(name: str, settings: Settings, fleet: Fleet, sender: Sender, explain: bool) -> Phase:
    """One phase of open-loop Poisson load; gpu-d slows down after warm-up + before seconds."""
    loop = asyncio.get_running_loop()
    phase = Phase(name)
    rng = random.Random(f"{settings.seed}-{name}")
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT + 16, limit_per_host=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = loop.time() + 0.05
        change = start + settings.warmup_s + settings.before_s
        end = change + settings.after_s
        loop.call_at(change, fleet.set_delay, SLOWED.name, SLOWED.slowed_ms)
        tasks: set[asyncio.Task] = set()
        in_flight = 0

        async def one(scheduled: float, index: int) -> None:
            nonlocal in_flight
            in_flight += 1
            try:
                status, target, problem = await sender(session, index)
            finally:
                in_flight -= 1
            if status == 200 and problem:
                phase.wrong += 1
                phase.examples.setdefault("wrong", problem)
            elif problem:
                phase.examples.setdefault(str(status), problem)
            if scheduled >= start + settings.warmup_s:
                phase.outcomes.append(Outcome(scheduled - change, loop.time() - scheduled, status, target))

        explainer = asyncio.create_task(sample_explain(session, fleet, phase, change, end)) if explain else None
        scheduled, index = start, 0
        while True:
            scheduled += rng.expovariate(settings.rate)
            if scheduled >= end:
                break
            wait = scheduled - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            index += 1
            if scheduled >= start + settings.warmup_s:
                phase.lag_s.append(max(0.0, loop.time() - scheduled))
            if in_flight >= MAX_IN_FLIGHT:
                if scheduled >= start + settings.warmup_s:
                    phase.outcomes.append(Outcome(scheduled - change, 0.0, "shed", None))
                continue
            task = asyncio.create_task(one(scheduled, index))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        phase.sent = index
        if tasks:
            await asyncio.gather(*tasks)
        if explainer is not None:
            await explainer
    phase.outcomes.sort(key=lambda o: o.at)
    return phase


async def sample_explain(session: aiohttp.ClientSession, fleet: Fleet, phase: Phase, change: float, end: float) -> None:
    """The router's explanation for `m` at moments around the slowdown (and at the end)."""
    loop = asyncio.get_running_loop()
    url = f"{fleet.plane.url}/api/v1/routing/explain/?model={MODEL}"
    headers = {"Authorization": f"Bearer {fleet.token}"}
    for moment in [*(change + at for at in EXPLAIN_AT), end - 0.1]:
        if moment >= end:
            continue
        wait = moment - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        taken = loop.time()
        try:
            async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=5)) as answer:
                if answer.status == 200:
                    phase.explain.append((phase.name, taken - change, await answer.json()))
        except (TimeoutError, aiohttp.ClientError):
            pass


# ---- reporting ----------------------------------------------------------------------------------


def halving(phase: Phase, settings: Settings) -> tuple[float, list[float], float | None]:
    """The slowed target's share before, in WINDOW_S windows after the slowdown, and the time to halve."""
    key = target_key(SLOWED.name)
    before = phase.shares(-settings.before_s, 0.0).get(key, 0.0)
    windows = []
    halved = None
    at = 0.0
    while at + WINDOW_S <= settings.after_s + 1e-9:
        share = phase.shares(at, at + WINDOW_S).get(key, 0.0)
        windows.append(share)
        if halved is None and before > 0 and share <= before / 2:
            halved = at + WINDOW_S
        at += WINDOW_S
    return before, windows, halved


def report_phase(phase: Phase, settings: Settings) -> None:
    errors = phase.errors
    shares = phase.shares()
    error_text = ", ".join(f"{count} {status}" for status, count in sorted(errors.items())) or "none"
    say(
        f"{phase.name:>14}: {len(phase.outcomes):5d} requests, errors: {error_text}; "
        f"p50 {phase.p(50):7.1f} ms  p95 {phase.p(95):7.1f} ms  p99 {phase.p(99):7.1f} ms  "
        f"(load generator late p99 {percentile([s * 1000 for s in phase.lag_s], 99):.1f} ms)"
    )
    if phase.proxy_ms is not None:
        say(
            f"                  the proxy's own time {phase.proxy_ms:.1f} ms per request on average "
            f"(its total minus the upstream's); serve's CPU {phase.serve_cpu_ms:.1f} ms per request; "
            f"targets ejected {phase.ejections} times"
        )
    say(
        "                  shares: "
        + "  ".join(f"{node.name} {shares.get(target_key(node.name), 0.0):5.1%}" for node in NODES)
    )
    before_shares = phase.shares(-settings.before_s, 0.0)
    after_shares = phase.shares(settings.after_s / 2, settings.after_s)
    say(
        "      before the slowdown: "
        + "  ".join(f"{node.name} {before_shares.get(target_key(node.name), 0.0):5.1%}" for node in NODES)
    )
    say(
        "  last half after it:     "
        + "  ".join(f"{node.name} {after_shares.get(target_key(node.name), 0.0):5.1%}" for node in NODES)
    )
    if phase.in_triton:
        seconds = sum(s for s, _ in phase.in_triton.values())
        done = sum(n for _, n in phase.in_triton.values())
        say(
            f"          time in Triton (queue + compute), mean: {seconds / max(1, done) * 1000:.1f} ms; by target: "
            + "  ".join(f"{node} {s / max(1, n) * 1000:.0f} ms" for node, (s, n) in sorted(phase.in_triton.items()))
        )
    by_target = {
        node.name: [o.latency_s * 1000 for o in phase.outcomes if o.target == target_key(node.name)] for node in NODES
    }
    say(
        "       p50/p99 by target: "
        + "  ".join(
            f"{name} {percentile(values, 50):.0f}/{percentile(values, 99):.0f} ms" for name, values in by_target.items()
        )
    )
    before, windows, halved = halving(phase, settings)
    verdict = f"halved after {halved:.1f} s" if halved is not None else f"not halved within {settings.after_s:g} s"
    say(
        f"       {SLOWED.name}'s share: {before:.1%} before; per {WINDOW_S:g} s after the slowdown: "
        + " ".join(f"{share:.0%}" for share in windows)
        + f"; {verdict}"
    )


def report_explain(phase: Phase) -> None:
    """Each snapshot: per candidate, best first, its score and expected wait, and the signals behind them."""
    say(f"the router's explanation of {MODEL} during the {phase.name} phases (t: seconds after the slowdown);")
    say("  wait = (ahead + 1) x service / concurrency, ahead = max(in flight, reported queue); signal=raw->score")
    for label, at, explained in phase.explain:
        excluded = ", ".join(f"{e['target']} ({e['reason']})" for e in explained.get("excluded", [])) or "none"
        say(f"  {label} t={at:+5.2f} s  excluded: {excluded}")
        for candidate in explained.get("candidates", []):
            signals = candidate.get("signals", {})
            wait = signals.get("expected_wait", {}).get("raw") or {}
            parts = [
                f"{candidate['target'].split('/')[0]} {candidate['score']:5.1f}:",
                f"wait {candidate['expected_wait_ms']:7.1f} ms = in flight {wait.get('in_flight')}, "
                f"service {wait.get('service_ms')} ms / {wait.get('concurrency')} -> "
                f"{signals.get('expected_wait', {}).get('score', 0):.0f}",
            ]
            for name, short in (
                ("queue_depth", "queue"),
                ("recent_performance", "errors"),
                ("gpu_utilization", "util"),
                ("network_latency", "net ms"),
            ):
                signal = signals.get(name)
                if signal is None or signal["raw"] is None:
                    continue
                raw = signal["raw"]
                raw = raw.get("error_rate") if isinstance(raw, dict) else raw
                raw = f"{raw:.3g}" if isinstance(raw, float) else raw
                age = f" ({signal['age_s']:.1f} s old)" if name == "queue_depth" and signal.get("age_s") else ""
                parts.append(f"{short} {raw}{age}->{signal['score']:.0f}{' stale' if signal.get('stale') else ''}")
            say("    " + "  ".join(parts))


def goals(phases: dict[str, Phase], settings: Settings) -> list[tuple[str, bool]]:
    score, least, baseline = phases["score_based"], phases["least_request"], phases[BASELINE]
    _, _, halved = halving(score, settings)
    errors = sum(score.errors.values())
    return [
        (
            f"score_based p99 {score.p(99):.1f} ms <= {GOAL_VS_LEAST_REQUEST:g}x least_request's "
            f"{least.p(99):.1f} ms (ratio {score.p(99) / least.p(99):.2f})",
            score.p(99) <= GOAL_VS_LEAST_REQUEST * least.p(99),
        ),
        (
            f"score_based p99 {score.p(99):.1f} ms <= {GOAL_VS_BASELINE:g}x the client-side baseline's "
            f"{baseline.p(99):.1f} ms (ratio {score.p(99) / baseline.p(99):.2f})",
            score.p(99) <= GOAL_VS_BASELINE * baseline.p(99),
        ),
        (f"score_based errors: {errors}", errors == 0),
        (
            f"{SLOWED.name}'s share under score_based halves within {GOAL_HALVING_S:g} s: "
            + (f"after {halved:.1f} s" if halved is not None else "not within the phase"),
            halved is not None and halved <= GOAL_HALVING_S,
        ),
    ]


def unexplained_errors(phases: dict[str, Phase]) -> list[str]:
    """Failures that overload does not explain: wrong bodies, statuses other than 200, 504 and timeouts."""
    found = []
    for phase in phases.values():
        if phase.wrong:
            found.append(f"{phase.name}: {phase.wrong} answers with 200 and a wrong output")
        odd = {s: c for s, c in phase.errors.items() if s not in ("504", "timeout", "shed")}
        if odd:
            found.append(
                f"{phase.name}: unexpected answers {odd}, e.g. "
                + "; ".join(f"{s}: {phase.examples.get(s, '?')}" for s in odd)
            )
            if "report stale" in phase.examples.get("503", ""):
                found.append(
                    f"{phase.name}: the agents' reports went stale (every 1 s, stale after 3 s): "
                    "the machine was too busy for them (see the load averages)"
                )
        if phase.wrong:
            found.append(f"e.g. {phase.examples['wrong']}")
    return found


# ---- main ---------------------------------------------------------------------------------------


async def run_proxy_phase(fleet: Fleet, settings: Settings, strategy: str, label: str) -> Phase:
    await asyncio.to_thread(fleet.wait_no_ejection)
    await asyncio.to_thread(fleet.set_strategy, strategy, settings.timeout_ms)
    ejections, times = await asyncio.to_thread(lambda: (fleet.ejections(), fleet.proxy_times()))
    cpu = fleet.serve_cpu_s()
    sender = proxy_sender(fleet, settings.timeout_ms / 1000 + 2.0)  # the proxy answers 504 first
    phase = await run_phase(label, settings, fleet, sender, explain=strategy == "score_based")
    ejections_after, times_after = await asyncio.to_thread(lambda: (fleet.ejections(), fleet.proxy_times()))
    phase.ejections = ejections_after - ejections
    phase.serve_cpu_ms = (fleet.serve_cpu_s() - cpu) * 1000 / max(1, phase.sent)
    total_s, total_n, upstream_s, upstream_n = (a - b for a, b in zip(times_after, times, strict=True))
    if total_n and upstream_n:
        phase.proxy_ms = (total_s / total_n - upstream_s / upstream_n) * 1000
    return phase


async def run_all(fleet: Fleet, settings: Settings, rounds: int) -> dict[str, Phase]:
    """`rounds` rounds of every phase, the baseline first in each (so that score_based, next, follows
    a phase without proxy traffic); each strategy's outcomes pooled over the rounds."""
    pooled: dict[str, Phase] = {}
    for round_number in range(1, rounds + 1):
        for name in (BASELINE, *STRATEGIES):
            label = name if rounds == 1 else f"{name} #{round_number}"
            in_triton = await asyncio.to_thread(fleet.triton_times)
            if name == BASELINE:
                say(f"phase {label} (straight to the Tritons, by (in flight + 1) x EWMA latency)")
                seed = random.Random(f"{settings.seed}-baseline-{round_number}")
                balancer = ClientSideBalancer(fleet, settings.timeout_ms / 1000, seed)
                phase = await run_phase(label, settings, fleet, balancer.send, explain=False)
            else:
                say(f"phase {label} through /proxy")
                phase = await run_proxy_phase(fleet, settings, name, label)
            after = await asyncio.to_thread(fleet.triton_times)
            phase.in_triton = {
                node: (after[node][0] - in_triton[node][0], after[node][1] - in_triton[node][1]) for node in after
            }
            flushed = await asyncio.to_thread(fleet.flush)
            report_phase(phase, settings)
            say(f"  (queues flushed in {flushed:.1f} s; load average {os.getloadavg()[0]:.2f})")
            pooled[name] = pooled[name].merge(phase) if name in pooled else phase.renamed(name)
    return {name: pooled[name] for name in (*STRATEGIES, BASELINE)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Routing quality on a heterogeneous fleet of real Tritons.")
    parser.add_argument("--quick", action="store_true", help="short phases (under 3 minutes in all; for CI)")
    parser.add_argument("--load", type=float, default=0.75, help="offered load, of the capacity after the slowdown")
    parser.add_argument("--warmup", type=float, help="seconds of load before each phase is measured")
    parser.add_argument("--before", type=float, help="measured seconds before the slowdown")
    parser.add_argument("--after", type=float, help="measured seconds after the slowdown")
    parser.add_argument("--rounds", type=int, help="rounds of every phase, pooled per strategy (1 quick, 2 full)")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--explain", action="store_true", help="print the router's explanations even if goals are met")
    parser.add_argument("--keep", action="store_true", help="keep the data folder and logs")
    args = parser.parse_args(argv)
    capacity_before = sum(node.capacity() for node in NODES)
    capacity_after = sum(node.capacity(slowed=True) for node in NODES)
    settings = Settings(
        warmup_s=args.warmup if args.warmup is not None else (3.0 if args.quick else 8.0),
        before_s=args.before if args.before is not None else (5.0 if args.quick else 15.0),
        after_s=args.after if args.after is not None else (5.0 if args.quick else 15.0),
        timeout_ms=3000 if args.quick else 10000,
        load=args.load,
        rate=args.load * capacity_after,
        seed=args.seed,
    )
    rounds = args.rounds or (1 if args.quick else 2)
    root = Path(tempfile.mkdtemp(prefix="infermesh-routing-quality-"))
    started = time.monotonic()
    say(f"data folder and logs in {root}; {os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}")
    say(f"machine yardstick: {yardstick_ms():.1f} ms (lower is faster)")
    say(
        "fleet: "
        + ", ".join(
            f"{n.name} {n.delay_ms:g} ms x {n.instances}"
            + (f" (-> {n.slowed_ms:g} ms mid-phase)" if n.slowed_ms else "")
            for n in NODES
        )
    )
    say(
        f"capacity {capacity_before:.1f} req/s before the slowdown, {capacity_after:.1f} after; Poisson arrivals at "
        f"{settings.rate:.1f} req/s ({settings.rate / capacity_before:.0%} of it before, "
        f"{settings.rate / capacity_after:.0%} after); phases: {settings.warmup_s:g} s warm-up, "
        f"{settings.before_s:g} s measured, slowdown, "
        f"{settings.after_s:g} s measured; {rounds} round(s); timeout_ms {settings.timeout_ms}, retries 1"
    )
    failures = ["the benchmark did not finish"]
    fleet = None
    try:
        fleet = Fleet(root)
        fleet.start()
        say(f"fleet up after {time.monotonic() - started:.0f} s")
        try:
            import uvloop

            phases = uvloop.run(run_all(fleet, settings, rounds))
        except ImportError:
            phases = asyncio.run(run_all(fleet, settings, rounds))
        say("")
        pooled = f", each strategy pooled over {rounds} rounds" if rounds > 1 else ""
        say(f"summary (load average {os.getloadavg()[0]:.2f}{pooled}):")
        for phase in phases.values():
            report_phase(phase, settings)
        say("goals (issue 20):")
        verdicts = goals(phases, settings)
        for text, met in verdicts:
            say(f"  {'met   ' if met else 'MISSED'} {text}")
        if args.explain or not all(met for _, met in verdicts):
            report_explain(phases["score_based"])
        failures = unexplained_errors(phases)
    except Exception as error:
        traceback.print_exc()
        failures = [f"{type(error).__name__}: {error}"]
    finally:
        if fleet is not None:
            fleet.stop()
    return conclude(root, args.keep, failures, started)


if __name__ == "__main__":
    sys.exit(main())
