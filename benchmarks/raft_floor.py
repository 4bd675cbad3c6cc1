"""PySyncObj by itself: the fastest sequential commit a three-replica infermesh cluster could have here.

Three processes on loopback run a SyncObj with infermesh's timing (`TUNED_TIMING`) and a disk
journal each, replicating a method that only counts. The leader commits a registry-sized batch
(a policy update: key, actor, one operation, one event) N times, one after the other, and waits
for each commit. No Django, no database, no registry: what is left is PySyncObj's transport
(pickle, framing, the encryption with a shared password), its tick threads and the scheduler.

Measured four ways in one run: as infermesh runs it (a password, messages sealed with AES-GCM-SIV:
`meshcore.replication.cipher`; small messages framed without compression:
`meshcore.replication.framing`); with PySyncObj's own Fernet, the baseline for the cipher; with
Fernet and PySyncObj's own framing (zlib on every message), the baseline for the framing; and
without a password, the baseline that shows what the encryption costs.

    python -m benchmarks.raft_floor                       # 3 passes of 2,000 commits per configuration
    python -m benchmarks.raft_floor --writes 300 --passes 1
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from typing import Any

from benchmarks.common import percentile, say, yardstick_ms

BATCH = {
    "format": 1,
    "key": "benchmark:3f0c8a5e2b7d4c1f9a6e8b0d2c4f6a8e",
    "actor": "benchmark",
    "ops": [
        {
            "op": "update",
            "kind": "policy",
            "id": 1,
            "data": {"priority": 1234, "updated_at": "2026-11-27T05:00:00.000000+00:00"},
            "expected_version": None,
        }
    ],
    "events": [{"type": "POLICY_UPDATED", "node": None, "data": {"name": "fair-share", "changed": ["priority"]}}],
}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def replica(
    index: int,
    ports: list[int],
    password: str | None,
    cipher: str,
    framed: bool,
    folder: str,
    writes: int,
    results: Any,
) -> None:
    """One replica; the one that becomes leader runs the writes and reports."""
    from pysyncobj import SyncObjConf, replicated

    from meshcore.replication import framing
    from meshcore.replication.cipher import RaftCipher
    from meshcore.replication.raft import TUNED_TIMING, _SyncObj

    if framed:
        framing.install()

    class Counter(_SyncObj):  # infermesh's SyncObj: it takes the cipher
        def __init__(self, address: str, peers: list[str], conf: SyncObjConf) -> None:
            super().__init__(address, peers, conf, encryptor=RaftCipher(password or "", cipher))
            self.applied = 0

        @replicated
        def apply_batch(self, batch: dict[str, Any]) -> int:
            self.applied += 1
            return self.applied

    conf = SyncObjConf(password=password, journalFile=f"{folder}/journal-{index}", useFork=False, **TUNED_TIMING)
    addresses = [f"127.0.0.1:{port}" for port in ports]
    counter = Counter(addresses[index], [a for a in addresses if a != addresses[index]], conf)
    deadline = time.monotonic() + 30
    while not (counter._getLeader() is not None and counter.isReady()):
        if time.monotonic() > deadline:
            results.put({"error": "no leader within 30 s"})
            return
        time.sleep(0.05)
    if not counter._isLeader():
        time.sleep(3600)  # a follower: answers until the parent ends it
        return
    for _ in range(50):  # warm-up
        counter.apply_batch(BATCH, sync=True, timeout=5)
    cpu_before = os.times()
    latencies = []
    started = time.perf_counter()
    for _ in range(writes):
        began = time.perf_counter()
        counter.apply_batch(BATCH, sync=True, timeout=5)
        latencies.append((time.perf_counter() - began) * 1000)
    elapsed = time.perf_counter() - started
    cpu_after = os.times()
    results.put(
        {
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "writes_per_s": writes / elapsed,
            "leader_cpu_ms_per_write": (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system)
            * 1000
            / writes,
        }
    )


def measure(password: str | None, cipher: str, framed: bool, writes: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    ports = free_ports(3)
    with tempfile.TemporaryDirectory(prefix="infermesh-raft-floor-") as folder:
        processes = [
            context.Process(
                target=replica, args=(index, ports, password, cipher, framed, folder, writes, results), daemon=True
            )
            for index in range(3)
        ]
        for process in processes:
            process.start()
        try:
            return results.get(timeout=60 + writes * 0.05)
        finally:
            for process in processes:
                process.kill()
                process.join(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=2000, help="sequential commits per configuration and pass")
    parser.add_argument("--passes", type=int, default=3, help="passes over the configurations, in turn")
    args = parser.parse_args(argv)
    say(f"load average before: {os.getloadavg()[0]:.2f}; machine yardstick {yardstick_ms():.0f} ms (lower is faster)")
    configurations = (
        ("AES-GCM-SIV, infermesh's framing (as it runs)", "benchmark-password", "aes-gcm-siv", True),
        ("Fernet, infermesh's framing (baseline)", "benchmark-password", "fernet", True),
        ("Fernet, PySyncObj's zlib framing (baseline)", "benchmark-password", "fernet", False),
        ("no password, infermesh's framing (baseline)", None, "aes-gcm-siv", True),
    )
    passes: dict[str, list[dict[str, Any]]] = {label: [] for label, *_ in configurations}
    # In turn, pass after pass: this machine's speed drifts within minutes, and each figure is a median of passes.
    for _ in range(args.passes):
        for label, password, cipher, framed in configurations:
            figures = measure(password, cipher, framed, args.writes)
            if "error" in figures:
                say(f"FAILED: {label}: {figures['error']}")
                return 1
            passes[label].append(figures)
    medians = {
        label: {key: statistics.median(figures[key] for figures in runs) for key in runs[0]}
        for label, runs in passes.items()
    }
    say(f"{'PySyncObj alone, 3 replicas, sequential commits':<50} {'p50':>8} {'p99':>8} {'commits/s':>10} {'CPU':>10}")
    for label, f in medians.items():
        say(
            f"{label:<50} {f['p50_ms']:>5.2f} ms {f['p99_ms']:>5.2f} ms {f['writes_per_s']:>8.0f}/s "
            f"{f['leader_cpu_ms_per_write']:>5.2f} ms (leader, per commit)"
        )
    say(f"(medians of {args.passes} passes of {args.writes} commits each)")
    tuned, fernet, zlib_framed, plain = medians.values()
    say(f"cipher: PySyncObj's Fernet costs {fernet['p50_ms'] / tuned['p50_ms']:.2f}x the p50 of a commit")
    say(f"framing: PySyncObj's zlib costs {zlib_framed['p50_ms'] / fernet['p50_ms']:.2f}x the p50 of a Fernet commit")
    say(f"encryption costs {tuned['p50_ms'] / plain['p50_ms']:.2f}x the p50 of a commit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
