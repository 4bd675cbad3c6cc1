"""Replication benchmark: three `manage.py serve` replicas on loopback, each with its own SQLite.

What it measures, on the tuned Raft timing (MESH_RAFT_PROFILE=tuned) and, in the same run, on
PySyncObj's default timing (MESH_RAFT_PROFILE=pysyncobj-defaults) as the baseline:

- sequential commit latency through the registry: one process (`benchmarks.registry_writer`)
  calls `registry.update_policy` N times over a replica's control socket, via the leader and
  via a follower; p50, p99 and sequential writes/s;
- the commit floor: empty batches straight to `Replica.propose` over one kept control-socket
  connection (Raft commit plus the proposing replica's projection, without the registry's
  validation and reads);
- the same through the HTTP API (`PATCH /api/v1/policies/<name>/`, keep-alive client);
- concurrent writers: 8 HTTP clients per replica, and 16 registry threads via the leader;
- a large registry (full run, tuned only): the sequential writes via the leader again once the
  registry holds 10,000 more policies, against the same figure with the small registry (a
  write must not cost more as the fleet's registry grows);
- failover: with writers running on the two other replicas, SIGKILL the leader and time the
  first write (sent after the kill) that is acknowledged;
- full restarts: writers on all three replicas, SIGKILL all three at once, restart them, and
  check that every acknowledged write is on every replica, that the replicas hold the same
  policies and the same state digest, and that no write answered "nothing was written" is there.

    python -m benchmarks.replication --rounds 20    # the full run (about 10 minutes on 2 cores)
    python -m benchmarks.replication --quick        # the CI run: fewer writes, 3 restart rounds

The full run prints PASS or MISS per goal; both runs exit 1 only when a correctness invariant
fails (a lost acknowledged write, replicas that disagree), never on a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import conclude, percentile, say, yardstick_ms
from devtools.cluster import Cluster, ReplicaProcess
from devtools.serve import REPO
from devtools.waiting import wait_until

PROFILES = ("tuned", "pysyncobj-defaults")
GOALS = {
    "p50_ms": 5.0,
    "p99_ms": 20.0,
    "sequential_writes_per_s": 500.0,
    "failover_s": 3.0,
    "lost_writes": 0,
}
SPEC = {"scope": "global", "max_concurrent": 1}
# The registry's words for a write that was refused before anything could apply.
REFUSED_MARK = "nothing was written"
# How often waits look: the failover and restart figures end when a wait sees its condition.
POLL_S = 0.02


# ---- small helpers -------------------------------------------------------------------------


def control(replica: ReplicaProcess, request: dict[str, Any], timeout: float = 3) -> dict[str, Any] | None:
    """Ask the replica over its control socket (the path management commands use); None when it is down."""
    path = replica.data_dir / "raft" / "control.sock"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            connection.connect(str(path))
            connection.sendall(json.dumps(request).encode() + b"\n")
            reply = connection.makefile("rb").readline()
    except OSError:
        return None
    return json.loads(reply) if reply else None


def status(replica: ReplicaProcess) -> dict[str, Any] | None:
    if replica.process is None or replica.process.poll() is not None:
        return None
    answer = control(replica, {"action": "status"})
    return (answer or {}).get("status")


def leader_of(cluster: Cluster) -> ReplicaProcess | None:
    """The leader every running replica agrees on, with a quorum; None while they do not agree."""
    views = [status(r) for r in cluster.running()]
    if not views or any(v is None or not v.get("has_quorum") for v in views):
        return None
    leaders = {v.get("leader") for v in views}
    if len(leaders) != 1 or None in leaders:
        return None
    address = leaders.pop()
    return next((r for r in cluster.replicas if r.raft_address == address), None)


def converged(cluster: Cluster) -> list[dict[str, Any]] | None:
    """Every replica running, agreeing on the leader, with equal digests and its database caught up."""
    if len(cluster.running()) != len(cluster.replicas) or leader_of(cluster) is None:
        return None
    views = [status(r) for r in cluster.replicas]
    if any(v is None or v["state_seq"] != v["projected_seq"] for v in views):
        return None
    if len({v["digest"] for v in views}) != 1:
        return None
    return views


def kill_all(replicas: list[ReplicaProcess]) -> None:
    """SIGKILL every replica before waiting for any: they die together."""
    for replica in replicas:
        if replica.process is not None and replica.process.poll() is None:
            os.kill(replica.process.pid, signal.SIGKILL)
    for replica in replicas:
        if replica.process is not None:
            replica.process.wait(timeout=10)


def cpu_seconds(replicas: list[ReplicaProcess]) -> float:
    """CPU time (user + system) the replicas' processes have used so far; NaN where /proc is missing."""
    return sum(cpu_seconds_each(replicas).values())


