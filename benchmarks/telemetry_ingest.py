"""Telemetry ingest benchmark: one control-plane process, simulated nodes of 8 GPUs, one subscriber.

What it measures, on the lean ASGI ingest path (`meshcore.live.asgi`, the default) and, in the
same run, on the Django/DRF view (`MESH_TELEMETRY_PATH=django`) as the baseline:

- paced: 100 and 1,000 nodes, each reporting once a second (spread evenly over the second):
  GPU samples accepted per second (8 per accepted report), request latency, and the time from
  a report's due time to its arrival at a WebSocket subscriber (`/ws/events/?telemetry=1`);
- saturation: 1,000 nodes as fast as the server answers (closed loop over a pool of keep-alive
  connections): the most GPU samples per second it accepts, and request latency.

One `manage.py serve` (uvicorn, the default, or daphne with --server; Redis live state and
channel layer, a single Raft replica, its own data folder) per path; the nodes are registered
once through the REST API and both servers use the same database. The agents run in one child
process (`benchmarks.telemetry_load`, raw asyncio HTTP/1.1 keep-alive), the subscriber in another,
so neither spends the server's CPU.

    python -m benchmarks.telemetry_ingest            # the full run (about 5 minutes on 2 cores)
    python -m benchmarks.telemetry_ingest --quick    # 100 nodes, short windows (about 50 s)

Goals (from the issue): at least 10,000 GPU samples/s accepted, and p99 report-to-subscriber
under 1 s; they are judged on the lean path and printed as met / not met. The run exits 1 only
when something failed (a report not accepted, a broken connection, no deliveries at all),
never on a timing.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import multiprocessing
import os
import secrets
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks import telemetry_load
from benchmarks.common import conclude, percentile, print_table, say
from benchmarks.telemetry_load import GPUS_PER_NODE, FleetPlan, RunResult, SubscriberPlan, SubscriberResult
from devtools.serve import ServeProcess, clean_env, manage

PATHS = ("lean", "django")
GOAL_SAMPLES_PER_S = 10_000.0
GOAL_P99_S = 1.0
ADMIN_PASSWORD = "a-benchmark-admin-password"  # a throwaway admin in a temporary folder
CONTEXT = multiprocessing.get_context("spawn")


# ---- the control plane -------------------------------------------------------------------------


class ControlPlane:
    """One `manage.py serve` on the given data folder, with the telemetry path chosen by `path`."""

    def __init__(self, env: dict[str, str], path: str, log: Path) -> None:
        self.path = path
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}-{path}:"
        self.env = {**env, "MESH_TELEMETRY_PATH": path, "MESH_LIVE_STATE_PREFIX": self.prefix}
        self.serve = ServeProcess(self.env, log)
        self.port = self.serve.port
        self.url = self.serve.url

    def start(self, timeout: float = 60) -> float:
        """Start serve; the seconds until it answered."""
        self.serve.start()
        return self.serve.wait_http(timeout)

    def stop(self) -> None:
        self.serve.stop()
        self.forget_live_state()

    def forget_live_state(self) -> None:
        """Remove this run's keys from Redis (the store keeps them for a day otherwise)."""
        import redis

        client = redis.Redis.from_url(self.env["REDIS_URL"])
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        for at in range(0, len(keys), 1000):
            client.delete(*keys[at : at + 1000])
        client.close()

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the server has used so far."""
        assert self.serve.process is not None
        fields = Path(f"/proc/{self.serve.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def mirrored(self, names: list[str], since: float) -> int:
        """How many of the nodes have their reports from `since` on in the database (`last_seen`)."""
        stamp = datetime.fromtimestamp(since, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        database = Path(self.env["MESH_DATA_DIR"]) / "infermesh.sqlite3"
        query = f"SELECT COUNT(*) FROM meshcore_node WHERE last_seen >= ? AND name IN ({','.join('?' * len(names))})"
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute(query, [stamp, *names]).fetchone()[0]

    def wait_mirrored(self, names: list[str], since: float, timeout: float) -> tuple[float, int]:
        """Wait (at most `timeout`) until the database has every node's report from `since` on.

        A node's first report to a process is mirrored in full (GPU inventory, health, events):
        the window should start once that is done, as it would a while after a fleet connected.
        Returns the time waited and how many nodes were mirrored by then.
        """
        started = time.monotonic()
        while (done := self.mirrored(names, since)) < len(names) and time.monotonic() - started < timeout:
            time.sleep(0.5)
        return time.monotonic() - started, done


def prepare(root: Path, redis_url: str) -> tuple[dict[str, str], str]:
    """A migrated data folder with an admin; the environment both servers share, and an admin API token."""
    data = root / "data"
    data.mkdir()
    env = clean_env(
        data,
        SECRET_KEY=secrets.token_urlsafe(50),
        REDIS_URL=redis_url,
        MESH_LOCAL_AGENT="off",
        MESH_LOG_LEVEL="warning",
        MESH_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    for command in (("migrate", "--noinput"), ("ensure_admin",), ("apitoken", "issue", "admin", "benchmark")):
        done = manage(*command, env=env, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(command)} failed: {done.stderr[-2000:]}")
    return env, done.stdout.strip().splitlines()[-1]


def register_nodes(url: str, api_token: str, names: list[str], workers: int = 4) -> dict[str, str]:
    """POST /api/v1/nodes/ for each name (a few at a time); the node tokens by name."""
    headers = {"Authorization": f"Bearer {api_token}"}

    def register(chunk: list[str]) -> dict[str, str]:
        tokens = {}
        with httpx.Client(base_url=f"{url}/api/v1", headers=headers, timeout=30) as client:
            for name in chunk:
                body = {"name": name, "address": "127.0.0.1", "roles": ["gpu"]}
                answer = client.post("/nodes/", json=body)
                deadline = time.monotonic() + 30
                while answer.status_code == 503 and time.monotonic() < deadline:
                    time.sleep(0.2)  # the single Raft replica is still electing itself
                    answer = client.post("/nodes/", json=body)
                if answer.status_code != 201:
                    raise RuntimeError(f"registering {name}: HTTP {answer.status_code} {answer.text[:300]}")
                tokens[name] = answer.json()["token"]
        return tokens

    tokens: dict[str, str] = {}
    with ThreadPoolExecutor(workers) as pool:
        for part in pool.map(register, [names[i::workers] for i in range(workers)]):
            tokens.update(part)
    return {name: tokens[name] for name in names}


# ---- one scenario --------------------------------------------------------------------------------


# ---- scenarios and their figures ----------------------------------------------------------------


@dataclass
class Scenario:
    key: str
    mode: str  # "paced": every node once a second; "closed": each node's next report as soon as answered
    nodes: int


@dataclass
class Settings:
    api_token: str
    connections: int
    warmup_s: float
    duration_s: float
    settle_s: float  # at most this long for the database to have the new nodes' first reports
    tail_s: float  # how long the subscriber listens after the window


@dataclass
class Figures:
    scenario: str
    path: str
    mode: str
    nodes: int
    connections: int
    duration_s: float
    offered_per_s: float | None
    reports_per_s: float
    gpu_samples_per_s: float
    request_p50_ms: float
    request_p99_ms: float
    # Report to subscriber: from the report's due time until the subscriber has it or a newer one of
    # the node (the publisher coalesces a node's reports within 0.2 s); inf when not seen by the end.
    delivery_p50_ms: float
    delivery_p99_ms: float
    delivery_max_ms: float
    seen_fraction: float  # reports whose values (or newer ones) reached the subscriber
    individually_fraction: float  # reports delivered as themselves (not coalesced into a later one)
    publish_p99_ms: float  # the control plane's receive time to the subscriber
    matched_by: str
    frames: int  # telemetry frames about this run's nodes the subscriber received, whenever sent
    skipped_fraction: float  # paced: due reports not sent because the node still waited for an answer
    server_cpu_pct: float
    server_cpu_ms_per_report: float
    fleet_cpu_pct: float
    subscriber_cpu_pct: float
    snapshots_s: float | None  # sending the new nodes' snapshots
    settle_s: float | None  # waiting for the database to have them
    mirrored_fraction: float | None  # new nodes whose first report was in the database when the load started
    errors: int
    first_errors: list[str] = field(default_factory=list)
    unanswered: int = 0
    subscriber_error: str = ""


class FleetProcess:
    """The simulated fleet in a child process (`benchmarks.telemetry_load.Fleet`)."""

    def __init__(self, server: ControlPlane, connections: int) -> None:
        self.pipe, child = CONTEXT.Pipe()
        plan = FleetPlan(host="127.0.0.1", port=server.port, connections=connections)
        self.process = CONTEXT.Process(target=telemetry_load.fleet_main, args=(plan, child), daemon=True)
        self.process.start()

    def expect(self, kind: str, timeout: float) -> Any:
        """The next (kind, value) message from the fleet, or an error."""
        if not self.pipe.poll(timeout):
            raise RuntimeError(f"the simulated fleet sent no {kind!r} within {timeout:.0f} s")
        got, value = self.pipe.recv()
        if got != kind:
            raise RuntimeError(f"the simulated fleet sent {got!r}, expected {kind!r}")
        return value

    def add(self, nodes: list[tuple[str, str]]) -> tuple[float, float]:
        """Start these agents (a snapshot each); (when the snapshots started, how long they took)."""
        self.pipe.send(("add", nodes))
        return self.expect("added", 60 + len(nodes) / 10)

    def run(self, mode: str, warmup_s: float, duration_s: float, server: ControlPlane) -> tuple[RunResult, float]:
        """One measured run; the result and the server's CPU seconds during its window."""
        self.pipe.send(("run", mode, warmup_s, duration_s))
        self.expect("measuring", warmup_s + 60)
        cpu = server.cpu_seconds()
        self.expect("measured", duration_s + 60)
        cpu = server.cpu_seconds() - cpu
        return self.expect("done", 60), cpu

    def stop(self) -> dict[str, Any]:
        """Stop the fleet; the errors since its last run."""
        leftover: dict[str, Any] = {}
        with contextlib.suppress(OSError, RuntimeError, EOFError):
            self.pipe.send(("stop",))
            leftover = self.expect("stopped", 20)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
        return leftover


