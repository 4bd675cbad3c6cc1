"""The agent's Celery application: a worker per GPU host on its own queue, `agents.<node>`.

Beat (embedded with `-B`) schedules the collections on the node's queue; each scheduled
task expires after one interval, so a worker that falls behind skips samples instead
of working through a backlog of stale ones. Reports go out from the agent's own sender
thread, so a slow control plane never holds up collection.
"""

from __future__ import annotations

import os
import tempfile

from celery import Celery

from agents.agent import AgentConfig, current_agent

app = Celery("infermesh-agent")


def queue_name(node: str) -> str:
    return f"agents.{node}"


def configure(config: AgentConfig, broker_url: str) -> None:
    queue = queue_name(config.node)
    app.conf.update(
        broker_url=broker_url,
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        task_ignore_result=True,
        # JSON only: a message on the broker can ask for a task, never run code of its own.
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        beat_schedule_filename=os.path.join(tempfile.gettempdir(), f"infermesh-agent-{config.node}-beat"),
        beat_schedule={
            "collect-gpus": {
                "task": "agents.collect_gpus",
                "schedule": config.interval_s,
                "options": {"queue": queue, "expires": config.interval_s},
            },
            "collect-runtimes": {
                "task": "agents.collect_runtimes",
                "schedule": config.runtime_interval_s,
                "options": {"queue": queue, "expires": config.runtime_interval_s},
            },
        },
    )


@app.task(name="agents.collect_gpus", ignore_result=True)
def collect_gpus() -> int:
    return len(current_agent().collect_gpus()["gpus"])


@app.task(name="agents.collect_runtimes", ignore_result=True)
def collect_runtimes() -> int:
    return len(current_agent().collect_runtimes())


@app.task(name="agents.load_model", ignore_result=True)
def load_model(runtime: str, model: str) -> None:
    """Load a model on one of this host's runtimes (sent to `agents.<node>` by placement)."""
    current_agent().load_model(runtime, model)


@app.task(name="agents.unload_model", ignore_result=True)
def unload_model(runtime: str, model: str) -> None:
    current_agent().unload_model(runtime, model)