def cpu_seconds_each(replicas: list[ReplicaProcess]) -> dict[str, float]:
    """CPU time (user + system) each replica's process has used so far, by name; NaN where /proc is missing."""
    used = {}
    for replica in replicas:
        try:
            fields = Path(f"/proc/{replica.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, AttributeError):
            used[replica.name] = float("nan")
            continue
        used[replica.name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


# ---- one cluster ---------------------------------------------------------------------------


@dataclass
class Outcomes:
    """What the writers learnt about each logical write (one policy name, one idempotency key)."""

    acked: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)  # answered 503 "nothing was written"
    lock: threading.Lock = field(default_factory=threading.Lock)


class BenchCluster:
    def __init__(self, root: Path, profile: str, shared: Path) -> None:
        self.profile = profile
        self.cluster = Cluster(
            root, redis_url=None, MESH_RAFT_PROFILE=profile, MESH_LOG_LEVEL="warning", MESH_API_PAGE_SIZE="1000"
        )
        self.shared = shared
        self.token = ""
        self.outcomes = Outcomes()

    @property
    def replicas(self) -> list[ReplicaProcess]:
        return self.cluster.replicas

    def boot(self) -> float:
        """Migrate (once per run, then copy the fresh database), start the three, wait for a leader."""
        started = time.monotonic()
        static = self.shared / "static"
        template = self.shared / "fresh.sqlite3"
        for replica in self.replicas:
            replica.env["STATIC_ROOT"] = str(static)
        first = self.replicas[0]
        if not static.exists():
            done = first.manage("collectstatic", "--noinput", timeout=600)
            assert done.returncode == 0, done.stderr
        if not template.exists():
            done = first.manage("migrate", "--noinput")
            assert done.returncode == 0, done.stderr
            shutil.copy(first.data_dir / "infermesh.sqlite3", template)
        for replica in self.replicas:
            database = replica.data_dir / "infermesh.sqlite3"
            if not database.exists():
                shutil.copy(template, database)
        for replica in self.replicas:
            replica.start()
        for replica in self.replicas:
            replica.wait_http(60)
        wait_until(lambda: converged(self.cluster), 60, "no agreed leader", interval=POLL_S)
        self.cluster.ensure_admin()
        self.token = self.cluster.issue_token(name="benchmark")
        return time.monotonic() - started

    def stop(self) -> None:
        self.cluster.stop()

    def leader(self) -> ReplicaProcess:
        return wait_until(lambda: leader_of(self.cluster), 30, "no agreed leader", interval=POLL_S)

    def follower(self) -> ReplicaProcess:
        leader = self.leader()
        return next(r for r in self.replicas if r is not leader)

    def client(self, replica: ReplicaProcess, timeout: float = 15) -> httpx.Client:
        return httpx.Client(
            base_url=f"{replica.url}/api/v1", headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout
        )

    # ---- sequential and concurrent writes ----------------------------------------------

    def registry_writes(self, replica: ReplicaProcess, writes: int, threads: int = 1, fill: int = 0) -> dict[str, Any]:
        """`writes` registry calls from one process over `replica`'s control socket.

        `fill`: first make the registry hold that many more policies (not timed, not in the CPU figure).
        """
        if fill:
            self._registry_writer(replica, ["--writes", "0", "--warmup", "0", "--fill", str(fill)])
        prefix = f"reg-{replica.name}-t{threads}"
        cpu_before = cpu_seconds_each(self.replicas)
        index_before = (status(replica) or {}).get("commit_index")
        answer = self._registry_writer(
            replica, ["--writes", str(writes), "--threads", str(threads), "--prefix", prefix]
        )
        cpu = {name: used - cpu_before[name] for name, used in cpu_seconds_each(self.replicas).items()}
        index_after = (status(replica) or {}).get("commit_index")
        latencies = answer["latencies_ms"]
        per_write = 1000 / max(len(latencies), 1)
        others = [used for name, used in cpu.items() if name != replica.name]
        # Log entries the run added (commit index), against the batches it proposed.
        entries = index_after - index_before if index_before is not None and index_after is not None else 0
        return {
            "batches_per_entry": answer["proposed"] / entries if entries > 0 else 0.0,
            # Of the three replicas together, warm-up writes included (a slight overestimate).
            "replica_cpu_ms_per_write": sum(cpu.values()) * per_write,
            # Where it went: the replica written through, each of the two others (their mean), the writer.
            "own_replica_cpu_ms_per_write": cpu[replica.name] * per_write,
            "other_replica_cpu_ms_per_write": sum(others) / max(len(others), 1) * per_write,
            "writer_cpu_ms_per_write": answer["cpu_s"] * per_write,
            "writes": len(latencies),
            "threads": threads,
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "writes_per_s": len(latencies) / answer["elapsed_s"],
            "errors": answer["errors"],
            "first_errors": answer["first_errors"],
        }

    def _registry_writer(self, replica: ReplicaProcess, arguments: list[str]) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.registry_writer", *arguments],
            cwd=REPO,
            env=replica.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"registry writer failed on {replica.name}: {done.stdout}{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def raw_commits(self, replica: ReplicaProcess, writes: int, warmup: int = 10) -> dict[str, Any]:
        """The commit floor: empty batches straight to `Replica.propose` over the control socket.

        No registry, no validation and no ORM in the client; the replica still commits each batch on
        a quorum and records it in its database before answering. One kept connection, as a command's
        registry calls use (a new connection per batch would also time a new thread and its database
        connection on the replica).
        """
        latencies = []
        errors = 0
        path = replica.data_dir / "raft" / "control.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(30)
            connection.connect(str(path))
            reader = connection.makefile("rb")
            for index in range(warmup + writes):
                batch = {"key": f"benchmark-{uuid.uuid4().hex}", "actor": "benchmark", "ops": [], "events": []}
                began = time.perf_counter()
                connection.sendall(json.dumps({"action": "propose", "batch": batch}).encode() + b"\n")
                answer = json.loads(reader.readline() or b"null")
                if not answer or "result" not in answer:
                    errors += 1
                elif index >= warmup:
                    latencies.append((time.perf_counter() - began) * 1000)
        return {
            "writes": len(latencies),
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "writes_per_s": 1000 * len(latencies) / sum(latencies) if latencies else 0.0,
            "errors": errors,
        }

    def http_sequential(self, replica: ReplicaProcess, writes: int, warmup: int = 10) -> dict[str, Any]:
        name = f"http-{replica.name}"
        latencies = []
        errors = 0
        with self.client(replica) as client:
            created = client.post("/policies/", json={"name": name, "kind": "quota", "spec": SPEC})
            assert created.status_code in (201, 409), created.text
            priority = client.get(f"/policies/{name}/").json()["priority"]
            started = None
            for index in range(warmup + writes):
                if index == warmup:
                    started = time.perf_counter()
                priority += 1
                began = time.perf_counter()
                answer = client.patch(f"/policies/{name}/", json={"priority": priority})
                if answer.status_code != 200:
                    errors += 1
                elif index >= warmup:
                    latencies.append((time.perf_counter() - began) * 1000)
            elapsed = time.perf_counter() - started
        return {
            "writes": len(latencies),
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "writes_per_s": len(latencies) / elapsed,
            "errors": errors,
        }

    def http_concurrent(self, per_replica: int, seconds: float) -> dict[str, Any]:
        """`per_replica` keep-alive clients on each replica, each updating its own policy, for `seconds`."""
        writers = [(replica, index) for replica in self.replicas for index in range(per_replica)]
        latencies: list[float] = []
        errors: list[int] = []
        first_errors: list[str] = []  # what the first few failures were, for the report
        ready = threading.Barrier(len(writers) + 1)
        go = threading.Event()  # set once the deadline is known
        deadline = [0.0]

        def write(replica: ReplicaProcess, index: int) -> None:
            name = f"conc-{replica.name}-{index}"
            mine: list[float] = []
            failed = 0
            with self.client(replica, timeout=30) as client:
                created = client.post("/policies/", json={"name": name, "kind": "quota", "spec": SPEC})
                priority = client.get(f"/policies/{name}/").json()["priority"] if created.status_code == 409 else 0
                ready.wait()
                go.wait()
                while time.monotonic() < deadline[0]:
                    priority += 1
                    began = time.perf_counter()
                    try:
                        answer = client.patch(f"/policies/{name}/", json={"priority": priority})
                        failure = None if answer.status_code == 200 else f"{answer.status_code} {answer.text[:300]}"
                    except httpx.HTTPError as error:
                        failure = f"{type(error).__name__}: {error}"
                    if failure is None:
                        mine.append((time.perf_counter() - began) * 1000)
                    else:
                        failed += 1
                        if len(first_errors) < 5:
                            first_errors.append(f"{replica.name}: {failure}")
            latencies.extend(mine)
            errors.append(failed)

        threads = [threading.Thread(target=write, args=writer) for writer in writers]
        for thread in threads:
            thread.start()
        ready.wait()
        started = time.monotonic()
        deadline[0] = started + seconds
        go.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        return {
            "writers": len(writers),
            "writes": len(latencies),
            "writes_per_s": len(latencies) / elapsed,
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "errors": sum(errors),
            "first_errors": first_errors,
        }

    # ---- writers that keep going through failures ----------------------------------------

    def start_writers(self, targets: list[ReplicaProcess], tag: str) -> WriterPool:
        return WriterPool(self, targets, tag)

    # ---- failover ------------------------------------------------------------------------

    def failover(self, trial: int) -> dict[str, Any]:
        """Kill the leader under load; time until a write sent after the kill is acknowledged."""
        old = self.leader()
        old_address = old.raft_address
        survivors = [r for r in self.replicas if r is not old]
        pool = self.start_writers(survivors, f"f{trial}")
        wait_until(lambda: pool.acked_count() >= 10, 30, "writers did not get going before the kill", interval=POLL_S)
        killed_at = time.monotonic()
        os.kill(old.process.pid, signal.SIGKILL)
        elected_at: float | None = None

        def new_leader() -> bool:
            nonlocal elected_at
            views = [status(r) for r in survivors]
            if elected_at is None and any(
                v and v.get("role") == "leader" and v.get("self") != old_address for v in views
            ):
                elected_at = time.monotonic()
            return pool.first_ack_after(killed_at) is not None and elected_at is not None

        wait_until(new_leader, 30, interval=POLL_S)  # none within 30 s: the figures below say inf
        first = pool.first_ack_after(killed_at)
        time.sleep(0.3)
        pool.stop()
        old.process.wait(timeout=10)
        old.start()
        old.wait_http(60)
        recovered = time.monotonic()
        wait_until(lambda: converged(self.cluster), 60, "the killed leader did not catch up", interval=POLL_S)
        return {
            "first_write_s": (first - killed_at) if first is not None else float("inf"),
            "new_leader_s": (elected_at - killed_at) if elected_at is not None else float("inf"),
            "rejoin_s": time.monotonic() - recovered,
            "errors": pool.errors,
        }

    # ---- full restarts -------------------------------------------------------------------

    def restart_round(self, number: int, min_acked: int) -> dict[str, Any]:
        """Write, SIGKILL all three at once, restart, and check every acknowledged write everywhere."""
        pool = self.start_writers(self.replicas, f"r{number}")
        wait_until(lambda: pool.acked_count() >= min_acked, 120, f"round {number}: writers stalled", interval=POLL_S)
        kill_all(self.replicas)
        pool.stop()
        restarted_at = time.monotonic()
        for replica in self.replicas:
            replica.start()
        probe = self.start_writers([self.replicas[number % len(self.replicas)]], f"r{number}-probe")
        try:
            wait_until(
                lambda: probe.acked_count() >= 1, 120, f"round {number}: no write after the restart", interval=POLL_S
            )
            first_write = time.monotonic() - restarted_at
        finally:
            probe.stop()
        views = wait_until(
            lambda: converged(self.cluster), 120, f"round {number}: the replicas did not converge", interval=POLL_S
        )
        check = self.check_writes()
        return {
            "round": number,
            "acked": pool.acked_count(),
            "in_doubt": pool.in_doubt,
            "restart_to_first_write_s": first_write,
            "digests_equal": len({v["digest"] for v in views}) == 1,
            **check,
        }

    def policy_names(self, replica: ReplicaProcess) -> set[str]:
        names: set[str] = set()
        with self.client(replica, timeout=30) as client:
            url: str | None = "/policies/?page_size=1000"
            while url:
                page = client.get(url)
                page.raise_for_status()
                body = page.json()
                names.update(item["name"] for item in body["results"])
                url = body.get("next")
        return names

    def check_writes(self) -> dict[str, Any]:
        """Every acknowledged write on every replica; all replicas the same; no refused write applied."""
        held = {replica.name: self.policy_names(replica) for replica in self.replicas}
        with self.outcomes.lock:
            acked = set(self.outcomes.acked)
            refused = set(self.outcomes.refused)
        lost = {name: sorted(acked - names) for name, names in held.items()}
        everywhere = set.union(*held.values())
        return {
            "acked_total": len(acked),
            "lost": max(len(missing) for missing in lost.values()),
            "lost_names": sorted({n for missing in lost.values() for n in missing})[:10],
            "replicas_agree": len({frozenset(names) for names in held.values()}) == 1,
            "refused_but_applied": sorted(refused & everywhere),
        }


class WriterPool:
    """One thread per target replica creating policies, each with its own idempotency key.

    A write that times out, loses its connection or gets a 503 that may still apply is retried
    with the same key (so it applies once); one answered 503 "nothing was written" is dropped and
    remembered, to check afterwards that it really is nowhere.
    """

    def __init__(self, bench: BenchCluster, targets: list[ReplicaProcess], tag: str) -> None:
        self.bench = bench
        self.tag = tag
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._acks: list[tuple[float, float]] = []  # (sent, acknowledged) per acknowledged write
        self.errors = 0
        self.in_doubt = 0
        self._threads = [
            threading.Thread(target=self._run, args=(replica,), daemon=True, name=f"writer-{tag}-{replica.name}")
            for replica in targets
        ]
        for thread in self._threads:
            thread.start()

    def acked_count(self) -> int:
        with self._lock:
            return len(self._acks)

    def first_ack_after(self, moment: float) -> float | None:
        """When the first write sent after `moment` was acknowledged."""
        with self._lock:
            times = [acked for sent, acked in self._acks if sent > moment]
        return min(times) if times else None

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, replica: ReplicaProcess) -> None:
        outcomes = self.bench.outcomes
        client = self.bench.client(replica, timeout=5)
        number = 0
        try:
            while not self._stopping.is_set():
                number += 1
                name = f"{self.tag}-{replica.name}-{number}"
                key = str(uuid.uuid4())
                body = {"name": name, "kind": "quota", "spec": SPEC}
                while not self._stopping.is_set():
                    sent = time.monotonic()
                    try:
                        answer = client.post("/policies/", json=body, headers={"Idempotency-Key": key})
                    except httpx.HTTPError:
                        answer = None
                    if answer is not None and answer.status_code == 201:
                        with self._lock:
                            self._acks.append((sent, time.monotonic()))
                        with outcomes.lock:
                            outcomes.acked.add(name)
                        break
                    self.errors += 1
                    if answer is not None and answer.status_code == 503 and REFUSED_MARK in answer.text.lower():
                        with outcomes.lock:
                            outcomes.refused.add(name)
                        break
                    if answer is not None and answer.status_code not in (502, 503, 504):
                        raise RuntimeError(f"{replica.name} answered {answer.status_code}: {answer.text[:300]}")
                    time.sleep(0.02)
                else:
                    self.in_doubt += 1  # stopped while this write's outcome was unknown
        finally:
            client.close()


