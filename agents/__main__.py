"""`python -m agents`: start the agent on a GPU host.

    python -m agents --node gpu-01 --control-plane https://mesh.example:8000 \\
        --token-file /etc/infermesh/node-token --triton http://127.0.0.1:8000 \\
        --broker redis://:PASSWORD@broker:6379/0

It runs a Celery worker (thread pool, embedded beat) consuming `agents.<node>`. Every
option has a `MESH_AGENT_*` variable; the token is read from a file or the environment,
never from the command line, where other users of the host could read it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from agents.agent import AgentConfig, AgentConfigError


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m agents", description="Run the infermesh agent on a GPU host.")
    parser.add_argument("--node", default=os.environ.get("MESH_AGENT_NODE"), help="This host's node name.")
    parser.add_argument(
        "--control-plane", default=os.environ.get("MESH_AGENT_CONTROL_PLANE"), help="The control plane's URL."
    )
    parser.add_argument(
        "--token-file", default=os.environ.get("MESH_AGENT_TOKEN_FILE"), help="File holding the node's token."
    )
    parser.add_argument(
        "--triton",
        action="append",
        default=None,
        help="A local Triton: URL, NAME=URL or NAME=URL,METRICS_URL (repeatable). Default: MESH_AGENT_TRITON.",
    )
    parser.add_argument("--gpus", choices=["auto", "nvml", "simulated"], default=os.environ.get("MESH_AGENT_GPUS"))
    parser.add_argument("--interval", type=float, default=None, help="Seconds between GPU samples (default 1).")
    parser.add_argument(
        "--broker",
        default=os.environ.get("MESH_AGENT_BROKER_URL") or os.environ.get("CELERY_BROKER_URL"),
        help="Celery broker URL (MESH_AGENT_BROKER_URL); rediss:// for TLS. docs/agents.md says how to protect it.",
    )
    parser.add_argument("--loglevel", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for name, value in (
        ("MESH_AGENT_NODE", args.node),
        ("MESH_AGENT_CONTROL_PLANE", args.control_plane),
        ("MESH_AGENT_TOKEN_FILE", args.token_file),
        ("MESH_AGENT_GPUS", args.gpus),
        ("MESH_AGENT_INTERVAL", None if args.interval is None else str(args.interval)),
        ("MESH_AGENT_TRITON", " ".join(args.triton) if args.triton else None),
    ):
        if value:
            os.environ[name] = value
    try:
        config = AgentConfig.from_env()
    except AgentConfigError as error:
        print(f"infermesh agent: {error}", file=sys.stderr)
        return 2
    if not args.broker:
        print(
            "infermesh agent: set --broker or MESH_AGENT_BROKER_URL (for example redis://:PASSWORD@HOST:6379/0). "
            "Without a broker, `manage.py serve` runs the collectors for its own machine instead.",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Celery and its app load only once the arguments are checked: `--help` and a missing broker stay quick.
    from agents.worker import app, configure, queue_name

    configure(config, args.broker)
    app.worker_main(
        [
            "worker",
            "--beat",
            "--pool=threads",
            "--concurrency=4",
            f"--queues={queue_name(config.node)}",
            f"--hostname=agent@{config.node}",
            f"--loglevel={args.loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
