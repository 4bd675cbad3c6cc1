"""Writes through `meshcore.registry` from a process of its own, as a management command does.

Run with a replica's environment (its MESH_DATA_DIR): every write goes over that replica's
control socket to the running `serve` process, which commits it on a quorum and projects it
into its database before answering. Prints one JSON object: the latency of each write in
milliseconds (measured around the registry call, after Django has started), the wall time
and this process's CPU time of the whole run, and the errors.

    python -m benchmarks.registry_writer --writes 500 --threads 1 --prefix seq
    python -m benchmarks.registry_writer --writes 500 --fill 10000   # first make the registry hold 10,000 more policies
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import threading
import time
from typing import Any

ACTOR = "benchmark"
SPEC = {"scope": "global", "max_concurrent": 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, required=True, help="writes in all, shared by the threads")
    parser.add_argument("--threads", type=int, default=1, help="concurrent writers (one policy each)")
    parser.add_argument("--warmup", type=int, default=10, help="writes per thread before timing starts")
    parser.add_argument("--prefix", default="bench", help="names of the policies the writers update")
    parser.add_argument("--fill", type=int, default=0, help="first create policies fill-0 .. fill-N-1 where missing")
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "infermesh_site.settings")
    import django

    django.setup()
    from django.db import connection

    from meshcore import registry
    from meshcore.models import Policy
    from meshcore.replication.control import control_socket_path

    if not control_socket_path().exists():
        # Without it the registry would start a replica of its own on the running one's address.
        print(json.dumps({"error": f"no replica runs here ({control_socket_path()} is missing)"}))
        return 2

    filled = fill(args.fill) if args.fill else 0
    names = [f"{args.prefix}-{index}" for index in range(args.threads)]
    created = 0
    for name in names:
        if not Policy.objects.filter(name=name).exists():
            registry.create_policy(actor=ACTOR, name=name, kind="quota", spec=SPEC)
            created += 1

    per_thread = [args.writes // args.threads + (index < args.writes % args.threads) for index in range(args.threads)]
    latencies: list[list[float]] = [[] for _ in names]
    errors: list[str] = []
    start_together = threading.Barrier(args.threads + 1)

    def write(index: int) -> None:
        name = names[index]
        priority = Policy.objects.get(name=name).priority
        try:
            for _ in range(args.warmup):
                priority += 1
                registry.update_policy(actor=ACTOR, name=name, changes={"priority": priority})
        except Exception as error:  # counted and reported; the timed writes still run
            errors.append(f"warm-up: {error}")
        start_together.wait()
        for _ in range(per_thread[index]):
            priority += 1
            started = time.perf_counter()
            try:
                registry.update_policy(actor=ACTOR, name=name, changes={"priority": priority})
            except Exception as error:  # a refused or failed write: counted, not timed
                errors.append(str(error))
                continue
            latencies[index].append((time.perf_counter() - started) * 1000)
        connection.close()

    threads = [threading.Thread(target=write, args=(index,)) for index in range(args.threads)]
    for thread in threads:
        thread.start()
    start_together.wait()
    started, cpu_started = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    answer: dict[str, Any] = {
        "latencies_ms": [value for values in latencies for value in values],
        "elapsed_s": elapsed,
        "cpu_s": cpu,  # this process's CPU during the timed writes, all its threads
        "errors": len(errors),
        "first_errors": errors[:5],
        # Every batch this run proposed (creates, warm-up, timed writes, refused ones): against log entries.
        "proposed": created + args.warmup * args.threads + sum(per_thread),
        "filled": filled,
    }
    print(json.dumps(answer))
    return 0


def fill(count: int, threads: int = 16) -> int:
    """Create the policies fill-0 .. fill-<count - 1> that are missing, through the registry; returns how many."""
    from meshcore import registry
    from meshcore.models import Policy

    present = set(Policy.objects.filter(name__startswith="fill-").values_list("name", flat=True))
    missing = [name for name in (f"fill-{index}" for index in range(count)) if name not in present]

    def create(name: str) -> None:
        registry.create_policy(actor=ACTOR, name=name, kind="quota", spec=SPEC)

    # Many writers at once: their batches share log entries, so filling takes seconds, not minutes.
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, missing))
    return len(missing)


if __name__ == "__main__":
    sys.exit(main())