# ---- the run -------------------------------------------------------------------------------


@dataclass
class Plan:
    quick: bool
    writes: int  # sequential writes per measurement (tuned)
    baseline_writes: int
    concurrent_seconds: float
    failovers: int
    baseline_failovers: int
    rounds: int
    baseline_rounds: int
    acked_per_round: int
    large_registry: int  # policies added for the large-registry figure (0: not measured)


def measure(bench: BenchCluster, plan: Plan, baseline: bool) -> dict[str, Any]:
    writes = plan.baseline_writes if baseline else plan.writes
    figures: dict[str, Any] = {"profile": bench.profile}
    say(f"[{bench.profile}] booting three replicas")
    figures["boot_s"] = bench.boot()
    leader, follower = bench.leader(), bench.follower()
    say(f"[{bench.profile}] up in {figures['boot_s']:.1f} s; leader {leader.name}")

    figures["raw_leader"] = bench.raw_commits(leader, writes)
    figures["raw_follower"] = bench.raw_commits(follower, writes)
    figures["registry_leader"] = bench.registry_writes(leader, writes)
    figures["registry_follower"] = bench.registry_writes(follower, writes)
    figures["http_leader"] = bench.http_sequential(leader, max(writes // 2, 20))
    figures["http_follower"] = bench.http_sequential(follower, max(writes // 2, 20))
    for key in ("raw_leader", "raw_follower", "registry_leader", "registry_follower", "http_leader", "http_follower"):
        f = figures[key]
        say(
            f"[{bench.profile}] {key}: p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms, "
            f"{f['writes_per_s']:.0f} writes/s ({f['writes']} writes, {f['errors']} errors)"
        )
    if baseline and plan.quick:
        return finish(bench, figures)  # the quick run compares sequential latency only
    figures["http_concurrent"] = bench.http_concurrent(8, plan.concurrent_seconds)
    figures["registry_concurrent"] = bench.registry_writes(bench.leader(), max(writes // 2, 32), threads=16)
    for key in ("http_concurrent", "registry_concurrent"):
        f = figures[key]
        say(
            f"[{bench.profile}] {key}: {f['writes_per_s']:.0f} writes/s, p50 {f['p50_ms']:.1f} ms, "
            f"p99 {f['p99_ms']:.1f} ms ({f['writes']} writes, {f['errors']} errors)"
        )
        for error in f.get("first_errors", []):
            say(f"[{bench.profile}] {key}: error: {error}")

    figures["failovers"] = []
    for trial in range(plan.baseline_failovers if baseline else plan.failovers):
        result = bench.failover(trial)
        figures["failovers"].append(result)
        say(
            f"[{bench.profile}] failover {trial + 1}: first write {result['first_write_s']:.2f} s after the kill, "
            f"new leader seen at {result['new_leader_s']:.2f} s; old leader caught up {result['rejoin_s']:.1f} s "
            "after restarting"
        )

    rounds = plan.baseline_rounds if baseline else plan.rounds
    figures["rounds"] = []
    for number in range(1, rounds + 1):
        result = bench.restart_round(number, plan.acked_per_round)
        figures["rounds"].append(result)
        say(
            f"[{bench.profile}] restart round {number}/{rounds}: {result['acked']} acknowledged this round "
            f"({result['acked_total']} in all), lost {result['lost']}, in doubt {result['in_doubt']}, "
            f"digests equal {result['digests_equal']}, replicas agree {result['replicas_agree']}, "
            f"first write {result['restart_to_first_write_s']:.1f} s after restarting"
        )
    if plan.large_registry and not baseline:
        # Last: the 10,000 policies would lengthen every replay at start (the restart figures) if filled earlier.
        large = bench.registry_writes(bench.leader(), writes, fill=plan.large_registry)
        figures["registry_large"] = {**large, "policies_added": plan.large_registry}
        say(
            f"[{bench.profile}] registry_large ({plan.large_registry} more policies): p50 {large['p50_ms']:.1f} ms, "
            f"p99 {large['p99_ms']:.1f} ms, {large['writes_per_s']:.0f} writes/s ({large['errors']} errors)"
        )
    return finish(bench, figures)


def finish(bench: BenchCluster, figures: dict[str, Any]) -> dict[str, Any]:
    figures.setdefault("failovers", [])
    figures.setdefault("rounds", [])
    figures["final_check"] = bench.check_writes()
    return figures


def report(tuned: dict[str, Any], baseline: dict[str, Any] | None, quick: bool) -> list[str]:
    """Print the table (PASS/MISS per goal in the full run); return the correctness failures."""
    base = baseline or {}
    rows: list[tuple[str, str, str, str, str]] = []

    def verdict(met: bool) -> str:
        return "" if quick else (" PASS" if met else " MISS")

    def add(label: str, tuned_value: float, base_value: float | None, unit: str, goal: str = "") -> None:
        """One row; the ratio says how many times better the tuned profile is (lower is better for ms and s)."""
        formats = {"ms": "{:.1f} ms", "s": "{:.2f} s", "/s": "{:.0f}/s", "x": "{:.1f}", "ratio": "{:.2f}"}
        shown = formats[unit].format(base_value) if base_value is not None else "-"
        ratio = ""
        if base_value is not None and tuned_value and base_value:
            higher_is_better = unit in ("/s", "x")
            ratio = f"{(tuned_value / base_value if higher_is_better else base_value / tuned_value):.1f}x"
        rows.append((label, formats[unit].format(tuned_value), shown, ratio, goal))

    def pick(key: str, sub: str) -> float | None:
        return base[key][sub] if key in base else None

    for key, where in (("registry_leader", "via the leader"), ("registry_follower", "via a follower")):
        f = tuned[key]
        add(
            f"registry, sequential, {where}: p50",
            f["p50_ms"],
            pick(key, "p50_ms"),
            "ms",
            "<= 5 ms" + verdict(f["p50_ms"] <= GOALS["p50_ms"]),
        )
        add(
            f"registry, sequential, {where}: p99",
            f["p99_ms"],
            pick(key, "p99_ms"),
            "ms",
            "<= 20 ms" + verdict(f["p99_ms"] <= GOALS["p99_ms"]),
        )
        add(
            f"registry, sequential, {where}: writes/s",
            f["writes_per_s"],
            pick(key, "writes_per_s"),
            "/s",
            ">= 500/s" + verdict(f["writes_per_s"] >= GOALS["sequential_writes_per_s"]),
        )
    add(
        "registry, sequential: CPU per write, three replicas together",
        tuned["registry_leader"]["replica_cpu_ms_per_write"],
        pick("registry_leader", "replica_cpu_ms_per_write"),
        "ms",
    )
    # A sequential write passes from the writer to the leader to a follower and back, one step
    # after another: on a machine with few cores, what those steps cost in CPU bounds one writer's pace.
    for sub, whose in (
        ("writer_cpu_ms_per_write", "the writer's process"),
        ("own_replica_cpu_ms_per_write", "the leader"),
        ("other_replica_cpu_ms_per_write", "each follower"),
    ):
        add(
            f"registry, sequential, via the leader: CPU per write, {whose}",
            tuned["registry_leader"][sub],
            pick("registry_leader", sub),
            "ms",
        )
    for key, where in (("raw_leader", "via the leader"), ("raw_follower", "via a follower")):
        add(
            f"commit floor (empty batch, control socket), {where}: p50", tuned[key]["p50_ms"], pick(key, "p50_ms"), "ms"
        )
        add(
            f"commit floor (empty batch, control socket), {where}: p99", tuned[key]["p99_ms"], pick(key, "p99_ms"), "ms"
        )
    for key, where in (("http_leader", "via the leader"), ("http_follower", "via a follower")):
        add(f"HTTP PATCH, sequential, {where}: p50", tuned[key]["p50_ms"], pick(key, "p50_ms"), "ms")
        add(f"HTTP PATCH, sequential, {where}: p99", tuned[key]["p99_ms"], pick(key, "p99_ms"), "ms")
    c = tuned["http_concurrent"]
    add(
        f"HTTP, {c['writers']} concurrent writers: writes/s",
        c["writes_per_s"],
        pick("http_concurrent", "writes_per_s"),
        "/s",
    )
    add(f"HTTP, {c['writers']} concurrent writers: p99", c["p99_ms"], pick("http_concurrent", "p99_ms"), "ms")
    r = tuned["registry_concurrent"]
    add(
        f"registry, {r['threads']} threads via the leader: writes/s",
        r["writes_per_s"],
        pick("registry_concurrent", "writes_per_s"),
        "/s",
        f"({r['errors']} errors)" if r["errors"] else "",
    )
    add(
        f"registry, {r['threads']} threads via the leader: batches per log entry",
        r["batches_per_entry"],
        pick("registry_concurrent", "batches_per_entry"),
        "x",
    )
    if "registry_large" in tuned:
        large, small = tuned["registry_large"], tuned["registry_leader"]
        where = f"via the leader, {large['policies_added']:,} more policies"
        add(f"registry, sequential, {where}: p50", large["p50_ms"], None, "ms")
        add(f"registry, sequential, {where}: writes/s", large["writes_per_s"], None, "/s")
        # Against the small registry in the same run: 1.0 means a write costs the same at any size.
        add(
            f"registry, sequential, {where}: writes/s against the small registry",
            large["writes_per_s"] / small["writes_per_s"],
            None,
            "ratio",
        )

    def failover(figures: dict[str, Any] | None, how: str) -> float | None:
        if not figures or not figures["failovers"]:
            return None
        times = [f["first_write_s"] for f in figures["failovers"]]
        return max(times) if how == "worst" else percentile(times, 50)

    kills = len(tuned["failovers"])
    if kills:
        add(
            f"failover, leader SIGKILL to first committed write ({kills}x): median",
            failover(tuned, "median"),
            failover(baseline, "median"),
            "s",
        )
        worst = failover(tuned, "worst")
        add(
            f"failover, leader SIGKILL to first committed write ({kills}x): worst",
            worst,
            failover(baseline, "worst"),
            "s",
            "<= 3 s" + verdict(worst <= GOALS["failover_s"]),
        )

    def restart(figures: dict[str, Any] | None) -> float | None:
        if not figures or not figures["rounds"]:
            return None
        return percentile([r["restart_to_first_write_s"] for r in figures["rounds"]], 50)

    def losses(figures: dict[str, Any]) -> tuple[int, int, int]:
        lost = max([r["lost"] for r in figures["rounds"]] + [figures["final_check"]["lost"]])
        return len(figures["rounds"]), figures["final_check"]["acked_total"], lost

    if tuned["rounds"]:
        add("full restart (SIGKILL all three): restart to first write, median", restart(tuned), restart(baseline), "s")
    rounds, acked, lost = losses(tuned)
    base_losses = "-" if not baseline or not baseline["rounds"] else "{} / {} / {}".format(*losses(baseline))
    rows.append(
        (
            "full restarts: rounds / acknowledged writes / lost",
            f"{rounds} / {acked} / {lost}",
            base_losses,
            "",
            "0 lost" + verdict(lost == 0),
        )
    )

    header = ("figure", "tuned", "pysyncobj defaults", "ratio", "goal")
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]
    say("")
    say(
        f"Replication benchmark ({'quick' if quick else 'full'} run): 3 replicas on 127.0.0.1, one SQLite "
        f"database each, {os.cpu_count()} CPUs. ratio: how many times better the tuned timing is."
    )
    for line in (header, tuple("-" * width for width in widths), *rows):
        say("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())

    failures = []
    for figures in filter(None, (tuned, baseline)):
        name = figures["profile"]
        for r in figures["rounds"]:
            if r["lost"]:
                failures.append(f"[{name}] round {r['round']}: {r['lost']} acknowledged writes lost: {r['lost_names']}")
            if not r["digests_equal"] or not r["replicas_agree"]:
                failures.append(f"[{name}] round {r['round']}: the replicas disagree after restarting")
        final = figures["final_check"]
        if final["lost"]:
            failures.append(f"[{name}] at the end: {final['lost']} acknowledged writes lost: {final['lost_names']}")
        if not final["replicas_agree"]:
            failures.append(f"[{name}] at the end: the replicas hold different policies")
        if final["refused_but_applied"]:
            say(
                f"NOTE [{name}]: {len(final['refused_but_applied'])} write(s) answered 503 '{REFUSED_MARK}' "
                f"were applied after all: {final['refused_but_applied'][:5]}"
            )
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Replication benchmark: three replicas on loopback.")
    parser.add_argument("--quick", action="store_true", help="the short CI version (about 2 minutes)")
    parser.add_argument("--rounds", type=int, default=None, help="full-restart rounds (default 20, quick 3)")
    parser.add_argument("--writes", type=int, default=None, help="sequential writes per figure (default 1000)")
    parser.add_argument("--failovers", type=int, default=None, help="leader kills (default 5, quick 1)")
    parser.add_argument(
        "--large-registry",
        type=int,
        default=None,
        help="policies added for the large-registry figure (default 10000, quick 0)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the PySyncObj-defaults cluster")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the replicas' data folders and logs")
    args = parser.parse_args(argv)

    quick = args.quick
    plan = Plan(
        quick=quick,
        writes=args.writes or (100 if quick else 1000),
        baseline_writes=min(args.writes or 1000, 30 if quick else 200),
        concurrent_seconds=3 if quick else 10,
        failovers=args.failovers if args.failovers is not None else (1 if quick else 5),
        baseline_failovers=0 if quick else 5,
        rounds=args.rounds if args.rounds is not None else (3 if quick else 20),
        baseline_rounds=0 if quick else 3,
        acked_per_round=15 if quick else 40,
        large_registry=args.large_registry if args.large_registry is not None else (0 if quick else 10_000),
    )
    # One SQLite database per replica, whatever the caller's environment says.
    os.environ.pop("DATABASE_URL", None)
    root = Path(tempfile.mkdtemp(prefix="infermesh-replication-bench-"))
    say(f"data folders and logs in {root}; load average before: {os.getloadavg()[0]:.2f}")
    started = time.monotonic()
    results: dict[str, Any] = {"yardstick_ms": [yardstick_ms()]}
    failures: list[str] = ["the benchmark did not finish"]
    try:
        for profile in PROFILES[:1] if args.no_baseline else PROFILES:
            bench = BenchCluster(root / profile, profile, root)
            try:
                results[profile] = measure(bench, plan, baseline=profile != "tuned")
            finally:
                bench.stop()
        failures = report(results["tuned"], results.get("pysyncobj-defaults"), quick)
        results["yardstick_ms"].append(yardstick_ms())
        say(
            "machine yardstick (benchmarks.common.yardstick_ms, lower is faster; compare runs on other "
            "machines by it): {:.0f} ms at the start, {:.0f} ms at the end".format(*results["yardstick_ms"])
        )
    finally:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    return conclude(root, args.keep, failures, started)


if __name__ == "__main__":
    sys.exit(main())