class SubscriberProcess:
    """One WebSocket subscriber with telemetry=1 in a child process."""

    def __init__(self, server: ControlPlane, api_token: str) -> None:
        self.pipe, child = CONTEXT.Pipe()
        self.stop_event = CONTEXT.Event()
        plan = SubscriberPlan(
            url=f"ws://127.0.0.1:{server.port}/ws/events/?telemetry=1", origin=server.url, api_token=api_token
        )
        self.process = CONTEXT.Process(
            target=telemetry_load.subscriber_main, args=(plan, child, self.stop_event), daemon=True
        )
        self.process.start()
        # Connected (or failed: then stop() returns why); a loaded server can take seconds to accept.
        self.connected = self.pipe.poll(90) and self.pipe.recv() == "ready"

    def stop(self) -> SubscriberResult:
        self.stop_event.set()
        result = SubscriberResult(error="the subscriber did not report back")
        while self.pipe.poll(30):
            message = self.pipe.recv()  # "ready" or "failed" may come late, the result last
            if isinstance(message, SubscriberResult):
                result = message
                break
        if not self.connected and not result.error:
            result.error = "the subscriber did not connect"
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
        return result


def seen_times(run: RunResult, subscriber: SubscriberResult) -> tuple[dict[str, tuple[list[int], list[float]]], str]:
    """Per node: the delivered seqs in order, and for each the earliest time that seq or a newer one arrived."""
    by_node: dict[str, list[tuple[int, float]]] = {}
    with_seq = [d for d in subscriber.deliveries if d.seq is not None]
    matched_by = "node + seq"
    if with_seq:
        for d in with_seq:
            by_node.setdefault(d.node, []).append((d.seq, d.received))
    else:
        # A payload without seq: the report whose request was in flight at the server's receive time.
        matched_by = "node + server time"
        sends: dict[str, list[tuple[float, float, int]]] = {}
        for r in sorted(run.reports, key=lambda r: r.sent):
            sends.setdefault(r.node, []).append((r.sent, r.done, r.seq))
        for d in subscriber.deliveries:
            mine = sends.get(d.node, [])
            at = bisect.bisect_right(mine, (d.time, float("inf"), 0)) - 1
            if at >= 0 and mine[at][1] >= d.time:
                by_node.setdefault(d.node, []).append((mine[at][2], d.received))
    seen: dict[str, tuple[list[int], list[float]]] = {}
    for node, pairs in by_node.items():
        pairs.sort()
        earliest = [p[1] for p in pairs]
        for at in range(len(earliest) - 2, -1, -1):
            earliest[at] = min(earliest[at], earliest[at + 1])
        seen[node] = ([p[0] for p in pairs], earliest)
    return seen, matched_by


