"""Run the project's own commands in child processes with a chosen environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
TEST_SECRET = "a-test-secret-key-that-is-long-and-random-enough-0123456789abcdef"


def clean_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The process environment without any infermesh or Django variables, plus `overrides`."""
    prefixes = (
        "MESH_",
        "DJANGO_",
        "DATABASE_URL",
        "REDIS_URL",
        "SECRET_KEY",
        "DEBUG",
        "ALLOWED_HOSTS",
        "CSRF_",
        "SECURE_",
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    env.update({"DJANGO_SETTINGS_MODULE": "infermesh_site.settings", "MESH_DATA_DIR": str(data_dir)})
    # Each process gets its own Raft port, so tests never collide with each other or a running mesh.
    env["MESH_RAFT_ADDRESS"] = f"127.0.0.1:{free_port()}"
    # No embedded agent unless a test asks: it would register this machine as a node.
    env["MESH_LOCAL_AGENT"] = "off"
    env.update(overrides)
    return env


def manage(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {process.stderr.read()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")
