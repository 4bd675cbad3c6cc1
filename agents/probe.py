"""`python -m agents.probe`: what the agent's GPU collector reads on this host, and how long a read takes.

    python -m agents.probe                 # one sample of every GPU, as JSON, the way a report carries it
    python -m agents.probe --samples 50    # and the time of each collect(), p50 and worst

Needs no control plane, broker or Django: run it on a GPU host before starting the agent, to see
which fields the GPU answers, which it does not support, and which fail (named in `errors`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from agents.gpus import MODES, GpuCollector, make_gpu_collector


def time_collects(collector: GpuCollector, samples: int, interval_s: float) -> list[float]:
    """Milliseconds taken by each of `samples` collect() calls, `interval_s` apart."""
    durations_ms = []
    for _ in range(samples):
        started = time.perf_counter()
        collector.collect()
        durations_ms.append((time.perf_counter() - started) * 1000)
        time.sleep(interval_s)
    return durations_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", choices=MODES, default="nvml", help="Collector to probe (default nvml).")
    parser.add_argument("--samples", type=int, default=0, help="Time this many further collect() calls.")
    parser.add_argument("--interval", type=float, default=0.1, help="Seconds between timed calls.")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    collector = make_gpu_collector(args.gpus)
    try:
        started = time.perf_counter()
        first = collector.collect()
        first_ms = (time.perf_counter() - started) * 1000
        durations_ms = time_collects(collector, args.samples, args.interval) if args.samples > 0 else []
    finally:
        collector.close()
    print(json.dumps(first, indent=2, sort_keys=True))
    print(f"first collect (NVML initialisation included): {first_ms:.1f} ms", file=sys.stderr)
    if durations_ms:
        print(
            f"collect() over {len(durations_ms)} calls: p50 {statistics.median(durations_ms):.2f} ms, "
            f"worst {max(durations_ms):.2f} ms, GPUs {len(first['gpus'])}",
            file=sys.stderr,
        )
    return 0 if first["gpus"] else 1


if __name__ == "__main__":
    sys.exit(main())