def summarize(
    scenario: Scenario,
    path: str,
    run: RunResult,
    subscriber: SubscriberResult,
    server_cpu: float,
    added: tuple[float, float, float, float] | None,
    names: list[str],
) -> Figures:
    start, end = run.window
    duration = end - start
    wanted = set(names)
    subscriber.deliveries = [d for d in subscriber.deliveries if d.node in wanted]
    accepted = [r for r in run.reports if r.accepted]
    answered_in_window = sum(1 for r in accepted if start <= r.done < end)
    seen, matched_by = seen_times(run, subscriber)
    exact = {(d.node, d.seq) for d in subscriber.deliveries}
    delivery = []
    for r in accepted:
        seqs, earliest = seen.get(r.node, ([], []))
        at = bisect.bisect_left(seqs, r.seq)
        delivery.append((earliest[at] if at < len(seqs) else float("inf")) - r.due)
    publish = [d.received - d.time for d in subscriber.deliveries if start <= d.time < end]
    request = [r.done - r.due for r in accepted]
    reports_per_s = answered_in_window / duration
    due = len(run.reports) + run.skipped
    return Figures(
        scenario=scenario.key,
        path=path,
        mode=scenario.mode,
        nodes=run.nodes,
        connections=run.connections,
        duration_s=duration,
        offered_per_s=run.nodes * GPUS_PER_NODE if scenario.mode == "paced" else None,
        reports_per_s=reports_per_s,
        gpu_samples_per_s=GPUS_PER_NODE * reports_per_s,
        request_p50_ms=1000 * percentile(request, 50),
        request_p99_ms=1000 * percentile(request, 99),
        delivery_p50_ms=1000 * percentile(delivery, 50),
        delivery_p99_ms=1000 * percentile(delivery, 99),
        delivery_max_ms=1000 * max(delivery, default=float("nan")),
        seen_fraction=sum(1 for d in delivery if d != float("inf")) / len(delivery) if delivery else 0.0,
        individually_fraction=sum(1 for r in accepted if (r.node, r.seq) in exact) / len(accepted) if accepted else 0.0,
        publish_p99_ms=1000 * percentile(publish, 99),
        matched_by=matched_by,
        frames=len(subscriber.deliveries),
        skipped_fraction=run.skipped / due if due else 0.0,
        server_cpu_pct=100 * server_cpu / duration,
        server_cpu_ms_per_report=1000 * server_cpu / answered_in_window if answered_in_window else float("nan"),
        fleet_cpu_pct=100 * run.cpu_s / duration,
        subscriber_cpu_pct=100 * subscriber.cpu_s / max(subscriber.listened_s, 1e-9),
        snapshots_s=added[1] if added else None,
        settle_s=added[2] if added else None,
        mirrored_fraction=added[3] if added else None,
        errors=sum(run.errors.values()),
        first_errors=run.first_errors,
        unanswered=run.queued - len(run.reports),
        subscriber_error=subscriber.error,
    )


# ---- one path ------------------------------------------------------------------------------------


def run_path(
    path: str, env: dict[str, str], root: Path, tokens: dict[str, str] | None, scenarios: list[Scenario], s: Settings
) -> tuple[dict[str, str], list[Figures]]:
    """Start a control plane with this telemetry path, grow the fleet scenario by scenario, measure."""
    server = ControlPlane(env, path, root / f"serve-{path}.log")
    boot = server.start()
    say(f"[{path}] control plane up on {server.url} in {boot:.1f} s")
    figures: list[Figures] = []
    fleet: FleetProcess | None = None
    try:
        if tokens is None:
            started = time.monotonic()
            names = [f"bench-{number:04d}" for number in range(max(scenario.nodes for scenario in scenarios))]
            tokens = register_nodes(server.url, s.api_token, names)
            say(f"[{path}] registered {len(tokens)} nodes in {time.monotonic() - started:.1f} s")
        fleet = FleetProcess(server, s.connections)
        names = list(tokens)
        active = 0
        for scenario in scenarios:
            added = None
            if scenario.nodes > active:
                new = names[active : scenario.nodes]
                since, snapshots_s = fleet.add([(name, tokens[name]) for name in new])
                settle_s, mirrored = server.wait_mirrored(new, since, s.settle_s)
                added = (since, snapshots_s, settle_s, mirrored / len(new))
                active = scenario.nodes
            subscriber = SubscriberProcess(server, s.api_token)
            try:
                run, server_cpu = fleet.run(scenario.mode, s.warmup_s, s.duration_s, server)
                time.sleep(s.tail_s)
            finally:
                deliveries = subscriber.stop()
            f = summarize(scenario, path, run, deliveries, server_cpu, added, names[: scenario.nodes])
            figures.append(f)
            say(
                f"[{path}] {scenario.nodes} nodes {scenario.mode}: {f.gpu_samples_per_s:,.0f} GPU samples/s, "
                f"request p50/p99 {fmt(f.request_p50_ms, 'ms')} / {fmt(f.request_p99_ms, 'ms')}, "
                f"to subscriber p50/p99 {fmt(f.delivery_p50_ms, 'ms')} / {fmt(f.delivery_p99_ms, 'ms')} "
                f"({100 * f.seen_fraction:.0f}% seen), server CPU {f.server_cpu_pct:.0f}% "
                f"({f.server_cpu_ms_per_report:.2f} ms/report), errors {f.errors}"
                + (f", skipped {100 * f.skipped_fraction:.0f}%" if f.skipped_fraction else "")
                + (
                    f"; {100 * f.mirrored_fraction:.0f}% of the new nodes mirrored after {f.settle_s:.0f} s"
                    if f.mirrored_fraction is not None and f.settle_s is not None
                    else ""
                )
            )
    finally:
        if fleet is not None:
            leftover = fleet.stop()
            if leftover.get("errors") and figures:
                figures[-1].errors += sum(leftover["errors"].values())
                figures[-1].first_errors += leftover["first_errors"]
        server.stop()
    return tokens, figures


# ---- the table -------------------------------------------------------------------------------------


def fmt(value: float | None, unit: str) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    if value == float("inf"):
        return "not seen"  # not by the end of the tail after the window
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "%":
        return f"{value:.0f}%"
    if unit == "ms" and value >= 100:
        return f"{value:,.0f} ms"
    return f"{value:.2f} ms" if unit == "ms" and value < 10 else f"{value:.1f} {unit}"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def table(results: dict[str, list[Figures]]) -> list[tuple[str, ...]]:
    lean = {f.scenario: f for f in results.get("lean", [])}
    django = {f.scenario: f for f in results.get("django", [])}
    rows: list[tuple[str, ...]] = []

    def add(scenario: str, label: str, get: Callable[[Figures], float | None], unit: str, goal: str = "") -> None:
        a, b = lean.get(scenario), django.get(scenario)
        va, vb = (get(a) if a else None), (get(b) if b else None)
        finite = va is not None and vb and abs(va) != float("inf") and abs(vb) != float("inf")
        ratio = f"{va / vb:.2f}" if finite and va == va and vb == vb else "-"
        rows.append((label, fmt(va, unit), fmt(vb, unit), ratio, goal))

    for key in dict.fromkeys([*lean, *django]):
        f = lean.get(key) or django[key]
        if f.mode == "paced":
            where = f"{f.nodes:,} nodes, 1 report/s each"
            offered = f"offered {f.offered_per_s:,.0f}/s"
            add(key, f"{where}: GPU samples/s accepted", lambda f: f.gpu_samples_per_s, "/s", offered)
            add(key, f"{where}: reports skipped (node still waiting)", lambda f: 100 * f.skipped_fraction, "%")
            add(key, f"{where}: request p50", lambda f: f.request_p50_ms, "ms")
            add(key, f"{where}: request p99", lambda f: f.request_p99_ms, "ms")
            goal = f"< 1 s: {verdict(lean[key].delivery_p99_ms < 1000 * GOAL_P99_S)}" if key in lean else ""
            add(key, f"{where}: report to subscriber p50", lambda f: f.delivery_p50_ms, "ms")
            add(key, f"{where}: report to subscriber p99", lambda f: f.delivery_p99_ms, "ms", goal)
            add(key, f"{where}: report to subscriber max", lambda f: f.delivery_max_ms, "ms")
            add(key, f"{where}: reports seen by the subscriber", lambda f: 100 * f.seen_fraction, "%")
        else:
            where = f"{f.nodes:,} nodes, saturation ({f.connections} connections)"
            goal = ""
            if key in lean:
                goal = f">= 10,000/s: {verdict(lean[key].gpu_samples_per_s >= GOAL_SAMPLES_PER_S)}"
            add(key, f"{where}: GPU samples/s accepted", lambda f: f.gpu_samples_per_s, "/s", goal)
            add(key, f"{where}: request p50", lambda f: f.request_p50_ms, "ms")
            add(key, f"{where}: request p99", lambda f: f.request_p99_ms, "ms")
            add(key, f"{where}: report to subscriber p99", lambda f: f.delivery_p99_ms, "ms")
        add(key, f"{where}: server CPU (all threads)", lambda f: f.server_cpu_pct, "%")
        add(key, f"{where}: server CPU per accepted report", lambda f: f.server_cpu_ms_per_report, "ms")
        if f.mirrored_fraction is not None:
            label = f"{where}: new nodes' first reports in the database at the start"
            add(key, label, lambda f: None if f.mirrored_fraction is None else 100 * f.mirrored_fraction, "%")
    return rows


def print_figures(rows: list[tuple[str, ...]], markdown: bool) -> None:
    print_table(("figure", "lean", "django", "lean/django", "goal"), rows, markdown)


def failures_of(results: dict[str, list[Figures]]) -> list[str]:
    failures = []
    for path, figures in results.items():
        for f in figures:
            if f.errors:
                failures.append(f"[{path}] {f.scenario}: {f.errors} report(s) failed: {f.first_errors}")
            if f.subscriber_error:
                failures.append(f"[{path}] {f.scenario}: the subscriber failed: {f.subscriber_error}")
            if f.frames == 0:
                failures.append(f"[{path}] {f.scenario}: the WebSocket subscriber received no telemetry at all")
    return failures


# ---- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Telemetry ingest benchmark: one control plane, simulated nodes.")
    parser.add_argument("--quick", action="store_true", help="100 nodes, 5 s windows (about 50 s; for CI)")
    parser.add_argument("--nodes", default=None, help="paced node counts, comma-separated (default 100,1000)")
    parser.add_argument("--duration", type=float, default=None, help="seconds measured per scenario (default 20)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of load before measuring (default 3)")
    parser.add_argument(
        "--settle", type=float, default=None, help="most seconds to wait for new nodes' first reports to be mirrored"
    )
    parser.add_argument("--tail", type=float, default=None, help="seconds the subscriber listens after a window")
    parser.add_argument("--connections", type=int, default=100, help="keep-alive connections of the agents")
    parser.add_argument("--paths", default="lean,django", help="telemetry paths to run (default lean,django)")
    parser.add_argument("--server", choices=("uvicorn", "daphne"), default="uvicorn", help="ASGI server")
    # A database of its own: channel-layer groups are per database, not per prefix, so on a shared one the
    # benchmark's telemetry would reach every other infermesh subscriber (and theirs would reach it).
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="default: database 14")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the data folder and server logs")
    args = parser.parse_args(argv)

    quick = args.quick
    counts = sorted({int(n) for n in (args.nodes or ("100" if quick else "100,1000")).split(",")})
    paths = [p for p in args.paths.split(",") if p]
    if not set(paths) <= set(PATHS):
        parser.error(f"--paths: choose from {', '.join(PATHS)}")
    scenarios = [Scenario(f"paced-{n}", "paced", n) for n in counts]
    scenarios.append(Scenario(f"closed-{counts[-1]}", "closed", counts[-1]))

    root = Path(tempfile.mkdtemp(prefix="infermesh-telemetry-bench-"))
    say(f"data folder and logs in {root}; {os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}")
    started = time.monotonic()
    results: dict[str, list[Figures]] = {}
    failures = ["the benchmark did not finish"]
    try:
        env, api_token = prepare(root, args.redis_url)
        env["MESH_ASGI_SERVER"] = args.server
        settings = Settings(
            api_token=api_token,
            connections=args.connections,
            warmup_s=args.warmup if args.warmup is not None else (2.0 if quick else 3.0),
            duration_s=args.duration or (5.0 if quick else 20.0),
            settle_s=args.settle if args.settle is not None else (5.0 if quick else 45.0),
            tail_s=args.tail if args.tail is not None else (2.0 if quick else 5.0),
        )
        say(f"migrated and issued an API token in {time.monotonic() - started:.1f} s")
        tokens = None
        for path in paths:
            tokens, results[path] = run_path(path, env, root, tokens, scenarios, settings)
        failures = failures_of(results)
        say("")
        say(
            f"Telemetry ingest benchmark ({'quick' if quick else 'full'} run): one control-plane process "
            f"({args.server}, Redis), {GPUS_PER_NODE} GPUs per node, {os.cpu_count()} CPUs shared with the simulated "
            f"fleet and the subscriber; {settings.duration_s:.0f} s windows. lean/django: the lean figure "
            f"divided by the Django one."
        )
        rows = table(results)
        print_figures(rows, markdown=False)
        if args.markdown:
            say("")
            print_figures(rows, markdown=True)
        matched = {f.matched_by for figures in results.values() for f in figures}
        say(f"deliveries matched to reports by {', '.join(sorted(matched))}")
    finally:
        if args.json:
            args.json.write_text(json.dumps({p: [asdict(f) for f in fs] for p, fs in results.items()}, indent=2))
    return conclude(root, args.keep, failures, started)


if __name__ == "__main__":
    sys.exit(main())
